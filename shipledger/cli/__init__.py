"""The `shipledger` command line: main, the global options, exit codes and output helpers.

Each command group lives in its own module here and adds its own subcommands to the parser; main
builds only the command that was asked for, because `shipledger gate` runs before every deployment and
its start-up time counts. Human text goes to stderr; `--json` prints one JSON document to stdout.
Exit codes: 0 ok, 1 operational error, 2 usage or bad input (an unknown id included), 3 denied. The
gate fails closed: if it cannot get and decode an answer it exits 1, never 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shipledger.errors import ShipledgerError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED = 0, 1, 2, 3

# Top-level command -> (module of shipledger.cli that builds it, one line of help).
COMMANDS = {
    "devnet": ("network", "the embedded development chain"),
    "network": ("network", "the consortium network on this machine: one validator per organisation (besu-config: Besu's files)"),
    "suite": ("consortium", "deploy the contracts"),
    "org": ("consortium", "organisations"),
    "member": ("consortium", "consortium members"),
    "role": ("consortium", "roles"),
    "policy": ("consortium", "approval policies"),
    "governance": ("governance", "proposals: changes the consortium makes when K organisations approve (stewards)"),
    "register": ("release", "register an artifact (REGISTRAR of its service)"),
    "attest": ("release", "record an attestation of an artifact: the sha256 of a document (ATTESTOR of its type)"),
    "revoke": ("release", "revoke (quarantine) an artifact (REGISTRAR)"),
    "approve": ("release", "approve an artifact for an environment (APPROVER)"),
    "approvals": ("release", "offline-signed approvals"),
    "reject": ("release", "veto an artifact for an environment until withdrawn (APPROVER)"),
    "withdraw": ("release", "withdraw your approval or rejection (APPROVER)"),
    "gate": ("release", "may this artifact be deployed now? exit 0 allowed, 3 denied, 1 unknown"),
    "deploy": ("deploy", "rollouts (DEPLOYER)"),
    "incident": ("incident", "incidents (RESPONDER)"),
    "canary": ("delivery", "canary analysis"),
    "rollout": ("delivery", "progressive delivery judged by the canary (DEPLOYER; RESPONDER for incidents)"),
    "status": ("compliance", "live artifact, rollout, open incidents and policy of a service in an environment"),
    "history": ("compliance", "every recorded event, from the index (synced with the chain first)"),
    "index": ("compliance", "the SQLite index of the ledger's events"),
    "trace": ("compliance", "chain of custody of an artifact: registration, votes, deployments, verdicts, incidents"),
    "audit": ("compliance", "re-check every deployment against the rules, the code and the index; exit 3 on findings"),
    "export": ("compliance", "write the (filtered) history to CSV or JSON Lines, one record per event, atomically"),
    "verify-export": ("compliance", "check every line of an export against the chain; exit 3 on any mismatch"),
    "report": ("compliance", "DORA metrics of production as a self-contained HTML report (or --json)"),
    "drift": ("drift", "compare what runs (Kubernetes pods, or observations) with the ledger; exit 3 on any drift"),
    "serve": ("serve", "HTTP API, web app and /metrics over the index and the chain"),
}
GLOBAL_DEFAULTS = (("rpc", None), ("deployment", None), ("key_env", "SHIPLEDGER_PRIVATE_KEY"), ("keystore", None), ("json", False),
                   ("timeout", None))


# ---------------------------------------------------------------------- output

def say(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr)


def emit(args, data: dict, text: str | None = None) -> None:
    """--json: the one JSON document on stdout; otherwise the sentence on stderr."""
    if args.json:
        print(json.dumps(data, default=str))
    elif text:
        print(text, file=sys.stderr)


def tx_data(receipt) -> dict:
    from dataclasses import asdict

    return asdict(receipt) if receipt else {"tx_hash": None, "block_number": None, "gas_used": None}  # nothing sent


# ---------------------------------------------------------------------- the parser

class CommandLineError(UsageError):
    """argparse's complaint about the command line: an unknown option, a missing or malformed value."""

    def __init__(self, message: str, usage: str):
        super().__init__(message)
        self.usage = usage


class ArgumentParser(argparse.ArgumentParser):
    """Raises instead of exiting on a usage error, so main reports it like every other failure (with
    --json, as the error document too). Subparsers are made of the same class."""

    def error(self, message):
        raise CommandLineError(f"{self.prog}: {message}", self.format_usage())

    def _get_formatter(self):
        # argparse makes a formatter for every add_argument, and its formatter asks shutil for the
        # terminal width: importing shutil (with zlib, bz2 and lzma) is ~2 ms of the gate's start.
        return self.formatter_class(prog=self.prog, width=_help_width())


def _help_width() -> int:
    """What argparse's formatter takes by default: $COLUMNS or the terminal's width, less 2."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns - 2, 11)


def _untranslated(argparse_module) -> None:
    """argparse runs each of its own words through gettext, and every lookup searches the locale
    directories for a catalogue (stat calls, and the locale module on the first): ~2 ms of the gate's
    start-up, to find none, since shipledger speaks English only. Its words are used as written."""
    argparse_module._ = lambda message: message
    argparse_module.ngettext = lambda singular, plural, n: singular if n == 1 else plural


class Parsers:
    """What a command group module needs to add its commands: `command(name, handler, help, parent)`
    makes a subcommand that takes the global options, `group(name)` a command with subcommands. With
    `only` set, every other top-level command is skipped: its options are added to a stand-in."""

    def __init__(self, sub, common, only: str | None = None):
        self.sub, self.common, self.only = sub, common, only
        self.groups: dict = {}

    def command(self, name, handler, help_text=None, parent=None):
        if isinstance(parent, _NotBuilt) or (parent is None and self.only not in (None, name)):
            return _NotBuilt()
        help_text = help_text or COMMANDS[name][1]
        # help is %-formatted by argparse, a description is not
        p = (parent or self.sub).add_parser(name, parents=[self.common], help=help_text, description=help_text.replace("%%", "%"))
        p.set_defaults(handler=handler)
        return p

    def group(self, name):
        """The group's subcommands; the same ones however often asked, so two modules can add to a group."""
        if self.only not in (None, name):
            return _NotBuilt()
        if name not in self.groups:
            self.groups[name] = self.sub.add_parser(name, help=COMMANDS[name][1]).add_subparsers(
                dest=f"{name}_command", required=True, metavar="COMMAND")
        return self.groups[name]


class _NotBuilt:
    """The parser of a command that was not asked for: whatever is added to it is dropped."""

    def add_argument(self, *args, **kwargs):
        return None

    def set_defaults(self, **kwargs):
        return None


def _version() -> str:
    """The installed distribution's version, else (a source checkout not installed) pyproject's."""
    from importlib import metadata

    try:
        return metadata.version("shipledger")
    except metadata.PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE) if pyproject.is_file() else None
        return match.group(1) if match else "unknown"


def _version_action():
    import argparse

    class VersionAction(argparse.Action):
        """`shipledger --version`; the version is looked up only when asked (importlib.metadata
        costs start-up time every other command, the gate first, would pay for nothing)."""

        def __call__(self, parser, namespace, values, option_string=None):
            print(f"shipledger {_version()}")
            parser.exit()

    return VersionAction


def build_parser(only: str | None = None):
    """The whole parser, or with `only` (a top-level command) just that command: parsing `shipledger
    gate ...` needs no other, and each parser costs about a millisecond to build."""
    import argparse
    import importlib

    _untranslated(argparse)
    common = ArgumentParser(add_help=False)
    common.add_argument("--rpc", default=argparse.SUPPRESS, metavar="URL[,URL...]",
                        help="JSON-RPC URL, or one node per organisation comma-separated (env SHIPLEDGER_RPC_URL)")
    common.add_argument("--deployment", default=argparse.SUPPRESS, help="address book (env SHIPLEDGER_DEPLOYMENT; default deployments/devnet.json)")
    common.add_argument("--key-env", default=argparse.SUPPRESS, metavar="VAR", help="environment variable holding the private key (default SHIPLEDGER_PRIVATE_KEY)")
    common.add_argument("--keystore", default=argparse.SUPPRESS, metavar="FILE", help="encrypted keystore (password from SHIPLEDGER_KEYSTORE_PASSWORD or a prompt)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document to stdout")
    common.add_argument("--timeout", default=argparse.SUPPRESS, metavar="SECONDS",
                        help="give up on a node that has not answered a request for this long, e.g. 5 or 5s (env "
                             "SHIPLEDGER_RPC_TIMEOUT; default 15 s a call, retried, 60 s for the index, 15 s for the gate)")

    parser = ArgumentParser(prog="shipledger", parents=[common], description="Provably approved deployments on a consortium EVM chain.")
    parser.add_argument("--version", action=_version_action(), nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only not in COMMANDS:
        only = None
    parsers = Parsers(sub, common, only)
    modules = [COMMANDS[only][0]] if only else list(dict.fromkeys(m for m, _ in COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"shipledger.cli.{module}").add_commands(parsers)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The top-level command in argv: the first word that is not an option or an option's value."""
    takes_value = {"--rpc", "--deployment", "--key-env", "--keystore", "--timeout"}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _failed(as_json: bool, code: str, message: str, exit_code: int, prefix: str = "shipledger: ") -> int:
    """A failure: the sentence on stderr and, with --json, the one document on stdout, so a pipeline that
    parses the output learns why: {"error": {"code": <stable name>, "message": <the sentence>, "exit": N}}."""
    print(prefix + message, file=sys.stderr)
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "exit": exit_code}}))
    return exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(_command_word(argv)).parse_args(argv)
    except CommandLineError as exc:
        print(exc.usage, end="", file=sys.stderr)
        return _failed("--json" in argv, "UsageError", str(exc), exc.exit_code, prefix="")  # it names the command
    for name, default in GLOBAL_DEFAULTS:
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        from shipledger.cli.shared import rpc_timeout

        args.timeout = rpc_timeout(args)  # checked once for every command, as seconds
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here rather than at exit, where it can still be handled
        return code
    except BrokenPipeError:
        # The reader went away (`shipledger history --json | head`): nothing is wrong with the command.
        # Point stdout at /dev/null so Python's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ShipledgerError as exc:
        # a contract error's class is named after it (GateDenied, UnknownDeployment); ours are UsageError, ...
        return _failed(args.json, exc.__class__.__name__, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _failed(args.json, "Interrupted", "interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, no traceback unless asked
        if os.environ.get("SHIPLEDGER_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.filename:
            # A file failed us after the checks at the edge (a full disk, another process): still a sentence.
            return _failed(args.json, exc.__class__.__name__, f"cannot use {exc.filename}: {exc.strerror or exc}", EXIT_ERROR)
        return _failed(args.json, "InternalError", f"internal error: {exc.__class__.__name__}: {exc}"
                       " (set SHIPLEDGER_DEBUG=1 for a traceback)", EXIT_ERROR)

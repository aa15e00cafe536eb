"""What every command group shares: argument types, the artifact an invocation names, the address
book, the signer and the ledger, and the index. Inputs are checked here once, at the edge, and
handed to the SDK as its own types.

Imports stay light at the top (the gate's path goes through here); the SDK loads inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shipledger.errors import AddressBookError, PathError, ShipledgerError, UsageError

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_BOOK = Path("deployments") / "devnet.json"


# ---------------------------------------------------------------------- argument types and shared options

def duration(text: str) -> int:
    """An argparse type: '90', '90s', '15m', '24h', '7d' -> whole seconds (0 allowed: "forever")."""
    from shipledger._internal.names import parse_duration

    try:
        seconds = parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds != int(seconds):
        raise argparse.ArgumentTypeError(f"{text!r}: the chain counts whole seconds")
    return int(seconds)


def address(text: str) -> str:
    """An argparse type: an Ethereum address, checksummed (a wrong EIP-55 checksum is refused)."""
    from shipledger._internal.names import parse_address

    try:
        return parse_address(text, "")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None


def rpc_timeout(args) -> float | None:
    """--timeout or $SHIPLEDGER_RPC_TIMEOUT as seconds (more than zero); None when neither is set,
    which keeps each client's own default (web3 15 s a try, retried; the index 60 s; the gate 15 s)."""
    from shipledger._internal.names import parse_duration

    if getattr(args, "timeout", None) is not None:
        return parse_duration(args.timeout, "--timeout", positive=True)
    value = os.environ.get("SHIPLEDGER_RPC_TIMEOUT")
    return parse_duration(value, "$SHIPLEDGER_RPC_TIMEOUT", positive=True) if value else None


def positive_int(text: str) -> int:
    """Ids and organisation numbers: 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 1")
    return int(text)


def counted(n: int, word: str) -> str:
    """'1 approval', '2 approvals', '0 approvals'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


# Characters that can make human output lie: C0 and C1 controls (a newline forges a row, an escape
# sequence rewrites the terminal), the Unicode bidi controls (an override reorders what follows it)
# and the line and paragraph separators.
_UNSAFE = frozenset([*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                     *range(0x2066, 0x206A), 0x2028, 0x2029])


def shown(text) -> str:
    """Text from the chain or the index made safe for a line of human output: every character in
    _UNSAFE becomes a visible escape (\\n, \\x1b, \\u202e). JSON and CSV output stay exact."""
    text = str(text)
    if not any(ord(c) in _UNSAFE for c in text):
        return text
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(named.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   if ord(c) in _UNSAFE else c for c in text)


SERVICE_HELP = "service name, exactly as registered (names are case-sensitive: api and API are two services)"
ENV_HELP = "environment name, e.g. prod (case-sensitive)"


def artifact_args(p, positional=True):
    """ARTIFACT (a path to hash) and --digest: the two ways to name an artifact."""
    if positional:
        p.add_argument("artifact", nargs="?", help="file or directory to hash")
    p.add_argument("--digest", help="sha256:<64 hex> instead of a path")
    p.add_argument("--image", metavar="REPO@sha256:HEX", help="a container image by its manifest (or index) digest; a tag is refused")


def target_args(p) -> None:
    """An artifact (ARTIFACT or --digest) going to --env of --service: the options of approve, reject,
    withdraw, gate, deploy start and rollout run."""
    artifact_args(p)
    p.add_argument("--service", required=True, help=SERVICE_HELP)
    p.add_argument("--env", required=True, help=ENV_HELP)


def index_args(parser) -> None:
    """--db and --no-sync for every command that reads the index."""
    parser.add_argument("--db", default=None, metavar="PATH", help="index database (default .shipledger/index.sqlite)")
    parser.add_argument("--no-sync", action="store_true", help="read the index as it is, without syncing it first")


def artifact_digest(args) -> str:
    """The digest named by --digest or computed from the ARTIFACT path."""
    from shipledger._internal.names import format_digest, parse_digest, parse_image

    named = [option for option, key in (("a path", "artifact"), ("--digest", "digest"), ("--image", "image"))
             if getattr(args, key, None)]
    if len(named) > 1:
        raise UsageError(f"name the artifact by one of a path, --digest or --image, not both {' and '.join(named)}")
    if getattr(args, "image", None):
        return parse_image(args.image)[1]
    if getattr(args, "digest", None):
        return format_digest(parse_digest(args.digest))
    if not getattr(args, "artifact", None):
        raise UsageError("name the artifact by a path, by --digest sha256:<hex> or by --image REPO@sha256:<hex>")
    from shipledger.digests import digest_path

    return digest_path(args.artifact)


def file_digest(path: str | None) -> str:
    if not path:
        return ""
    from shipledger.digests import digest_path

    if not Path(path).is_file():
        raise UsageError(f"{path} is not a file")
    return digest_path(path)


def book_path(args) -> Path:
    value = args.deployment or os.environ.get("SHIPLEDGER_DEPLOYMENT")
    if value:
        return Path(value)
    if DEFAULT_BOOK.is_file():
        return DEFAULT_BOOK
    raise AddressBookError("no address book: pass --deployment FILE, set SHIPLEDGER_DEPLOYMENT, or run `shipledger devnet up`")


def rpc_urls(args, book: dict | None = None) -> list[str]:
    """The JSON-RPC endpoints: --rpc, else SHIPLEDGER_RPC_URL (either may list several, comma-separated),
    else the address book's nodes[].rpc_url or rpc_url, else the devnet's."""
    from shipledger._internal.endpoints import endpoint_urls

    return endpoint_urls(args.rpc or os.environ.get("SHIPLEDGER_RPC_URL"), book, DEFAULT_RPC)


def rpc_url(args, book: dict | None = None) -> str:
    """One endpoint, for a command that opens one connection: the first listed that is in sync."""
    from shipledger._internal.endpoints import HEAD_TIMEOUT, in_sync

    return in_sync(rpc_urls(args, book), getattr(args, "timeout", None) or HEAD_TIMEOUT)[0]


def load_signer(args):
    """The signing account from --keystore or the key environment variable; None if neither is set."""
    from eth_account import Account

    if args.keystore:
        from shipledger.errors import path_error

        try:
            keystore = json.loads(Path(args.keystore).read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise path_error(f"keystore {args.keystore}", exc) from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"keystore {args.keystore} is not JSON: {exc}") from None
        # checked before a password is asked for: a file that is no keystore needs none
        if not isinstance(keystore, dict) or not isinstance(keystore.get("crypto", keystore.get("Crypto")), dict):
            raise UsageError(f"keystore {args.keystore} is not an encrypted key (a JSON object with `crypto`)")
        password = os.environ.get("SHIPLEDGER_KEYSTORE_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise UsageError("set SHIPLEDGER_KEYSTORE_PASSWORD: no terminal to ask for the keystore password")
            import getpass

            password = getpass.getpass(f"password for {args.keystore}: ")
        try:
            return Account.from_key(Account.decrypt(keystore, password))
        except KeyError as exc:  # eth-account's word for a keystore it cannot parse
            raise UsageError(f"keystore {args.keystore} is malformed: it has no {exc}") from None
        except TypeError as exc:
            raise UsageError(f"keystore {args.keystore} is malformed: {exc}") from None
        except ValueError:
            raise UsageError(f"wrong password for keystore {args.keystore}") from None
    key = os.environ.get(args.key_env)
    if not key:
        return None
    try:
        return Account.from_key(key.strip())
    except (ValueError, TypeError):
        raise UsageError(f"${args.key_env} does not hold a valid private key") from None


def open_ledger(args, need_signer: bool = True):
    from shipledger.client import Ledger, load_address_book

    book = load_address_book(book_path(args))
    signer = load_signer(args)
    if need_signer and signer is None:
        raise UsageError(f"this command sends a transaction: set ${args.key_env} or pass --keystore FILE")
    return Ledger.connect(rpc_urls(args, book), book, signer, rpc_timeout=args.timeout)


def warn_case_twins(ledger, services=(), environments=()) -> None:
    """Names are case-sensitive (the chain keys them by hash), so `API` and `api` are two services
    with two policies. Refusing upper case would strand every name already on chain; instead warn,
    on stderr, when a name differs only in case from one that a policy names: that is nearly always
    a typo that would leave the real target without the record (an incident that freezes nothing)."""
    wanted = [("service", n) for n in services if n] + [("environment", n) for n in environments if n]
    if not wanted:
        return
    try:
        known = dict(zip(("service", "environment"), ledger.policy_names()))
    except ShipledgerError:
        return  # a warning only: the command itself will say what is wrong with the node
    for kind, name in wanted:
        twins = sorted(k for k in known[kind] if k != name and k.lower() == name.lower())
        if twins and name not in known[kind]:
            print(shown(f"shipledger: warning: {kind} {name!r} differs only in case from {', '.join(map(repr, twins))},"
                        f" which a policy names; names are case-sensitive, so these are different {kind}s"), file=sys.stderr)


def prior_environment_name(endpoint, service: str, environment: str, key: str, timeout: float = 15,
                           which: str = "prior") -> str:
    """The name of the prior environment (or with which="attestation", the attestation type) whose
    hash `key` a policy or a gate answer holds, from the registry's PolicySet events over plain
    JSON-RPC (no web3); `key` itself when it cannot be read.
    endpoint: anything with `url`, `registry` and `start_block` (an index Endpoint)."""
    from shipledger._internal.gatecall import policy_name_of_key
    from shipledger._internal.rpc import log_ranges, quick_batch

    def get_logs(query: dict) -> list:
        """The query over [fromBlock, head] in ranges the node accepts (Besu: 5,000 blocks), 500 ranges a request."""
        [head] = quick_batch(endpoint.url, [("eth_blockNumber", [])], timeout=timeout)
        calls = [("eth_getLogs", [{**query, "fromBlock": hex(low), "toBlock": hex(high)}])
                 for low, high in log_ranges(int(query["fromBlock"], 16), int(head, 16))]
        return [log for at in range(0, len(calls), 500) for logs in quick_batch(endpoint.url, calls[at : at + 500], timeout=timeout)
                for log in logs]

    try:
        return policy_name_of_key(get_logs, endpoint.registry, endpoint.start_block, service, environment, key, which)
    except (ShipledgerError, KeyError, TypeError, ValueError):
        return key


def sync_index(index, source, args, confirmations: int = 0):
    """Sync with a progress bar on a terminal (never with --json)."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return index.sync(source, confirmations=confirmations)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:  # stdout is for the command's output
        task = bar.add_task("indexing blocks", total=None)
        return index.sync(source, confirmations=confirmations,
                          progress=lambda done, total: bar.update(task, completed=done, total=total))


def index_source(args):
    """Where an index sync reads: the node and the suite of the address book, checked without web3."""
    from shipledger._internal.book import load_address_book
    from shipledger.compliance.index import Endpoint

    book = load_address_book(book_path(args))
    return Endpoint.connect(rpc_url(args, book), book, timeout=args.timeout)


def synced_index(args, source=None):
    """The index at args.db, synced first unless args.no_sync from `source` (an index Endpoint or a
    connected Ledger; by default the address book's, see index_source). With --no-sync the index
    is opened read-only and must exist. A rewind (the chain no longer held the indexed blocks) is
    said on stderr, --json or not: what the index showed before has changed."""
    from shipledger.compliance.index import DEFAULT_DB, Index

    path = getattr(args, "db", None) or DEFAULT_DB
    if getattr(args, "no_sync", False):
        return Index.open(path, read_only=True)
    index = Index.open(path)
    try:
        result = sync_index(index, source or index_source(args), args, getattr(args, "confirmations", 0) or 0)
    except BaseException:
        index.close()
        raise
    if result.rewound_from is not None:
        print(f"shipledger: the chain no longer holds block {result.rewound_from} as indexed (a restarted or "
              f"reorganised chain): the index in {path} was rewound and synced again", file=sys.stderr)
    return index


def output_path(text: str) -> Path:
    """Where --out writes, checked before any work: not a directory, in a directory that exists and
    that we may write in. A symlink there is refused rather than followed or replaced: an export
    landing in whatever file a link points at (in a shared directory, anyone's) is not what was asked."""
    path = Path(text)
    if path.is_symlink():
        raise UsageError(f"cannot write {path}: it is a symbolic link (give the real path)")
    if path.is_dir() or not path.parent.is_dir():
        raise PathError(f"cannot write {path}: " + ("it is a directory" if path.is_dir() else f"{path.parent} does not exist"))
    writable_path(path)
    return path


def writable_path(path: Path, what: str = "") -> Path:
    """Raise PathError unless we may create or replace path: the nearest existing directory on its way
    (missing ones are made) grants write access; os.access also says no on a read-only filesystem, even
    to root."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PathError(f"cannot write {what}{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PathError(f"cannot write {what}{path}: permission denied or a read-only filesystem")
    return path

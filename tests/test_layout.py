"""The layout's promises, checked: every package says what it holds, errors.py depends on nothing of
ours, the gate's start-up path loads neither web3 nor the dataclass models, and the CLI builds only
the command group that was asked for."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path


from shipledger.errors import GATE_SENTENCES
from shipledger.models import GateReason

PACKAGE = Path(__file__).resolve().parents[1] / "shipledger"


def test_every_package_init_says_what_it_holds():
    inits = sorted(PACKAGE.rglob("__init__.py"))
    assert {p.parent.name for p in inits} >= {"shipledger", "_internal", "network", "compliance", "delivery", "cli"}
    for init in inits:
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init} has no docstring"


def test_errors_import_nothing_of_ours():
    tree = ast.parse((PACKAGE / "errors.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("shipledger")]


def test_gate_sentences_follow_the_contract_reason_codes():
    assert list(GATE_SENTENCES) == [reason.name.lower() for reason in sorted(GateReason)]


def _modules_loaded_by(argv: list[str]) -> set[str]:
    """The modules a CLI invocation has loaded when it exits (it fails fast: no node is asked)."""
    probe = ("import sys, runpy\n"
             "sys.argv = ['shipledger', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('shipledger.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "import json\nprint(json.dumps(sorted(sys.modules)), file=sys.__stdout__)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_gate_path_loads_no_web3_models_or_other_groups(tmp_path):
    # A well-formed address book and a node that refuses the connection: the gate goes all the way
    # to the JSON-RPC request and fails there (exit 1), having loaded what a real gate loads.
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"chain_id": 31337, "contracts": {"DeploymentLedger": {"address": "0x" + "11" * 20}}}))
    loaded = _modules_loaded_by(["gate", "--digest", "sha256:" + "0" * 64, "--service", "api", "--env", "prod",
                                 "--rpc", "http://127.0.0.1:9", "--deployment", str(book)])
    assert {"shipledger.cli.release", "shipledger._internal.rpc", "socket"} <= loaded
    for heavy in ("web3", "eth_abi", "eth_account", "requests", "dataclasses", "shipledger.models", "urllib.request",
                  "http.client", "shipledger.cli.compliance", "shipledger.cli.delivery", "shipledger.cli.consortium"):
        assert heavy not in loaded, f"the gate's path loaded {heavy}"


def test_parser_builds_only_the_command_asked_for():
    from shipledger.cli import COMMANDS, build_parser

    def commands(parser):
        return set(next(a for a in parser._actions if a.dest == "command").choices)

    assert commands(build_parser()) == set(COMMANDS)  # `shipledger --help` lists everything
    for name in COMMANDS:
        assert commands(build_parser(name)) == {name}

"""scripts/slither_check.py's judgement: a finding without a triage line fails, and so does a triage
line that matches no finding. Slither itself runs in `make lint` (CI runs it); these tests feed the
judgement results shaped like Slither's JSON, so they run in milliseconds."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slither_check():
    spec = importlib.util.spec_from_file_location("slither_check", ROOT / "scripts" / "slither_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(contract: str, signature: str) -> dict:
    return {"type": "function", "name": signature.split("(")[0],
            "type_specific_fields": {"parent": {"type": "contract", "name": contract}, "signature": signature}}


FINDINGS = [
    {"check": "timestamp", "impact": "Low", "confidence": "Medium", "description": "uses timestamp\n",
     "elements": [_function("ReleaseRegistry", "_tally(bytes32,uint32)")]},
    {"check": "unused-return", "impact": "Medium", "confidence": "Medium", "description": "ignores return\n",
     # a statement: keyed by the function it is in
     "elements": [{"type": "node", "name": "_heldRoles[account].add(role)",
                   "type_specific_fields": {"parent": _function("ReleaseRegistry", "_grantRole(bytes32,address)")}}]},
    {"check": "uninitialized-local", "impact": "Medium", "confidence": "Medium", "description": "never initialized\n",
     "elements": [{"type": "variable", "name": "restored",
                   "type_specific_fields": {"parent": _function("DeploymentLedger", "rollback(uint256,string)")}}]},
]
KEYS = [
    "timestamp ReleaseRegistry._tally(bytes32,uint32)",
    "unused-return ReleaseRegistry._grantRole(bytes32,address)",
    "uninitialized-local DeploymentLedger.rollback(uint256,string).restored",
]


def test_keys_name_the_function_not_the_line(slither_check):
    assert [slither_check.finding_key(r) for r in FINDINGS] == KEYS


def test_every_finding_triaged_passes(slither_check):
    untriaged, stale, counts = slither_check.judge(FINDINGS, {key: "why" for key in KEYS})
    assert (untriaged, stale) == ([], [])
    assert counts == {"timestamp": 1, "unused-return": 1, "uninitialized-local": 1}


def test_a_new_finding_fails(slither_check):
    untriaged, stale, _ = slither_check.judge(FINDINGS, {key: "why" for key in KEYS[1:]})
    assert stale == []
    assert len(untriaged) == 1 and untriaged[0].startswith(KEYS[0])


def test_a_triage_line_without_its_finding_fails(slither_check):
    triage = {key: "why" for key in KEYS} | {"reentrancy-eth DeploymentLedger.start(bytes32,string,string,uint8)": "gone"}
    untriaged, stale, _ = slither_check.judge(FINDINGS, triage)
    assert untriaged == [] and stale == ["reentrancy-eth DeploymentLedger.start(bytes32,string,string,uint8)"]


def test_triage_file_lines_need_a_reason(slither_check, tmp_path):
    (tmp_path / "t").write_text("timestamp ReleaseRegistry._tally(bytes32,uint32)\n")
    with pytest.raises(SystemExit, match="no reason"):
        slither_check.read_triage(tmp_path / "t")


def test_the_committed_triage_file_parses_with_a_reason_per_line(slither_check):
    entries = slither_check.read_triage(ROOT / "slither.triage")
    assert entries and all(why for why in entries.values())


def test_the_committed_triage_file_names_functions_that_exist(slither_check):
    """Without running Slither: each key's contract and function are in contracts/, so a rename shows
    up here too (make lint also reports the line as stale)."""
    sources = "\n".join(p.read_text() for p in (ROOT / "contracts").rglob("*.sol"))
    for key in slither_check.read_triage(ROOT / "slither.triage"):
        contract, _, member = key.split(" ", 1)[1].partition(".")
        assert re.search(rf"\b(contract|interface|library) {contract}\b", sources), key
        function = member.split("(")[0]
        assert re.search(rf"\bfunction {re.escape(function)}\(", sources), key

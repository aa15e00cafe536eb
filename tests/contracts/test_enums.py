"""The SDK's copies of the contracts' enums match the Solidity declarations, name for name and number
for number: the numbers are part of the on-chain interface (gate reasons, votes, statuses)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shipledger._internal.gatecall import GateReason
from shipledger.client import SKIP_REASONS
from shipledger.models import ArtifactKind, Decision, DeploymentStatus, IncidentStatus, ProposalState, Verdict

INTERFACES = Path(__file__).resolve().parents[2] / "contracts" / "interfaces"


def solidity_enums() -> dict[str, list[str]]:
    """Every `enum Name { A, B, ... }` in contracts/interfaces, comments stripped."""
    found = {}
    for source in INTERFACES.glob("*.sol"):
        text = re.sub(r"//[^\n]*", "", source.read_text())
        for name, body in re.findall(r"\benum\s+(\w+)\s*\{([^}]*)\}", text):
            found[name] = [member.strip() for member in body.split(",") if member.strip()]
    return found


def snake_upper(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


@pytest.mark.parametrize("enum", [GateReason, Decision, ArtifactKind, DeploymentStatus, Verdict, IncidentStatus,
                                  ProposalState], ids=lambda e: e.__name__)
def test_sdk_enum_matches_the_solidity_declaration(enum):
    members = solidity_enums()[enum.__name__]
    assert [(m.name, m.value) for m in enum] == [(snake_upper(name), n) for n, name in enumerate(members)]


def test_skip_reason_names_match_the_solidity_declaration():
    members = solidity_enums()["SkipReason"]
    assert list(SKIP_REASONS) == [snake_upper(name).lower() for name in members]

"""The committed bytecode is built for Berlin, which GoQuorum's QBFT and older Besu networks run.

The compiler refuses a later fork's opcode for `evmVersion: berlin`, in inline assembly too (that is why
OpenZeppelin 5.4+, which uses `mcopy`, does not build). The session anvil in conftest.py runs Berlin
rules, so every contract test also executes the code where PUSH0 or MCOPY would fail.
"""

import json
from pathlib import Path

import pytest

from shipledger._internal.artifacts import ARTIFACTS_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(ARTIFACTS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_artifacts_target_berlin(path):
    assert json.loads(path.read_text())["settings"]["evmVersion"] == "berlin"


def test_openzeppelin_is_the_newest_release_that_builds_for_berlin():
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@openzeppelin/contracts"]["version"] == "5.3.0"


def test_session_chain_runs_berlin(w3):
    assert "baseFeePerGas" not in w3.eth.get_block("latest")  # London added the base fee

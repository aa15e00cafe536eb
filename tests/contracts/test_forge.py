"""The forge invariant suite (test/forge) in a short campaign, and forge building what we ship.

The campaign is scripts/forge_invariants.py with its defaults (24 runs x 60 calls per invariant, fixed
seed: a few minutes on two loaded cores once forge has compiled). It fails when any test in test/forge
fails. `make invariants` runs the long campaign.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shipledger._internal import artifacts

ROOT = Path(__file__).resolve().parents[2]
# issue 10's invariants 1-13, plus 4b (the canary rule) and 4c (governance: K organisations, delay)
INVARIANTS = {"01", "02", "03", "04", "04b", "04c", "05", "06", "07", "08", "09", "10", "11", "12", "13"}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    summary = tmp_path_factory.mktemp("forge") / "summary.json"
    proc = subprocess.run(
        [sys.executable, "scripts/forge_invariants.py", "--summary", str(summary)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,  # a fresh clone compiles first: a few minutes with solc-js
    )
    return proc, (json.loads(summary.read_text()) if summary.exists() else None)


def test_short_campaign_passes(campaign):
    proc, summary = campaign
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    tests = {t["test"]: t for t in summary["tests"]}
    numbers = {name.split("_")[1] for name in tests if name.startswith("invariant_")}
    assert numbers == INVARIANTS, f"invariants run: {sorted(numbers)}"
    assert all(t["passed"] for t in tests.values())
    for name, t in tests.items():
        if name.startswith("invariant_"):
            # a passing invariant ran its whole campaign, and the handler's steps mostly went through
            assert t["runs"] == summary["runs"] and t["calls"] == summary["runs"] * summary["depth"], name
            assert t["reverts"] < 0.75 * t["calls"], f"{name}: most steps were refused ({t['reverts']}/{t['calls']})"
    harness = [name for name in tests if name.startswith("test_")]
    assert harness and all(tests[name]["passed"] for name in harness)


def _code_without_metadata(hex_code: str) -> bytes:
    """Bytecode without solc's CBOR metadata (its length is in the last two bytes): forge's metadata
    names the remapping, build.py's does not, and nothing else may differ."""
    code = bytes.fromhex(hex_code.removeprefix("0x"))
    return code[: -(int.from_bytes(code[-2:], "big") + 2)]


def test_forge_builds_the_bytecode_we_ship(campaign):
    """foundry.toml compiles contracts/ with scripts/build.py's settings, so the campaign tests the
    code in shipledger/artifacts (runtime and creation code equal but for the metadata hash)."""
    for name in artifacts.SUITE:
        built = json.loads((ROOT / "out" / f"{name}.sol" / f"{name}.json").read_text())
        shipped = artifacts.load(name)
        assert _code_without_metadata(built["deployedBytecode"]["object"]) == _code_without_metadata(shipped["deployedBytecode"]), name
        assert _code_without_metadata(built["bytecode"]["object"]) == _code_without_metadata(shipped["bytecode"]), name

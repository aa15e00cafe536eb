"""The committed artifacts are what the sources compile to, and they fit on chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shipledger._internal import artifacts

ROOT = Path(__file__).resolve().parents[2]
EIP170_RUNTIME_LIMIT = 24_576  # bytes of deployed code
EIP3860_INITCODE_LIMIT = 49_152  # bytes of creation code


def _code_size(hex_code: str) -> int:
    return len(bytes.fromhex(hex_code.removeprefix("0x")))


def test_build_check_reproduces_committed_artifacts():
    """Recompiling contracts/*.sol gives shipledger/artifacts/*.json byte for byte (~20 s: solc-js)."""
    result = subprocess.run(
        [sys.executable, "scripts/build.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "artifacts up to date" in result.stdout


def test_build_artifacts_are_the_suite():
    names = sorted(p.stem for p in artifacts.ARTIFACTS_DIR.glob("*.json"))
    assert names == sorted(artifacts.SUITE)


@pytest.mark.parametrize("name", artifacts.SUITE)
def test_build_runtime_code_below_eip170_limit(name):
    artifact = json.loads((artifacts.ARTIFACTS_DIR / f"{name}.json").read_text())
    runtime = _code_size(artifact["deployedBytecode"])
    assert 0 < runtime < EIP170_RUNTIME_LIMIT, f"{name}: {runtime} bytes of runtime code"


@pytest.mark.parametrize("name", artifacts.SUITE)
def test_build_initcode_below_eip3860_limit(name):
    artifact = json.loads((artifacts.ARTIFACTS_DIR / f"{name}.json").read_text())
    initcode = _code_size(artifact["bytecode"])
    assert 0 < initcode <= EIP3860_INITCODE_LIMIT, f"{name}: {initcode} bytes of creation code"

"""The compiled contracts that ship inside the package (written by `make build`)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "artifacts"
SUITE = ("ReleaseRegistry", "Governance", "DeploymentLedger")


@cache
def load(name: str) -> dict:
    """The artifact of one contract: abi, bytecode, deployedBytecode, immutableReferences, compiler."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no compiled artifact {path}; run `make build`") from None


def abi(name: str) -> list[dict]:
    return load(name)["abi"]

"""The committed artifacts are what the sources compile to, and Ape (ape-config.yaml) agrees.

scripts/build.py and `ape compile` drive the same compiler (tools/solc) with the same settings and
the same source unit names, so the runtime bytecode must be identical byte for byte, the CBOR
metadata hash at its end included. The Ape toolchain lives in its own venv (.venv-ape, from
requirements-ape.lock); the session fixture installs it with `make ape-setup` when missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = sorted((ROOT / "shipledger" / "artifacts").glob("*.json"))


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def ape_venv() -> Path:
    """.venv-ape, installed (or brought up to date with requirements-ape.lock) by `make ape-setup`."""
    run(["make", "--no-print-directory", "ape-setup"], cwd=ROOT, timeout=1200)
    assert (ROOT / ".venv-ape" / "bin" / "ape").is_file()
    return ROOT / ".venv-ape"


@pytest.fixture(scope="session")
def ape_contract_types(ape_venv, tmp_path_factory) -> dict[str, dict]:
    """`ape compile` on a copy of the project's sources and config; contract name -> contract type."""
    project = tmp_path_factory.mktemp("ape-project")
    shutil.copytree(ROOT / "contracts", project / "contracts", ignore=shutil.ignore_patterns(".cache"))
    shutil.copy(ROOT / "ape-config.yaml", project / "ape-config.yaml")
    env = {
        **os.environ,
        "APE_DATA_FOLDER": str(tmp_path_factory.mktemp("ape-data")),
        # Any download attempt (a solc binary, a version list) fails fast instead of succeeding.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    for key in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        env.pop(key, None)
    run([str(ROOT / "tools" / "ape"), "compile", "--force"], cwd=project, env=env)
    # tools/ape linked solc-js in as py-solc-x's only "installed" compiler; nothing was downloaded.
    solcx_dir = ape_venv / "solcx"
    assert all(p.is_symlink() and p.resolve() == ROOT / "tools" / "solc" for p in solcx_dir.iterdir())
    manifest = json.loads((project / ".build" / "__local__.json").read_text())
    return manifest["contractTypes"]


@pytest.mark.parametrize("artifact", ARTIFACTS, ids=lambda p: p.stem)
def test_ape_compile_runtime_bytecode_equals_artifact(artifact, ape_contract_types):
    # Stale artifacts (sources changed, no `make build`) fail tests/packaging/test_build.py first.
    expected = json.loads(artifact.read_text())
    name = expected["contractName"]
    assert name in ape_contract_types, f"ape compile produced no {name}: {sorted(ape_contract_types)}"
    ape_type = ape_contract_types[name]
    assert ape_type["sourceId"] == expected["sourceName"]
    assert ape_type["runtimeBytecode"]["bytecode"] == expected["deployedBytecode"]
    assert ape_type["deploymentBytecode"]["bytecode"] == expected["bytecode"]

"""What the hot read paths import: `status` and `member list` (a synced index plus a few getters) and
the gate must not pull in web3, eth_abi, eth_utils (pydantic) or requests, whose imports cost more
than the rest of what these commands do (bench/status_vs_scan.py, bench/gate_vs_cast.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import ENV, clean_env, digest_for, unique

HEAVY = ("web3", "eth_abi", "eth_utils", "pydantic", "requests", "urllib3")

# Runs the CLI's main in this interpreter, then prints which heavy packages it had imported.
PROBE = """
import json, sys
from shipledger.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


def _imported(dn, *args) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=dn.workdir, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, 3), proc.stderr
    return report["loaded"]


@pytest.fixture(scope="module")
def released(dn):
    service = unique()
    digest = dn.release(service, "1.0.0")
    dn.ledger("deployer").start_deployment(digest, service, ENV, 10)
    return service


@pytest.mark.parametrize("command", ["status", "member list", "gate allowed", "gate denied"])
def test_hot_read_paths_import_no_heavy_package(dn, released, tmp_path, command):
    args = {
        "status": ["status", released, ENV, "--db", str(tmp_path / "i.sqlite")],
        "member list": ["member", "list", "--db", str(tmp_path / "i.sqlite")],
        "gate allowed": ["gate", "--digest", digest_for(f"{released}@1.0.0"), "--service", released, "--env", ENV],
        "gate denied": ["gate", "--digest", digest_for("nothing"), "--service", released, "--env", ENV],
    }[command]
    assert _imported(dn, *args, "--json") == []

"""schemathesis against the server's own /v1/openapi.json: no 500s, and every response (status code,
content type, body) matches the schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_api_matches_its_openapi_document(dn, tmp_path):
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.exists() and not shutil.which("schemathesis"):
        pytest.skip("schemathesis is not installed (it is in requirements-dev.lock)")
    dn.register("api")  # something for the generated requests to find
    dn.set_policy("api", threshold=1, min_organisations=1)
    srv = Server(dn, "--relayer-key-env", "RELAYER_KEY", "--relay-rate", "1000", env={"RELAYER_KEY": dn.key("outsider")})
    try:
        run = subprocess.run(
            [str(cli) if cli.exists() else "schemathesis", "run", srv.url + "/v1/openapi.json", "--checks", CHECKS,
             "--max-examples", "25", "--seed", "1", "--exclude-path", "/metrics", "--no-color",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        report = run.stdout + run.stderr
        assert run.returncode == 0, report[-6000:]
        tested = re.search(r"Tested: (\d+)", report)
        assert tested and int(tested.group(1)) >= 9, report[-3000:]  # every /v1 operation and the health checks
        assert re.search(r"(\d+) generated, \1 passed", report), report[-3000:]
    finally:
        srv.stop()

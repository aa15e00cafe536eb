"""The GitLab CI template: parsed, its shipledger-gate job shaped as GitLab runs it, and its script run
as a shell runner runs it (the job's variables in the environment, the lines in bash) against a real
devnet. GitLab itself (its linter, a runner, dotenv reports) is not run here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from support import ENV, unique

TEMPLATE = Path(__file__).resolve().parents[2] / "ci" / "gitlab" / "shipledger.gitlab-ci.yml"


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def test_the_template_has_a_gate_job_that_deploy_jobs_need():
    document = template()
    job = document["shipledger-gate"]
    assert job["stage"] == ".pre" and job["allow_failure"] is False
    assert job["artifacts"]["reports"]["dotenv"] == "shipledger-gate.env"
    assert document[".shipledger-gated"]["needs"] == [{"job": "shipledger-gate", "artifacts": True}]
    # the example in the header, as a pipeline that includes the template would have it
    example = yaml.safe_load("\n".join(line.removeprefix("#   ") for line in TEMPLATE.read_text().splitlines()
                                       if line.startswith("#   ") and not line.startswith("#     - ") and "include:" not in line
                                       and "# or `project:`" not in line))
    assert example["deploy-prod"]["needs"] == ["shipledger-gate"]


def run_job(dn, tmp_path, **variables) -> tuple[int, str, dict]:
    document = template()
    job = document["shipledger-gate"]
    env = {**{k: str(v) for k, v in document["variables"].items()}, **variables,
           "PATH": f"{tmp_path}:{os.environ['PATH']}", "PYTHONPATH": str(TEMPLATE.parents[2]), "HOME": str(tmp_path),
           "SHIPLEDGER_RPC_URL": dn.rpc_url, "SHIPLEDGER_DEPLOYMENT": str(dn.book)}
    (tmp_path / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")  # the image's python3, with shipledger
    (tmp_path / "python3").chmod(0o755)
    result = subprocess.run(["bash", "-c", "\n".join(job["script"])], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    report = dict(line.split("=", 1) for line in (tmp_path / "shipledger-gate.env").read_text().splitlines()) \
        if (tmp_path / "shipledger-gate.env").exists() else {}
    return result.returncode, result.stdout + result.stderr, report


def test_the_gate_job_passes_only_when_the_gate_allows(dn, tmp_path):
    service = unique()
    allowed = dn.release(service)
    code, output, report = run_job(dn, tmp_path, SHIPLEDGER_SERVICE=service, SHIPLEDGER_ENVIRONMENT=ENV, SHIPLEDGER_DIGEST=allowed)
    assert code == 0, output
    assert report == {"SHIPLEDGER_ALLOWED": "true", "SHIPLEDGER_REASON": "allowed"}

    waiting = dn.register(service, "2.0.0")
    code, output, report = run_job(dn, tmp_path, SHIPLEDGER_SERVICE=service, SHIPLEDGER_ENVIRONMENT=ENV,
                                   SHIPLEDGER_IMAGE=f"registry.example.com/shop/{service}@{waiting}")
    assert code == 3 and report == {"SHIPLEDGER_ALLOWED": "false", "SHIPLEDGER_REASON": "not_enough_approvals"}

    code, output, _ = run_job(dn, tmp_path, SHIPLEDGER_SERVICE=service, SHIPLEDGER_ENVIRONMENT=ENV,
                              SHIPLEDGER_IMAGE=f"registry.example.com/shop/{service}:2.0.0")
    assert code == 2 and "a tag can move" in output

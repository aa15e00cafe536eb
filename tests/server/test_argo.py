"""Argo Rollouts' analysis and Argo CD's PreSync hook against a real `shipledger serve` and devnet.

The Argo Rollouts side is done as its controller does it (argoproj/argo-rollouts):
- the AnalysisRun's args are resolved from the Rollout (utils/analysis/factory.go
  extractValueFromRollout, ported below) and put into the URL by `{{args.NAME}}` substitution;
- the `web` provider GETs it with timeoutSeconds, takes any status outside 2xx as an Error and
  otherwise the whole JSON body as `result` (metricproviders/webmetric/webmetric.go);
- the verdict comes from the conditions evaluated by expr-lang/expr, the engine Argo Rollouts uses,
  built from the Go module proxy (tests/server/argo_eval, a port of utils/evaluate EvaluateResult).
No Kubernetes cluster and no Argo controller run here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from support import ENV, unique
from conftest import Server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "argo"
EVAL_SOURCE = Path(__file__).resolve().parent / "argo_eval"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


@pytest.fixture(scope="module")
def argo_eval(tmp_path_factory) -> Path:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        pytest.fail("Go is needed to build Argo's expression engine (expr-lang/expr from the Go module proxy)")
    binary = tmp_path_factory.mktemp("argo") / "argo-eval"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=EVAL_SOURCE, check=True, timeout=600,
                   env={**os.environ, "GOFLAGS": "-buildvcs=false -mod=readonly"})
    return binary


@pytest.fixture(scope="module")
def gate_server(dn):
    srv = Server(dn)
    yield srv
    srv.stop()


def extract_value_from_rollout(rollout: dict, path: str) -> str:
    """argo-rollouts utils/analysis/factory.go extractValueFromRollout: split on . [ ], walk maps and
    lists, end in a primitive."""
    value = rollout
    for section in re.split(r"[.\[\]]+", path):
        if section == "":
            continue
        if isinstance(value, list):
            value = value[int(section)]
        elif isinstance(value, dict):
            value = value.get(section)
        else:
            raise ValueError(f"invalid path {path} in rollout")
    if value is None or isinstance(value, (list, dict)):
        raise ValueError(f"path {path} in rollout must terminate in a primitive value")
    return str(value)


def analysis_request(template: dict, rollout: dict, base_url: str) -> tuple[str, float, dict]:
    """(URL, timeout, metric) of the AnalysisRun the Rollout's analysis step makes from the template."""
    [step] = [s["analysis"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in s]
    assert step["templates"] == [{"templateName": template["metadata"]["name"]}]
    args = {}
    for arg in step["args"]:
        args[arg["name"]] = arg["value"] if "value" in arg else extract_value_from_rollout(rollout, arg["valueFrom"]["fieldRef"]["fieldPath"])
    assert set(args) == {a["name"] for a in template["spec"]["args"]}
    [metric] = template["spec"]["metrics"]
    url = re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: args[m.group(1)], metric["provider"]["web"]["url"])
    url = re.sub(r"^https?://[^/]+", base_url, url)
    return url, metric["provider"]["web"].get("timeoutSeconds", 10), metric


def measure(argo_eval: Path, url: str, timeout: float, metric: dict) -> str:
    """One measurement of the web provider: Successful, Failed, Inconclusive or Error."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        return f"Error: received non 2xx response code: {exc.code}"
    verdict = subprocess.run([str(argo_eval)], input=json.dumps({
        "result": json.loads(body), "successCondition": metric.get("successCondition", ""),
        "failureCondition": metric.get("failureCondition", "")}), capture_output=True, text=True, check=True, timeout=30)
    return verdict.stdout.strip()


def rollout_for(image: str, service: str) -> dict:
    _, rollout = documents("analysis-template.yaml")
    rollout["spec"]["template"]["spec"]["containers"][0]["image"] = image
    for arg in rollout["spec"]["strategy"]["canary"]["steps"][0]["analysis"]["args"]:
        if arg["name"] == "service":
            arg["value"] = service
        if arg["name"] == "environment":
            arg["value"] = ENV
    return rollout


def test_the_examples_parse_as_argo_and_kubernetes_objects():
    template, rollout = documents("analysis-template.yaml")
    assert (template["apiVersion"], template["kind"]) == ("argoproj.io/v1alpha1", "AnalysisTemplate")
    assert (rollout["apiVersion"], rollout["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
    [metric] = template["spec"]["metrics"]
    assert metric["successCondition"] == "result.allowed == true"
    assert "/v1/gate?" in metric["provider"]["web"]["url"]
    [job] = documents("presync-job.yaml")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    assert job["spec"]["backoffLimit"] == 0 and 0 < job["spec"]["activeDeadlineSeconds"] <= 300
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_analysis_succeeds_waits_or_fails_as_the_gate_says(dn, gate_server, argo_eval):
    template, _ = documents("analysis-template.yaml")
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2, min_organisations=2)
    image = f"registry.example.com/shop/{service}@{digest}"
    url, timeout, metric = analysis_request(template, rollout_for(image, service), gate_server.url)
    assert f"image={image}&" in url  # the image came from the pod template, by fieldRef

    gate_server.until(url.removeprefix(gate_server.url), lambda a: a.status == 200 and a.json()["reason"] == "not_enough_approvals")
    assert measure(argo_eval, url, timeout, metric) == "Inconclusive"  # votes missing: the rollout pauses

    dn.approve(digest, service)
    gate_server.until(url.removeprefix(gate_server.url), lambda a: a.json().get("allowed"))
    assert measure(argo_eval, url, timeout, metric) == "Successful"

    dn.ledger("registrar").revoke(digest, service, "CVE-2026-0001")
    gate_server.until(url.removeprefix(gate_server.url), lambda a: a.json().get("reason") == "artifact_revoked")
    assert measure(argo_eval, url, timeout, metric) == "Failed"  # a hard denial aborts the rollout

    tagged = rollout_for(f"registry.example.com/shop/{service}:1.0.0", service)
    assert measure(argo_eval, *analysis_request(template, tagged, gate_server.url)) == "Error: received non 2xx response code: 400"


def test_the_presync_job_runs_the_gate_and_exits_with_its_answer(dn):
    [job] = documents("presync-job.yaml")
    [container] = job["spec"]["template"]["spec"]["containers"]
    service = unique()
    allowed = dn.release(service)
    denied = dn.register(service, "2.0.0")
    for digest, expected in ((allowed, 0), (denied, 3)):
        env = {e["name"]: e["value"] for e in container["env"]}
        env.update(DIGEST=digest, SHIPLEDGER_RPC_URL=dn.rpc_url, SHIPLEDGER_DEPLOYMENT=str(dn.book))
        # the kubelet expands $(VAR) in args from the container's env
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
        args = [service if a == "api" else a for a in args]
        result = dn.run(*args, env=env)
        assert result.code == expected, result
        assert result.json()["allowed"] is (expected == 0)

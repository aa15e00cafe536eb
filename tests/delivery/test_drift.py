"""`shipledger drift` against the devnet's ledger, with a pod list made of real `kubectl create
deployment --dry-run=client -o json` templates turned into Pods and their status filled in as the
kubelet reports it (containerd's imageID REPO@sha256:...). Each finding, and a clean case."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support import ENV, digest_for, fails, ok, unique

NAMESPACE = "shop"


def kubectl_template(image: str) -> dict:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl (Debian kubernetes-client) is not installed")
    obj = json.loads(subprocess.run(["kubectl", "create", "deployment", "web", f"--image={image}", "--dry-run=client", "-o",
                                     "json"], check=True, capture_output=True, text=True, timeout=60).stdout)
    return obj["spec"]["template"]


def running_pod(name: str, image: str, runs: str | None = None, annotations: dict | None = None, phase: str = "Running") -> dict:
    """A Pod from kubectl's template with a status: `runs` is the imageID the kubelet reports."""
    template = copy.deepcopy(kubectl_template(image))
    [container] = template["spec"]["containers"]
    metadata = {**template["metadata"], "name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"}
    if annotations:
        metadata["annotations"] = annotations
    status = {"name": container["name"], "image": image, "ready": phase == "Running", "restartCount": 0,
              "started": phase == "Running", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    if runs:
        status["imageID"] = runs
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": template["spec"],
            "status": {"phase": phase, "podIP": "10.0.0.9", "containerStatuses": [status]}}


def pod_list(*pods) -> dict:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(pods)}


@pytest.fixture(scope="module")
def ledger_world(dn):
    """web: v1 replaced by v2 (v2 live, v1 the rollback target), v3 registered only; api: live a1,
    then revoked; jobs: live j1, nothing of it running."""
    web, api, jobs = unique("web"), unique("api"), unique("jobs")
    deployer = dn.ledger("deployer")
    digests = {}
    for name, service, version in (("v1", web, "1"), ("v2", web, "2"), ("a1", api, "1"), ("j1", jobs, "1")):
        digests[name] = dn.release(service, version)
        deployer.complete(deployer.start_deployment(digests[name], service, ENV, 100))
    digests["v3"] = dn.register(web, "3")
    digests["j2"] = dn.register(jobs, "2")
    dn.ledger("registrar").revoke(digests["a1"], api, "CVE-2026-0001")
    repo = {"web": "registry.example/shop/web", "api": "registry.example/shop/api", "jobs": "registry.example/shop/jobs"}
    map_file = Path(dn.workdir) / "drift-map.yaml"
    map_file.write_text(f"images:\n  {repo['web']}: {web}\n  {repo['api']}: {api}\n  {repo['jobs']}: {jobs}\n"
                        f"namespaces:\n  {NAMESPACE}: {ENV}\n")
    return {"services": {"web": web, "api": api, "jobs": jobs}, "digests": digests, "repo": repo, "map": map_file}


def drift(dn, world, pods: dict, tmp_path, *extra: str):
    path = tmp_path / f"pods-{unique('l')}.json"
    path.write_text(json.dumps(pods))
    return dn.run("drift", "--kubernetes", str(path), "--admission-map", str(world["map"]), *extra)


def test_clean_when_the_live_release_and_the_rollback_target_run(dn, ledger_world, tmp_path):
    d, r = ledger_world["digests"], ledger_world["repo"]
    pods = pod_list(running_pod("web-1", f"{r['web']}@{d['v2']}", f"{r['web']}@{d['v2']}"),
                    # named by tag; the kubelet's imageID says which digest runs
                    running_pod("web-2", f"{r['web']}:1", f"{r['web']}@{d['v1']}"),
                    running_pod("old-job", f"{r['web']}@{digest_for('gone')}", phase="Succeeded"))
    result = drift(dn, ledger_world, pods, tmp_path)
    assert result.code == 0, result.err
    assert "no drift: 2 running containers compared in 1 targets" in result.err
    json_result = drift(dn, ledger_world, pods, tmp_path, "--json")
    assert json_result.code == 0 and json_result.out == ""


def test_every_finding(dn, ledger_world, tmp_path):
    d, r, s = ledger_world["digests"], ledger_world["repo"], ledger_world["services"]
    never = digest_for(unique("never"))
    pods = pod_list(
        running_pod("web-live", f"{r['web']}@{d['v2']}", f"{r['web']}@{d['v2']}"),
        running_pod("web-never", f"{r['web']}@{never}", f"{r['web']}@{never}"),
        running_pod("web-new", f"{r['web']}@{d['v3']}", f"{r['web']}@{d['v3']}"),
        running_pod("api-revoked", f"{r['api']}@{d['a1']}", f"{r['api']}@{d['a1']}"),
        running_pod("jobs-other", f"{r['jobs']}@{d['j2']}", f"{r['jobs']}@{d['j2']}"),
        running_pod("tool", "registry.example/elsewhere/tool@" + d["v2"], "registry.example/elsewhere/tool@" + d["v2"]),
        running_pod("tagged", f"{r['web']}:latest"),  # no digest anywhere: the kubelet has not pulled it yet
    )
    result = drift(dn, ledger_world, pods, tmp_path, "--json")
    assert result.code == 3, result.err
    findings = [json.loads(line) for line in result.out.splitlines()]
    by_kind = {}
    for finding in findings:
        assert set(finding) == {"kind", "where", "reason", "service", "environment", "digest"}
        by_kind.setdefault(finding["kind"], []).append(finding)
    assert sorted(by_kind) == ["live_not_running", "no_digest", "revoked", "unexpected", "unmapped", "unregistered"]
    assert [f["where"] for f in by_kind["unregistered"]] == [f"pod {NAMESPACE}/web-never container web"]
    assert by_kind["unregistered"][0]["digest"] == never
    assert {f["where"] for f in by_kind["unexpected"]} == {f"pod {NAMESPACE}/web-new container web",
                                                           f"pod {NAMESPACE}/jobs-other container jobs"}
    assert [f["where"] for f in by_kind["revoked"]] == [f"pod {NAMESPACE}/api-revoked container api"]
    [missing] = by_kind["live_not_running"]
    assert (missing["service"], missing["digest"]) == (s["jobs"], d["j1"])  # api's live release runs, but revoked
    assert "elsewhere/tool" in by_kind["unmapped"][0]["reason"]
    assert by_kind["no_digest"][0]["where"] == f"pod {NAMESPACE}/tagged container web"
    human = drift(dn, ledger_world, pods, tmp_path)
    assert human.code == 3 and "7 findings: 5 running containers compared in 3 targets" in human.err
    assert "DRIFT revoked: pod shop/api-revoked container api" in human.err


def test_observed_lines_and_stdin(dn, ledger_world, tmp_path):
    d, s = ledger_world["digests"], ledger_world["services"]
    lines = tmp_path / "observed.jsonl"
    lines.write_text(json.dumps({"service": s["web"], "environment": ENV, "digest": d["v2"], "where": "vm-1"}) + "\n\n")
    assert dn.run("drift", "--observed", str(lines), "--json").code == 0
    lines.write_text(json.dumps({"service": s["web"], "environment": ENV, "digest": d["v3"], "where": "vm-2"}) + "\n")
    result = dn.run("drift", "--observed", str(lines), "--json")
    assert result.code == 3
    findings = [json.loads(line) for line in result.out.splitlines()]
    assert [(f["kind"], f["where"]) for f in findings] == [("unexpected", "vm-2"), ("live_not_running", f"{s['web']} in {ENV}")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"service": "web"}\n')
    fails(dn.run("drift", "--observed", str(bad)), 2, "bad.jsonl:1", "exactly the string keys")
    fails(dn.run("drift"), 2, "one of the two")

"""POST /v1/observations (bearer token), GET /v1/drift and drift in /metrics, on a real server."""

from __future__ import annotations

import json
import urllib.request

from conftest import Server, error_of, request
from support import ENV, digest_for, unique

TOKEN = "observations-token-0123456789"


def post(srv, body, token: str | None = TOKEN):
    req = urllib.request.Request(srv.url + "/v1/observations", json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_observations_are_gated_and_drift_shows_in_metrics(dn):
    service = unique("obs")
    live = dn.release(service, "1")
    deployer = dn.ledger("deployer")
    deployer.complete(deployer.start_deployment(live, service, ENV, 100))
    other = dn.register(service, "2")
    off = Server(dn)
    try:
        assert error_of(request(off.url + "/v1/observations", b"{}", "POST"), 404)["code"] == "ObservationsOff"
    finally:
        off.stop()
    srv = Server(dn, "--observations-token-env", "OBS_TOKEN", env={"OBS_TOKEN": TOKEN})
    try:
        body = {"source": "cluster-a", "observations": [
            {"service": service, "environment": ENV, "digest": live, "where": "pod shop/a"},
            {"service": service, "environment": ENV, "digest": other, "where": "pod shop/b"},
            {"service": service, "environment": ENV, "digest": digest_for(unique()), "where": "pod shop/c"}]}
        srv.until("/readyz", lambda a: a.status == 200 and a.json()["index_lag"] == 0)  # the index holds `other`
        assert post(srv, body, None)[0] == 401
        assert post(srv, body, "wrong-token-0123456789")[0] == 401
        assert post(srv, {"source": "x"})[0] == 400
        status, answer = post(srv, body)
        assert status == 200 and answer["observations"] == 3
        assert sorted((f["kind"], f["where"]) for f in answer["findings"]) == [("unexpected", "pod shop/b"),
                                                                             ("unregistered", "pod shop/c")]
        assert srv.get("/v1/drift").json()["sources"] == ["cluster-a"]
        metrics = srv.get("/metrics").body.decode()
        assert 'shipledger_drift_findings{kind="unexpected"} 1' in metrics
        assert 'shipledger_drift_findings{kind="live_not_running"} 0' in metrics
        assert 'shipledger_observations{source="cluster-a"} 3' in metrics
        status, answer = post(srv, {"source": "cluster-a", "observations": [body["observations"][0]]})  # replaced: clean
        assert status == 200 and answer["findings"] == []
        assert 'shipledger_drift_findings{kind="unexpected"} 0' in srv.get("/metrics").body.decode()
    finally:
        srv.stop()

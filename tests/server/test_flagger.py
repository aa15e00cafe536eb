"""Flagger's webhooks on a real `shipledger serve` against a real devnet, called the way Flagger calls
them (fluxcd/flagger pkg/controller/webhook.go): POST of {name, namespace, phase, checksum, metadata}
as application/json, the webhook's own timeout (10 s when it names none), and success meaning a
status up to 202. The webhooks, their metadata and timeouts come from deploy/flagger/canary.yaml."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from support import ENV, unique
from conftest import Server

CANARY = Path(__file__).resolve().parents[2] / "deploy" / "flagger" / "canary.yaml"


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the forms Flagger's webhooks use (5s, 1m, 1m30s)."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert parts and text, f"not a duration: {text!r}"
    h, m, s = (int(p or 0) for p in parts.groups())
    return h * 3600 + m * 60 + s


class Flagger:
    """The Canary's webhooks, pointed at the test server, called as Flagger's callWebhook does."""

    def __init__(self, server: Server, service: str, digest: str, name: str | None = None):
        canary = yaml.safe_load(CANARY.read_text())
        self.name, self.namespace = name or canary["metadata"]["name"], canary["metadata"]["namespace"]
        self.hooks = {}
        for hook in canary["spec"]["analysis"]["webhooks"]:
            path = re.sub(r"^https?://[^/]+", "", hook["url"])
            metadata = {**hook["metadata"], "service": service, "environment": ENV, "digest": digest}
            self.hooks[hook["type"]] = (server.url + path, metadata, parse_duration(hook.get("timeout") or "10s"))
        self.checksum = hashlib.sha256(f"{self.name}{digest}".encode()).hexdigest()[:10]  # canary.ComputeHash's stand-in

    def call(self, hook: str, phase: str = "Progressing", checksum: str | None = None) -> tuple[bool, int, dict]:
        """(Flagger's verdict: status <= 202, the status, the body)."""
        url, metadata, timeout = self.hooks[hook]
        payload = {"name": self.name, "namespace": self.namespace, "phase": phase, "checksum": checksum or self.checksum,
                   "metadata": metadata}
        request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        return status <= 202, status, json.loads(body)


@pytest.fixture(scope="module")
def hooked(dn):
    srv = Server(dn, "--deployer-key-env", "DEPLOYER_KEY", env={"DEPLOYER_KEY": dn.key("deployer")})
    yield srv
    srv.stop()


def head(dn) -> int:
    from shipledger.network.devnet import rpc_call

    return int(rpc_call(dn.rpc_url, "eth_blockNumber", []), 16)


def started(dn, service: str) -> list:
    return dn.history(service, "deployed")


def until(check, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "the server never caught up"
        time.sleep(0.1)
    return result


def test_every_example_webhook_is_a_flagger_hook_with_the_release_in_its_metadata():
    canary = yaml.safe_load(CANARY.read_text())
    assert canary["apiVersion"] == "flagger.app/v1beta1" and canary["kind"] == "Canary"
    hooks = canary["spec"]["analysis"]["webhooks"]
    assert {h["type"] for h in hooks} == {"confirm-rollout", "pre-rollout", "confirm-promotion", "rollback", "post-rollout", "event"}
    for hook in hooks:
        assert hook["url"].endswith("/flagger/" + hook["type"])
        assert {"service", "environment", "digest"} <= set(hook["metadata"])
        assert all(isinstance(v, str) for v in hook["metadata"].values())  # Flagger's metadata is map[string]string
        assert parse_duration(hook["timeout"]) <= 30


def test_a_rollout_from_confirmation_to_completion(dn, hooked):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2, min_organisations=2)
    flagger = Flagger(hooked, service, digest)
    block = head(dn)
    passed, status, body = until(lambda: (a := flagger.call("confirm-rollout")) and a[2].get("block", -1) >= block and a)
    assert (passed, status, body["reason"]) == (False, 403, "not_enough_approvals")
    assert body["message"] == "not enough approvals: 0 of 2"

    dn.approve(digest, service)
    assert until(lambda: flagger.call("confirm-rollout")[0])

    first = flagger.call("pre-rollout")
    again = flagger.call("pre-rollout")  # Flagger retries a hook it did not see succeed
    assert first[:2] == (True, 200) and first[2]["started"] is True
    assert again[2] == {"deployment": first[2]["deployment"], "started": False}
    assert [e.fields["id"] for e in started(dn, service)] == [first[2]["deployment"]]

    # the rollout this Canary started is not "another rollout in progress" for its own promotion ...
    # (asked at the rollout's block: an answer from the block before would allow anyone)
    started_at = head(dn)
    assert until(lambda: (a := flagger.call("confirm-promotion")) and a[2].get("block", -1) >= started_at and a[0])
    # ... but it is for any other Canary of the same target
    other = Flagger(hooked, service, digest, name="api-other")
    passed, status, body = other.call("confirm-promotion")
    assert (passed, status, body["reason"]) == (False, 403, "rollout_in_progress")

    done = flagger.call("post-rollout", phase="Succeeded")
    assert done[:2] == (True, 200) and done[2]["status"] == "completed"
    assert flagger.call("post-rollout", phase="Succeeded")[2]["status"] == "completed"  # a retry changes nothing
    deployment = dn.ledger().deployment(first[2]["deployment"])
    assert (deployment.status, deployment.percent) == ("completed", 100)


def test_a_failed_canary_is_recorded_as_failed(dn, hooked):
    service = unique()
    digest = dn.release(service)
    flagger = Flagger(hooked, service, digest)
    until(lambda: flagger.call("confirm-rollout")[0])
    deployment_id = flagger.call("pre-rollout")[2]["deployment"]
    passed, status, body = flagger.call("post-rollout", phase="Failed")
    assert (passed, body) == (True, {"deployment": deployment_id, "status": "failed"})
    assert dn.ledger().deployment(deployment_id).status == "failed"


def test_rollback_is_signalled_for_a_revoked_artifact_and_a_freezing_incident(dn, hooked):
    service = unique()
    digest = dn.release(service, freeze_severity=2)
    flagger = Flagger(hooked, service, digest)
    until(lambda: flagger.call("confirm-rollout")[0])
    passed, status, body = flagger.call("rollback")
    assert (passed, status, body["rollback"]) == (False, 409, False)  # no rollback while the gate allows

    dn.ledger("responder").open_incident(service, ENV, 1, "5xx everywhere")
    passed, status, body = until(lambda: (a := flagger.call("rollback")) and a[0] and a)
    assert (status, body["reason"]) == (200, "frozen_by_incident")
    assert flagger.call("confirm-promotion")[:2] == (False, 403)

    revoked_service = unique()
    revoked = dn.release(revoked_service)
    dn.ledger("registrar").revoke(revoked, revoked_service, "CVE")
    passed, status, body = until(lambda: (a := Flagger(hooked, revoked_service, revoked).call("rollback")) and a[0] and a)
    assert body["reason"] == "artifact_revoked" and "revoked" in body["message"]


def test_events_are_logged_and_bad_payloads_refused(dn, hooked):
    service = unique()
    flagger = Flagger(hooked, service, "sha256:" + "ab" * 32)
    assert flagger.call("event")[:2] == (True, 202)
    until(lambda: f'"canary": "shop/api", "phase": "Progressing", "checksum": "{flagger.checksum}"' in hooked.log.read_text())

    url = flagger.hooks["confirm-rollout"][0]
    for body, needle in ((b"not json", "not JSON"), (b'{"name": "api"}', "namespace"),
                         (json.dumps({"name": "a", "namespace": "b", "phase": "Progressing", "checksum": "c"}).encode(),
                          "metadata lacks digest, service, environment")):
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 400 and needle in json.loads(caught.value.read())["error"]["message"]
    assert hooked.post("/flagger/nowhere", {}).status == 404


def test_a_stalled_chain_is_503_never_a_confirmation(dn):
    service = unique()
    digest = dn.release(service)
    srv = Server(dn, "--max-block-age", "2", ready=False)
    try:
        flagger = Flagger(srv, service, digest)
        dn.register(unique())  # a fresh block
        assert until(lambda: flagger.call("confirm-rollout")[0])
        time.sleep(2.5)  # anvil mines only on demand: the chain now looks stalled
        for hook in ("confirm-rollout", "confirm-promotion", "rollback"):
            passed, status, body = flagger.call(hook)
            assert (passed, status) == (False, 503) and "stalled" in body["error"]["message"]
    finally:
        srv.stop()

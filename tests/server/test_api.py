"""The JSON API of a real `shipledger serve` process against a real devnet: the gate, the reads (the
same answers and files as the CLI), errors, /metrics and the relay."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from urllib.parse import urlencode

from eth_account import Account

from shipledger.client import sign_approval
from support import ENV, ok, unique
from conftest import Http, Server, error_of


def gate_url(digest: str, service: str, env: str = ENV) -> str:
    return "/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": env})


def head(dn) -> int:
    from shipledger.network.devnet import rpc_call

    return int(rpc_call(dn.rpc_url, "eth_blockNumber", []), 16)


def test_gate_answers_from_the_chain_and_flips_when_approved(dn, server):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2, min_organisations=2)
    answer = server.until(gate_url(digest, service), lambda a: a.status == 200 and a.json()["block"] >= head(dn))
    assert answer.json() == {"allowed": False, "reason": "not_enough_approvals", "details": {"have": 0, "need": 2},
                             "block": head(dn)}
    assert answer.headers["content-type"] == "application/json"
    dn.approve(digest, service)
    answer = server.until(gate_url(digest, service), lambda a: a.json()["allowed"])
    assert answer.json() == {"allowed": True, "reason": "allowed", "details": {}, "block": head(dn)}
    cli = ok(dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json"))
    assert cli["allowed"] is True and cli["reason"] == answer.json()["reason"]


def test_bad_input_is_400_with_the_error_document(server):
    assert error_of(server.get(gate_url("sha256:12", "api")), 400)["code"] == "UsageError"
    bad_name = error_of(server.get(gate_url("sha256:" + "a" * 64, "no spaces allowed")), 400)
    assert "service" in bad_name["message"]
    assert error_of(server.get("/v1/gate?service=api"), 400)["code"] == "UsageError"
    assert error_of(server.get("/v1/nowhere"), 404)["code"] == "NotFound"
    assert error_of(server.get("/v1/history?since=2026-02-01&until=2026-01-01"), 400)["message"].startswith("--since")
    assert error_of(server.get("/v1/history?cursor=x"), 400)["code"] == "UsageError"


def test_reads_are_the_cli_answers(dn, server):
    service = unique()
    digest = dn.release(service)
    deployer = dn.ledger("deployer")
    first = deployer.start_deployment(digest, service, ENV, 10)
    deployer.promote(first, 100)
    deployer.complete(first)
    second = dn.register(service, "2.0.0")
    dn.ledger("responder").open_incident(service, ENV, 2, "<b>5xx</b> & more")
    block = head(dn)
    server.until("/readyz", lambda a: a.status == 200 and a.json()["indexed_to"] >= block)

    # status: what `shipledger status --json` prints
    status = server.get(f"/v1/status/{service}/{ENV}")
    assert status.status == 200
    assert status.json() == ok(dn.run("status", service, ENV, "--json", "--db", str(dn.workdir / "cli.sqlite")))
    assert status.json()["pending_approvals"][0]["digest"] == second

    # history: the CLI's filters, walked page by page with the cursor
    cli_events = ok(dn.run("history", "--service", service, "--json", "--db", str(dn.workdir / "cli.sqlite")))["events"]
    pages, cursor = [], None
    while True:
        query = {"service": service, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = server.get("/v1/history?" + urlencode(query)).json()
        assert "events" in page, page
        pages += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(pages) == len(cli_events) > 4
    assert [(e["block"], e["log_index"], e["kind"], e["summary"], e["fields"]) for e in pages] == \
           [(e["block"], e["log_index"], e["kind"], e["summary"], e["fields"]) for e in cli_events]
    kinds = server.get("/v1/history?" + urlencode({"service": service, "kind": ["deployed", "completed"]}, doseq=True)).json()["events"]
    assert [e["kind"] for e in kinds] == ["deployed", "completed"]

    # export: byte for byte the file `shipledger export` writes, and it verifies against the chain
    for fmt in ("csv", "jsonl"):
        out = dn.workdir / f"cli-export.{fmt}"
        ok(dn.run("export", "--format", fmt, "--out", out, "--service", service, "--json", "--db", str(dn.workdir / "cli.sqlite")))
        streamed = server.get("/v1/export?" + urlencode({"format": fmt, "service": service}))
        assert streamed.status == 200 and "attachment" in streamed.headers["content-disposition"]
        assert streamed.body == out.read_bytes()
        served = dn.workdir / f"served.{fmt}"
        served.write_bytes(streamed.body)
        assert ok(dn.run("verify-export", served, "--json"))["ok"] is True

    # the artifact: `shipledger trace --json`
    artifact = server.get(f"/v1/artifacts/{digest}?service={service}").json()
    trace = ok(dn.run("trace", "--digest", digest, "--service", service, "--json", "--db", str(dn.workdir / "cli.sqlite")))
    assert artifact["steps"] == trace["steps"]
    assert artifact["artifact"] == {**trace["artifact"], "kind": "build"} and artifact["attestations"] == []
    unknown = error_of(server.get(f"/v1/artifacts/sha256:{'c' * 64}?service={service}"), 404)
    assert "not registered" in unknown["message"]

    # DORA: the numbers of `shipledger report --json`
    dora = server.get("/v1/dora?" + urlencode({"service": service})).json()
    report = ok(dn.run("report", "--service", service, "--json", "--db", str(dn.workdir / "cli.sqlite")))
    for key in ("deployments", "completed", "failed", "rolled_back", "unresolved_incidents", "change_failure_rate"):
        assert dora[key] == report[key], key
    assert dora["deployments"] == 1 and dora["unresolved_incidents"] == 1

    # /metrics: deployment states and open incidents from the index, the gate's answers by reason
    text = server.get("/metrics").body.decode()
    completed = int(next(line.split()[-1] for line in text.splitlines() if line.startswith('shipledger_deployments{state="completed"}')))
    assert completed >= 1
    assert 'shipledger_open_incidents{severity="2"}' in text
    assert "shipledger_index_lag_blocks 0" in text
    assert any(line.startswith("shipledger_newest_block_age_seconds ") for line in text.splitlines())


def test_pending_lists_what_waits_for_each_approver(dn, server):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2, min_organisations=2)
    approver0, approver1 = dn.address("approver", 0), dn.address("approver", 1)

    def mine(approver):
        return [r for r in server.get(f"/v1/pending?approver={approver}").json()["releases"] if r["service"] == service]

    server.until(f"/v1/pending?approver={approver0}", lambda a: any(r["service"] == service for r in a.json()["releases"]))
    [release] = mine(approver0)
    assert release["digest"] == digest and release["version"] == "1.0.0"
    assert release["gate"]["reason"] == "not_enough_approvals"
    assert release["tally"]["approvals"] == 0 and release["tally"]["threshold"] == 2
    assert release["registrant"] == dn.address("registrar")
    dn.approve(digest, service, approvers=(0,))
    server.until(f"/v1/pending?approver={approver0}", lambda a: not any(r["service"] == service for r in a.json()["releases"]))
    [release] = mine(approver1)
    assert release["tally"]["approvals"] == 1 and release["tally"]["organisations"] == 1
    assert [v["approver"] for v in release["tally"]["votes"]] == [approver0]
    metrics = server.get("/metrics").body.decode()
    assert f'shipledger_pending_approval_oldest_seconds{{service="{service}",environment="{ENV}"}}' in metrics
    assert error_of(server.get("/v1/pending?approver=0x12"), 400)["code"] == "UsageError"


def _signed(dn, digest, service, signer_key, decision="approve", **kw):
    book = json.loads(dn.book.read_text())
    return asdict(sign_approval(Account.from_key(signer_key), chain_id=int(book["chain_id"]),
                                registry=book["contracts"]["ReleaseRegistry"]["address"], digest=digest, service=service,
                                environment=ENV, decision=decision, **kw))


def test_relay_names_what_the_registry_skipped_and_why(dn, server):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=1, min_organisations=1)
    forged = _signed(dn, digest, service, Account.create().key.hex())
    forged["signer"] = dn.address("approver", 0)  # claims an approver, signed by someone else
    expired = _signed(dn, digest, service, dn.key("approver", 1), deadline=1, signed_at=0)
    answer = server.post("/v1/relay", [forged, expired])
    assert answer.status == 200, answer.body
    body = answer.json()
    tx = body["tx"]["tx_hash"]
    assert body["submitted"] == []
    assert [(s["signer"], s["reason"], s["tx_hash"]) for s in body["skipped"]] == \
           [(dn.address("approver", 0), "bad_signature", tx), (dn.address("approver", 1), "expired", tx)]
    # an honest vote in the same batch as a forged one is recorded; its replay is skipped as nonce_used
    honest = _signed(dn, digest, service, dn.key("approver", 2))
    forged_again = {**forged, "nonce": forged["nonce"] + 1}
    mixed = server.post("/v1/relay", [forged_again, honest]).json()
    assert [s["signer"] for s in mixed["submitted"]] == [dn.address("approver", 2)]
    assert [s["reason"] for s in mixed["skipped"]] == ["bad_signature"]
    fresh = Server(dn, "--relayer-key-env", "RELAYER_KEY", env={"RELAYER_KEY": dn.key("outsider")})
    try:  # a process that never sent it still never sends it twice: the chain says the nonce is used
        replay = fresh.post("/v1/relay", honest).json()
    finally:
        fresh.stop()
    assert replay["tx"] is None and [s["reason"] for s in replay["skipped"]] == ["nonce_used"]
    assert error_of(server.post("/v1/relay", {"signer": "x"}), 400)["code"] == "UsageError"
    approved = dn.history(service, "approved")
    assert [e.fields["approver"] for e in approved] == [dn.address("approver", 2)]
    assert [e.fields["reason"] for e in dn.history(None, "vote-skipped") if e.tx_hash == tx] == [1, 4]
    metrics = server.get("/metrics").body.decode()
    assert 'shipledger_relay_submissions_total{outcome="skipped"} ' in metrics


def test_relay_submits_once_however_often_it_is_retried(dn, server):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2, min_organisations=2)
    votes = [_signed(dn, digest, service, dn.key("approver", i)) for i in (0, 1)]
    answers = []

    def post():
        answers.append(server.post("/v1/relay", votes))

    threads = [threading.Thread(target=post) for _ in range(3)]  # a client retrying before the first answer came back
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status for a in answers) == [200, 200, 200], [a.body for a in answers]
    sent = [a.json() for a in answers if a.json()["tx"]]
    assert len(sent) == 1, answers
    tx = sent[0]["tx"]["tx_hash"]
    assert [s["signer"] for s in sent[0]["submitted"]] == [dn.address("approver", 0), dn.address("approver", 1)]
    for other in (a.json() for a in answers if not a.json()["tx"]):
        assert other["submitted"] == [] and {s["tx_hash"] for s in other["skipped"]} == {tx}
    again = server.post("/v1/relay", votes[0]).json()
    assert again["tx"] is None and again["skipped"][0]["tx_hash"] == tx
    approved = dn.history(service, "approved")
    assert len(approved) == 2 and {e.tx_hash for e in approved} == {tx}
    assert all(e.fields["bySignature"] for e in approved)
    server.until(gate_url(digest, service), lambda a: a.json()["allowed"])
    metrics = server.get("/metrics").body.decode()
    assert 'shipledger_relay_submissions_total{outcome="submitted"} ' in metrics
    assert 'shipledger_relay_submissions_total{outcome="skipped"} ' in metrics


def test_relay_limits(dn, server):
    # A body declared too large is refused before it is read: send only the headers (sending the body
    # races the server's answer and close, and the client may see a broken pipe instead of the 413).
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/relay")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(600_000))
        connection.endheaders()
        response = connection.getresponse()
        big = Http(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
    assert error_of(big, 413)["code"] == "TooLarge"
    codes = [server.post("/v1/relay", {"not": "a vote"}).status for _ in range(15)]
    assert 429 in codes and codes[0] == 400  # a burst of 10, then one a second


def test_relay_is_off_without_a_key_and_headers_are_strict(dn):
    srv = Server(dn)
    try:
        off = error_of(srv.post("/v1/relay", {}), 404)
        assert off["code"] == "RelayOff"
        page = srv.get("/inbox")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in page.headers  # CORS stays off
        assert "set-cookie" not in page.headers
        assert srv.get("/v1/openapi.json").json()["paths"]["/v1/gate"]["get"]["responses"]["503"]
    finally:
        srv.stop()


def test_grafana_dashboard_reads_only_metrics_the_server_exports(server):
    import re
    from pathlib import Path

    import shipledger.server

    dashboard = json.loads((Path(shipledger.server.__file__).parent / "grafana-dashboard.json").read_text())
    wanted = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"shipledger_[a-z_]+", t["expr"])}
    exported = set(re.findall(r"^# TYPE (\S+)", server.get("/metrics").body.decode(), re.MULTILINE))
    assert len(wanted) == 7 and wanted <= exported, wanted - exported


def test_proposals_are_the_governance_contracts(dn, server):
    service = unique()
    dn.set_policy(service, threshold=1, min_organisations=1)  # proposed, approved, waited out, executed
    steward = dn.ledger("steward", 0)
    waiting = steward.propose(steward.change_policy(service, ENV, threshold=2, min_organisations=2))  # one approval of two
    block = head(dn)
    answer = server.until("/v1/proposals", lambda a: a.status == 200 and a.json()["block"] >= block)
    expected = json.loads(json.dumps([p.to_json() for p in dn.ledger().proposals()]))
    assert answer.json() == {"block": block, "proposals": expected}
    mine = [p for p in answer.json()["proposals"] if p["change"].get("service") == service]
    assert [(p["state"], p["approvals"], p["needed"], p["executed"]) for p in mine] == \
           [("executed", 2, 2, True), ("pending", 1, 2, False)]
    assert mine[1]["proposal_id"] == waiting.id
    pending = server.get("/v1/proposals?state=pending").json()["proposals"]
    assert waiting.id in [p["proposal_id"] for p in pending] and all(p["state"] == "pending" for p in pending)
    assert error_of(server.get("/v1/proposals?state=nonsense"), 400)["code"] == "UsageError"
    steward.cancel_proposal(waiting.id)
    cancelled = server.until("/v1/proposals?state=cancelled", lambda a: waiting.id in [p["proposal_id"] for p in a.json()["proposals"]])
    assert cancelled.status == 200


def test_artifact_kind_attestations_and_the_missing_attestation_gate(dn, server):
    from shipledger.models import ArtifactSpec
    from support import digest_for

    service = unique()
    digest = digest_for(f"{service}@1.0.0")
    registrar = dn.ledger("registrar")  # REGISTRAR and ATTESTOR for all on the devnet
    registrar.register(ArtifactSpec(digest=digest, service=service, version="1.0.0", kind="image"))
    dn.set_policy(service, threshold=1, min_organisations=1, required_attestations=("sast",))
    dn.approve(digest, service, approvers=(0,))
    denied = server.until(gate_url(digest, service), lambda a: a.status == 200 and a.json()["block"] >= head(dn)).json()
    assert denied["reason"] == "missing_attestation" and denied["details"]["attestation_type"] == "sast"
    document = digest_for("sast report <script>")
    registrar.attest(digest, service, "sast", document, "https://ci.example/sast/1")
    assert server.until(gate_url(digest, service), lambda a: a.json()["allowed"]).json()["reason"] == "allowed"
    block = head(dn)
    server.until("/readyz", lambda a: a.status == 200 and a.json()["indexed_to"] >= block)
    artifact = server.get(f"/v1/artifacts/{digest}?service={service}").json()
    assert artifact["artifact"]["kind"] == "image"
    [attestation] = artifact["attestations"]
    assert (attestation["type"], attestation["document"], attestation["uri"], attestation["attestor"]) == \
           ("sast", document, "https://ci.example/sast/1", dn.address("registrar"))
    page = server.get(f"/artifacts/{digest}?service={service}").body.decode()
    assert "<dd>image</dd>" in page and "https://ci.example/sast/1" in page

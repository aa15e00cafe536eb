"""The gate over HTTP fails closed: with the node stopped, or the chain stalled, /v1/gate answers 503
(never allowed) and /readyz says why. Its own devnet: this module stops it."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from support import ENV, _stop_devnet, unique
from conftest import Server, error_of


def test_stalled_chain_is_not_ready_and_the_gate_cannot_decide(dn):
    service = unique()
    digest = dn.release(service)
    url = "/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": ENV})
    srv = Server(dn, "--max-block-age", "2", ready=False)
    try:
        dn.register(unique())  # a fresh block
        assert srv.until(url, lambda a: a.status == 200).json()["allowed"] is True
        time.sleep(2.5)  # anvil mines only on demand: the chain now looks stalled
        assert "stalled" in error_of(srv.get(url), 503)["message"]
        ready = srv.get("/readyz")
        assert ready.status == 503 and any("stalled" in p for p in ready.json()["problems"])
        dn.register(unique())  # a new block: ready again
        srv.until("/readyz", lambda a: a.status == 200)
        assert srv.get(url).json()["allowed"] is True
    finally:
        srv.stop()


def test_the_servers_stall_limit_defaults_to_the_address_books(dn, tmp_path):
    service = unique()
    digest = dn.release(service)
    url = "/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": ENV})
    book = dn.book_variant(tmp_path, "stall", lambda b: b.update(max_block_age=2))
    srv = Server(dn, "--deployment", str(book), ready=False)
    try:
        dn.register(unique())
        assert srv.until(url, lambda a: a.status == 200).json()["allowed"] is True
        time.sleep(2.5)
        failure = error_of(srv.until(url, lambda a: a.status == 503), 503)
        assert "the chain has made no block for" in failure["message"] and "(max_block_age 2 s)" in failure["message"]
    finally:
        srv.stop()


def test_gate_answers_503_with_the_node_stopped(dn):
    service = unique()
    digest = dn.release(service)
    url = "/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": ENV})
    srv = Server(dn)
    try:
        allowed = srv.until(url, lambda a: a.status == 200 and a.json()["allowed"])
        assert allowed.json()["allowed"] is True  # cached for this block from here on
        _stop_devnet(dn.workdir)
        answers = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = srv.get(url)
            answers.append(answer.status)
            if answer.status == 503:
                break
            assert answer.json()["allowed"] is True  # the cached answer of the block last seen, until the node is missed
            time.sleep(0.2)
        failure = error_of(srv.get(url), 503)
        assert failure["code"] == "ConnectionFailed" and "cannot decide" in failure["message"]
        other = "/v1/gate?" + urlencode({"digest": "sha256:" + "d" * 64, "service": service, "environment": ENV})
        assert error_of(srv.get(other), 503)["code"] == "ConnectionFailed"
        assert srv.get("/readyz").status == 503
        assert srv.get("/healthz").status == 200
        metrics = srv.get("/metrics").body.decode()
        assert 'shipledger_gate_answers_total{reason="unknown"}' in metrics
    finally:
        srv.stop()

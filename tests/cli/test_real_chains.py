"""The SDK on real chains, shown on anvil: a stalled chain fails closed, fees follow the chain, several
endpoints, nonce refusals, the journal of sent transactions.

This module starts its own devnet with no governance delay, so the chain's clock stays near ours (a
delay waited out moves anvil's clock ahead, and a chain ahead of us looks fresh for that long).
anvil mines only on demand: its newest block simply ages, which is how a stalled chain looks.
"""

from __future__ import annotations

import time

import pytest

from shipledger import ChainStalled, Ledger
from shipledger.network.devnet import free_port
from support import ENV, Devnet, _stop_devnet, fails, ok, one_line, run, unique

MAX_AGE = 6  # seconds: room for a loaded machine to run the gate on a fresh block


@pytest.fixture(scope="module")
def dn(tmp_path_factory) -> Devnet:
    workdir = tmp_path_factory.mktemp("devnet")
    port = free_port()
    result = run(["devnet", "up", "--port", port, "--governance-delay", "0", "--json"], cwd=workdir, timeout=120)
    try:
        yield Devnet(workdir=workdir, info=ok(result), port=port)
    finally:
        _stop_devnet(workdir)


def _until_stale(dn: Devnet, limit: float) -> None:
    """Sleep until the newest block is more than `limit` seconds old by our clock."""
    while (age := time.time() - dn.block_time()) <= limit + 0.5:
        time.sleep(limit + 0.6 - age)


# ---------------------------------------------------------------------- 1. a stalled chain fails closed

def test_the_gate_denies_on_a_stalled_chain_and_answers_again_on_a_new_block(dn, tmp_path):
    service = unique()
    digest = dn.release(service)
    book = dn.book_variant(tmp_path, "stall", lambda b: b.update(max_block_age=MAX_AGE))
    gate = ["--deployment", book, "gate", "--digest", digest, "--service", service, "--env", ENV]
    dn.register(unique())  # a fresh block
    assert ok(dn.run(*gate, "--json"))["allowed"] is True
    _until_stale(dn, MAX_AGE)
    message = fails(dn.run(*gate), 1, "the chain has made no block for", f"(max_block_age {MAX_AGE} s)")
    one_line(message)
    fails(dn.run(*gate, "--json"), 1, "the chain has made no block for")
    with pytest.raises(ChainStalled, match=f"made no block for .* s \\(max_block_age {MAX_AGE} s\\)"):
        Ledger.connect(dn.rpc_url, book).gate(digest, service, ENV)
    assert dn.run("gate", "--digest", digest, "--service", service, "--env", ENV).code == 0  # no field: off
    dn.register(unique())  # the chain moves again: the gate answers again
    assert ok(dn.run(*gate, "--json"))["allowed"] is True
    assert Ledger.connect(dn.rpc_url, book).gate(digest, service, ENV).allowed


@pytest.mark.parametrize("value", ["10", 0, -3, True])
def test_a_bad_max_block_age_is_a_malformed_book(dn, tmp_path, value):
    book = dn.book_variant(tmp_path, "bad-age", lambda b: b.update(max_block_age=value))
    digest = "sha256:" + "a" * 64
    fails(dn.run("--deployment", book, "gate", "--digest", digest, "--service", "s", "--env", ENV), 1, "max_block_age")

"""The SDK on real chains, shown on anvil: a stalled chain fails closed, fees follow the chain, several
endpoints, nonce refusals, the journal of sent transactions.

This module starts its own devnet with no governance delay, so the chain's clock stays near ours (a
delay waited out moves anvil's clock ahead, and a chain ahead of us looks fresh for that long).
anvil mines only on demand: its newest block simply ages, which is how a stalled chain looks.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ExtraDataLengthError

from shipledger import AddressBookError, ArtifactSpec, ChainStalled, ContractRevert, Ledger
from shipledger.errors import TransactionTimeout, UnknownRevert
from shipledger._internal.chain import TxSender, connect
from shipledger.network.devnet import Anvil, dev_private_keys, free_port, rpc_call
from rpc_proxy import RpcProxy, poa_headers
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


# ---------------------------------------------------------------------- 2. fees follow the chain

def _transfer(sender, w3):
    """A plain 21,000-gas transfer through TxSender; the mined transaction as the node holds it."""
    receipt = sender.wait(sender.send_data("0x" + "11" * 20, b"", 21000))
    return w3.eth.get_transaction(receipt.tx_hash)


@pytest.fixture
def berlin_zero_gas():
    """A pre-London chain with a gas price of 0, as QBFT requires: no base fee in its blocks."""
    node = Anvil.start(extra_args=("--hardfork", "berlin", "--gas-price", "0"))
    yield node
    node.stop()


def test_a_chain_without_base_fee_gets_legacy_transactions_at_its_gas_price_even_0(berlin_zero_gas):
    w3 = connect(berlin_zero_gas.url)
    sender = TxSender(w3, Account.from_key(dev_private_keys(1)[0]), berlin_zero_gas.chain_id)
    mined = _transfer(sender, w3)
    assert mined["type"] == 0 and mined["gasPrice"] == 0
    forced = TxSender(w3, Account.from_key(dev_private_keys(2)[1]), berlin_zero_gas.chain_id, fee_mode="eip1559")
    with pytest.raises(AddressBookError, match="eip1559, but the chain's blocks carry no base fee"):
        forced.send_data("0x" + "11" * 20, b"", 21000)


def test_fees_are_read_again_when_the_node_refuses_them_for_price():
    node = Anvil.start()
    try:
        w3 = connect(node.url)
        sender = TxSender(w3, Account.from_key(dev_private_keys(1)[0]), node.chain_id)
        assert _transfer(sender, w3)["type"] == 2
        base = w3.eth.get_block("latest")["baseFeePerGas"]
        rpc_call(node.url, "anvil_setNextBlockBaseFeePerGas", [hex(base * 1000)])
        rpc_call(node.url, "evm_mine", [])  # the fees read before now price a transaction out
        assert sender._fees["maxFeePerGas"] < w3.eth.get_block("latest")["baseFeePerGas"]
        mined = _transfer(sender, w3)  # refused once ("max fee per gas less than block base fee"), then re-priced
        assert mined["maxFeePerGas"] >= 2 * base * 1000
    finally:
        node.stop()


def test_the_books_fees_field_overrides_the_chains_mode(dn, tmp_path):
    book = dn.book_variant(tmp_path, "legacy", lambda b: b.update(fees="legacy"))
    ledger = Ledger.connect(dn.rpc_url, book, dn.key("registrar"))
    ledger.register(ArtifactSpec(digest="sha256:" + uuid.uuid4().hex * 2, service=unique(), version="1"))
    assert ledger.w3.eth.get_transaction(ledger.last_receipt.tx_hash)["type"] == 0
    bad = dn.book_variant(tmp_path, "bad-fees", lambda b: b.update(fees="free"))
    with pytest.raises(AddressBookError, match="fees 'free' is not \"legacy\" or \"eip1559\""):
        Ledger.connect(dn.rpc_url, bad)


# ---------------------------------------------------------------------- 3. PoA headers

def test_poa_headers_with_long_extra_data_are_read_by_every_path(dn, tmp_path):
    """Through a relay that gives every block a Clique-sized extraData (anvil's is empty): web3 without
    the PoA middleware raises ExtraDataLengthError on such a block; the SDK, the CLI gate and the index
    (plain JSON-RPC) read them."""
    proxy = RpcProxy(dn.rpc_url, poa_headers)
    try:
        with pytest.raises(ExtraDataLengthError):
            Web3(Web3.HTTPProvider(proxy.url)).eth.get_block("latest")  # the failure the middleware prevents
        book = dn.book_variant(tmp_path, "poa", lambda b: b.update(max_block_age=3600))
        service = unique()
        ledger = Ledger.connect(proxy.url, book, dn.key("registrar"))
        digest = "sha256:" + uuid.uuid4().hex * 2
        ledger.register(ArtifactSpec(digest=digest, service=service, version="1"))  # fees read from a PoA block
        assert ledger.gate(digest, service, ENV).reason == "no_policy"  # the block age read from one too
        denied = dn.run("--rpc", proxy.url, "--deployment", book, "gate", "--digest", digest, "--service", service, "--env", ENV, "--json")
        assert denied.code == 3 and denied.json()["reason"] == "no_policy"
        ok(dn.run("--rpc", proxy.url, "--deployment", book, "index", "sync", "--db", tmp_path / "poa.sqlite", "--json"))
        assert "eth_getBlockByNumber" in proxy.calls
    finally:
        proxy.stop()


# ---------------------------------------------------------------------- 4. why a transaction reverted

def _doomed_registration(ledger: Ledger, service: str):
    """(fn, data) of a registration of `service` 1, which reverts once `service` 1 is registered."""
    item = ledger.validate_spec(ArtifactSpec(digest="sha256:" + uuid.uuid4().hex * 2, service=service, version="1"))
    fn = ledger.registry.functions.register(item)
    return fn, fn._encode_transaction_data()


def _revert_data(url: str, call: dict) -> str:
    """The revert data a node gives for an eth_call, as JSON-RPC has it in error.data."""
    request = urllib.request.Request(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                                                      "params": [call, "latest"]}).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["error"]["data"]


def test_a_revert_alone_in_its_block_is_replayed_on_that_block(dn):
    ledger, service = dn.ledger("registrar"), unique()
    ledger.register(ArtifactSpec(digest="sha256:" + uuid.uuid4().hex * 2, service=service, version="1"))
    fn, data = _doomed_registration(ledger, service)
    tx_hash = ledger._sender.send_data(ledger.registry.address, data, 600_000)  # own gas: no estimate to stop it
    with pytest.raises(ContractRevert) as raised:
        ledger._sender.wait(tx_hash, fn)
    assert raised.value.error_name == "VersionAlreadyRegistered"


def test_the_nodes_revert_reason_is_used_without_a_replay(dn):
    ledger, service = dn.ledger("registrar"), unique()
    ledger.register(ArtifactSpec(digest="sha256:" + uuid.uuid4().hex * 2, service=service, version="1"))
    fn, data = _doomed_registration(ledger, service)
    reason = _revert_data(dn.rpc_url, {"from": ledger._sender.address, "to": ledger.registry.address, "data": data})

    def with_reason(method, params, result):  # as GoQuorum --revertreason and Besu --revert-reason-enabled give it
        if method == "eth_getTransactionReceipt" and result and result["status"] == "0x0":
            result["revertReason"] = reason
        return result

    proxy = RpcProxy(dn.rpc_url, with_reason)
    try:
        through = Ledger.connect(proxy.url, dn.book, dn.key("registrar"))
        tx_hash = through._sender.send_data(ledger.registry.address, data, 600_000)
        with pytest.raises(ContractRevert) as raised:
            through._sender.wait(tx_hash, fn)
        assert raised.value.error_name == "VersionAlreadyRegistered"
        assert "eth_call" not in proxy.calls[proxy.calls.index("eth_getTransactionReceipt"):]
    finally:
        proxy.stop()


def test_a_revert_among_other_transactions_of_its_block_says_it_cannot_know(dn):
    ledger, service = dn.ledger("registrar"), unique()
    first, first_data = _doomed_registration(ledger, service)  # succeeds: the first of the block
    second, second_data = _doomed_registration(ledger, service)  # reverts: the same version, after the first
    rpc_call(dn.rpc_url, "evm_setAutomine", [False])
    try:
        sender = ledger._sender
        hashes = [sender.send_data(ledger.registry.address, d, 600_000) for d in (first_data, second_data)]
        rpc_call(dn.rpc_url, "evm_mine", [])
    finally:
        rpc_call(dn.rpc_url, "evm_setAutomine", [True])
    sender.wait(hashes[0], first)
    with pytest.raises(UnknownRevert, match="cannot know why: the node gives no revert reason"):
        sender.wait(hashes[1], second)


def test_after_a_receipt_the_next_estimate_waits_for_the_head_to_reach_its_block(dn):
    """geth answers a receipt a moment before its block is the head: "latest" is still the block before.
    The proxy plays that window after the registration's receipt (eth_blockNumber one block behind
    once, calls and estimates at "latest" run on that block until the head is seen); the attestation
    sent next must be estimated where the artifact exists, not fail with ArtifactNotFound."""
    window = {"armed": False, "before": None}

    def lag_head(method, params, result):
        if method == "eth_getTransactionReceipt" and result and window["armed"]:
            window.update(armed=False, before=int(result["blockNumber"], 16) - 1)
        elif method == "eth_blockNumber" and window["before"] is not None:
            result, window["before"] = hex(window["before"]), None  # the head moves on after this answer
        return result

    def at_the_block_before(call):
        if call["method"] in ("eth_call", "eth_estimateGas") and window["before"] is not None:
            call = {**call, "params": [call["params"][0], hex(window["before"])]}
        return call

    proxy = RpcProxy(dn.rpc_url, lag_head, before=at_the_block_before)
    try:
        through, service = Ledger.connect(proxy.url, dn.book, dn.key("registrar")), unique()
        digest = "sha256:" + uuid.uuid4().hex * 2
        window["armed"] = True
        through.register(ArtifactSpec(digest=digest, service=service, version="1"))
        through.attest(digest, service, "slsa", "sha256:" + uuid.uuid4().hex * 2)
        assert window == {"armed": False, "before": None}  # the window was played, and closed by a head poll
        assert through.attestation_of(digest, service, "slsa") is not None
    finally:
        proxy.stop()


# ---------------------------------------------------------------------- 5. several endpoints

@pytest.fixture
def lagging(dn):
    """A second node of the same chain that stopped 3 or more blocks ago: anvil forked from the devnet
    at its head now; the test then makes blocks on the devnet only."""
    head = int(rpc_call(dn.rpc_url, "eth_blockNumber", []), 16)
    node = Anvil.start(extra_args=("--fork-url", dn.rpc_url, "--fork-block-number", str(head)))
    yield node
    node.stop()


def test_reads_skip_a_dead_node_and_one_more_than_2_blocks_behind(dn, lagging, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    service = unique()
    digest = dn.release(service)  # registered after the fork: the lagging node does not know it
    gate = ["gate", "--digest", digest, "--service", service, "--env", ENV, "--json"]
    assert dn.run(*gate, "--rpc", lagging.url).json()["reason"] == "unknown_artifact"  # what a lagging read says
    assert ok(dn.run(*gate, "--rpc", f"{dead},{lagging.url},{dn.rpc_url}"))["allowed"] is True
    assert ok(dn.run(*gate, env={"SHIPLEDGER_RPC_URL": f"{lagging.url}, {dead}, {dn.rpc_url}"}))["allowed"] is True
    book = dn.book_variant(tmp_path, "nodes", lambda b: b.update(nodes=[
        {"org": "acme", "rpc_url": lagging.url, "validator": "0x" + "00" * 20},
        {"org": "globex", "rpc_url": dn.rpc_url, "validator": "0x" + "00" * 20}]))
    assert ok(dn.run("--deployment", book, *gate))["allowed"] is True  # the book's nodes, no --rpc
    reader = Ledger.connect([dead, lagging.url, dn.rpc_url], dn.book)
    assert reader.w3.provider.reads == [dn.rpc_url]
    assert reader.gate(digest, service, ENV).allowed
    fails(dn.run(*gate, "--rpc", f"{dead},http://127.0.0.1:{free_port()}"), 1, "cannot reach any JSON-RPC node")


def _nodes_book(dn, tmp_path, own: str, other: str, signer_org: str) -> Path:
    """A book whose nodes are `other` (an organisation that is not the signer's), then `own`."""
    return dn.book_variant(tmp_path, "orgs", lambda b: b.update(nodes=[
        {"org": "nobody-" + signer_org, "rpc_url": other, "validator": "0x" + "00" * 20},
        {"org": signer_org, "rpc_url": own, "validator": "0x" + "00" * 20}]))


def test_writes_go_to_the_signers_own_node_and_on_to_another_when_it_goes_away(dn, tmp_path):
    org = dn.account("approver", 1)["org"]
    own, other = RpcProxy(dn.rpc_url), RpcProxy(dn.rpc_url)
    try:
        book = _nodes_book(dn, tmp_path, own.url, other.url, org)
        service = unique()
        dn.set_policy(service)
        digests = [dn.register(service, f"1.{n}") for n in range(2)]
        approve = ["--deployment", book, "approve", "--service", service, "--env", ENV, "--json", "--digest"]
        ok(dn.as_("approver", *approve, digests[0], index=1))
        assert "eth_sendRawTransaction" in own.calls and "eth_sendRawTransaction" not in other.calls
        own.stop()  # the organisation's node goes away: the next command writes through another
        ok(dn.as_("approver", *approve, digests[1], index=1))
        assert "eth_sendRawTransaction" in other.calls
        approvals = dn.history(service, "approved")
        assert sorted(e.fields["digest"] for e in approvals) == sorted("0x" + d.removeprefix("sha256:") for d in digests)
    finally:
        own.stop()
        other.stop()


def test_a_transaction_lost_with_a_node_that_went_away_is_handed_to_another_and_recorded_once(dn, tmp_path):
    org = dn.account("approver", 0)["org"]
    own, other = RpcProxy(dn.rpc_url), RpcProxy(dn.rpc_url)
    try:
        book = _nodes_book(dn, tmp_path, own.url, other.url, org)
        service = unique()
        dn.set_policy(service)
        digest = dn.register(service)
        ledger = Ledger.connect([other.url, own.url], book, dn.key("approver", 0))
        assert ledger.w3.provider.writes == [own.url, other.url]
        own.lose_sends = own.go_away_after_send = True  # takes the vote, answers its hash, goes away before passing it on
        receipt = ledger.approve(digest, service, ENV)
        assert receipt.block_number > 0 and "eth_sendRawTransaction" in other.calls
        approvals = [e for e in dn.history(service, "approved") if e.fields["digest"] == "0x" + digest.removeprefix("sha256:")]
        assert len(approvals) == 1
    finally:
        own.stop()
        other.stop()


# ---------------------------------------------------------------------- 6. nonces

def test_a_send_whose_answer_was_lost_is_not_sent_again_with_a_fresh_nonce(dn):
    """The node took the vote and the answer never came: the send goes to the next node, which says the
    nonce is taken (anvil mined it at once). The hash is ours: it was sent, and it is recorded once."""
    first, second = RpcProxy(dn.rpc_url), RpcProxy(dn.rpc_url)
    try:
        service = unique()
        dn.set_policy(service)
        digest = dn.register(service)
        ledger = Ledger.connect([first.url, second.url], dn.book, dn.key("approver", 0))
        first.lose_answers = True
        ledger.approve(digest, service, ENV)
        assert "eth_sendRawTransaction" in second.calls
        approvals = [e for e in dn.history(service, "approved") if e.fields["digest"] == "0x" + digest.removeprefix("sha256:")]
        assert len(approvals) == 1
    finally:
        first.stop()
        second.stop()


def _nonce_of(raw: str) -> int:
    return TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["nonce"]


def test_a_nonce_too_distant_re_syncs_with_the_node(dn):
    """Besu refuses a nonce beyond the next one ("Nonce too distant"; geth "nonce too high") where anvil
    queues it: a relay refuses as Besu does. A counter run ahead (transactions it counted were lost)
    re-syncs with the node's count and the transaction goes through."""
    account = dn.account("outsider")["address"]

    def as_besu(method, params):
        if method == "eth_sendRawTransaction":
            pending = int(rpc_call(dn.rpc_url, "eth_getTransactionCount", [account, "pending"]), 16)
            if _nonce_of(params[0]) > pending:
                return "Nonce too distant"
        return None

    proxy = RpcProxy(dn.rpc_url, refuse=as_besu)
    try:
        w3 = connect(proxy.url)
        sender = TxSender(w3, Account.from_key(dn.key("outsider")), 31337)
        sender._next_nonce = w3.eth.get_transaction_count(account, "pending") + 3  # three sends it counted were lost
        mined = _transfer(sender, w3)
        assert mined["nonce"] == w3.eth.get_transaction_count(account) - 1
    finally:
        proxy.stop()


def test_after_a_receipt_timeout_the_next_send_takes_the_nodes_count(dn):
    proxy = RpcProxy(dn.rpc_url)
    try:
        w3 = connect(proxy.url)
        sender = TxSender(w3, Account.from_key(dn.key("outsider")), 31337, receipt_timeout=1.5)
        proxy.lose_sends = True  # the pool loses it, and again when it is handed over again
        with pytest.raises(TransactionTimeout):
            sender.wait(sender.send_data("0x" + "11" * 20, b"", 21000))
        proxy.lose_sends = False
        before = w3.eth.get_transaction_count(sender.address)
        mined = _transfer(sender, w3)  # our counter says before + 1, which would wait forever behind the gap
        assert mined["nonce"] == before
    finally:
        proxy.stop()


# ---------------------------------------------------------------------- 7. the journal of sent transactions

def test_a_retry_where_pending_means_latest_sends_the_journalled_transaction_again(dn, monkeypatch, tmp_path):
    """Besu answers "pending" reads from the latest block: a retried register does not see the first
    attempt still in the pool. The journal does: the retry waits for that same transaction, and the
    artifact is registered once, by one transaction."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def pending_is_latest(call):
        params = call.get("params", [])
        if call["method"] in ("eth_call", "eth_getTransactionCount") and params and params[-1] == "pending":
            call = {**call, "params": [*params[:-1], "latest"]}
        return call

    proxy = RpcProxy(dn.rpc_url, before=pending_is_latest)
    spec = ArtifactSpec(digest="sha256:" + uuid.uuid4().hex * 2, service=unique(), version="1")
    nonce_before = dn.nonce("registrar")
    try:
        rpc_call(dn.rpc_url, "evm_setAutomine", [False])
        try:
            crashed = Ledger.connect(proxy.url, dn.book, dn.key("registrar"))
            # then the process dies; its own gas: a retry signing anew would not sign the very same transaction
            crashed._sender.send(crashed.registry.functions.register(crashed.validate_spec(spec)), gas=600_000)
            retry = Ledger.connect(proxy.url, dn.book, dn.key("registrar"))
            threading.Timer(1.0, rpc_call, (dn.rpc_url, "evm_mine", [])).start()
            receipt = retry.register(spec)
        finally:
            rpc_call(dn.rpc_url, "evm_setAutomine", [True])
        assert receipt is not None and receipt.block_number > 0
        assert dn.nonce("registrar") - nonce_before == 1  # one transaction, the first attempt's
        assert [e.kind for e in dn.history(spec.service)].count("registered") == 1
        assert not (tmp_path / "state" / "shipledger" / "journal").glob("*.jsonl").__next__().read_text()  # mined: forgotten
    finally:
        proxy.stop()

"""Several pipelines sending with one key at once: every `shipledger register` succeeds and records
its artifact exactly once. Before the per-key nonce lock, 2 to 5 of 8 parallel runs failed with
"nonce too low" or "replacement transaction underpriced".
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from eth_account import Account

from shipledger import ArtifactSpec
from shipledger.network.devnet import rpc_call
from support import digest_for, ok, unique

PARALLEL = 8


def _register_in_parallel(dn, service: str, state_dirs: list) -> list:
    """PARALLEL `register` processes with the registrar's key, artifact i in $XDG_STATE_HOME state_dirs[i]."""
    def one(i: int):
        return dn.as_("registrar", "register", "--digest", digest_for(f"{service}@{i}"), "--service", service,
                      "--version", f"1.0.{i}", "--json", env={"XDG_STATE_HOME": str(state_dirs[i])})

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, range(PARALLEL)))


def _check_recorded_once(dn, service: str, results: list, nonce_before: int) -> None:
    for result in results:
        ok(result)
    versions = Counter(e.fields["version"] for e in dn.history(service, kind="registered"))
    assert versions == Counter(f"1.0.{i}" for i in range(PARALLEL))
    for i in range(PARALLEL):
        assert dn.ledger().artifact(digest_for(f"{service}@{i}"), service) is not None
        assert dn.ledger().record_of(service, f"1.0.{i}") is not None
    assert dn.nonce("registrar") == nonce_before + PARALLEL  # one transaction each, no stray retry


def test_one_key_in_parallel_on_one_machine(dn, tmp_path):
    """The processes share a state directory, so they take turns on the key's lock file."""
    state = tmp_path / "state"
    for _ in range(2):
        service, nonce_before = unique(), dn.nonce("registrar")
        results = _register_in_parallel(dn, service, [state] * PARALLEL)
        _check_recorded_once(dn, service, results, nonce_before)
    [lock] = (state / "shipledger" / "nonces").iterdir()
    assert lock.name == f"{dn.info['chain_id']}-{dn.address('registrar').lower()}.lock"


def test_one_key_in_parallel_without_a_shared_lock(dn, tmp_path):
    """One state directory each, as if on eight machines: only the retry with a fresh nonce is left."""
    for round_ in range(2):
        service, nonce_before = unique(), dn.nonce("registrar")
        results = _register_in_parallel(dn, service, [tmp_path / f"r{round_}-{i}" for i in range(PARALLEL)])
        _check_recorded_once(dn, service, results, nonce_before)


def test_a_transaction_another_took_the_nonce_of_is_sent_again(dn):
    """Ours and another sender's reached the pool before either was mined, and the other one was: ours
    can never be. wait() used to sit out its 120 s receipt timeout (CI saw one of the eight parallel
    runs above do so); it now sends ours again with a fresh nonce and returns that receipt."""
    service, digest = unique(), digest_for(unique())
    ledger = dn.ledger("registrar")
    fn = ledger.registry.functions.register(ledger.validate_spec(
        ArtifactSpec(digest=digest, service=service, version="1.0.0")))
    nonce_before = dn.nonce("registrar")
    rpc_call(dn.rpc_url, "evm_setAutomine", [False])
    try:
        ours = ledger._sender.send(fn)
        # The other machine pays more for the same nonce, so the pool keeps its transaction, not ours.
        other = Account.sign_transaction({
            "to": dn.address("registrar"), "value": 0, "gas": 21_000, "nonce": nonce_before,
            "maxFeePerGas": 10**12, "maxPriorityFeePerGas": 10**11, "chainId": dn.info["chain_id"],
        }, dn.key("registrar"))
        rpc_call(dn.rpc_url, "eth_sendRawTransaction", ["0x" + other.raw_transaction.hex().removeprefix("0x")])
        rpc_call(dn.rpc_url, "evm_mine")
    finally:
        rpc_call(dn.rpc_url, "evm_setAutomine", [True])
    receipt = ledger._sender.wait(ours, fn)
    assert receipt.tx_hash != ours
    assert ledger.artifact(digest, service) is not None
    assert dn.nonce("registrar") == nonce_before + 2  # the other sender's, then ours once

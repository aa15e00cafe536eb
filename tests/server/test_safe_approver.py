"""A Safe (ERC-1271) approver through the relay: Safe 1.4.1's own contracts (the bytecode npm
`@safe-global/safe-contracts` ships) deployed on the devnet, a 1-of-1 Safe made an approver, and a
vote whose signature is the Safe owner's signature over the Safe message hash of the vote's EIP-712
hash. The registry's voteBySig checks it with OpenZeppelin's SignatureChecker (ERC-1271 for a
contract signer); the relay passes it on unchanged. The web app does not yet build Safe signatures
(README says so): this checks the path it would use."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

from shipledger.client import sign_approval
from support import ENV, unique

SAFE = Path(__file__).resolve().parents[2] / "node_modules" / "@safe-global" / "safe-contracts" / "build" / "artifacts" / "contracts"
ZERO = "0x" + "00" * 20


def artifact(path: str) -> dict:
    return json.loads((SAFE / path).read_text())


class Sender:
    """Transactions from one devnet key, signed here."""

    def __init__(self, w3: Web3, key: str):
        self.w3, self.account = w3, Account.from_key(key)

    def send(self, tx: dict) -> dict:
        tx = {**tx, "from": self.account.address, "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
              "chainId": self.w3.eth.chain_id}
        tx.setdefault("gas", int(self.w3.eth.estimate_gas(tx) * 1.2))
        if "maxFeePerGas" not in tx:
            tx["gasPrice"] = self.w3.eth.gas_price
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction), timeout=60)
        assert receipt.status == 1, receipt
        return receipt

    def deploy(self, path: str):
        data = artifact(path)
        receipt = self.send({"data": data["bytecode"]})
        return self.w3.eth.contract(address=receipt.contractAddress, abi=data["abi"])


@pytest.fixture(scope="module")
def safe_of(dn):
    """safe_of(owner_key) -> a new 1-of-1 Safe 1.4.1 of that owner, with Safe's fallback handler."""
    if not SAFE.is_dir():
        pytest.skip("node_modules has no @safe-global/safe-contracts (npm ci installs it)")
    w3 = dn.ledger().w3
    deployer = Sender(w3, dn.key("steward", 2))
    singleton = deployer.deploy("Safe.sol/Safe.json")
    factory = deployer.deploy("proxies/SafeProxyFactory.sol/SafeProxyFactory.json")
    handler = deployer.deploy("handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json")

    def make(owner_key: str):
        owner = Account.from_key(owner_key).address
        setup = singleton.encode_abi("setup", [[owner], 1, ZERO, b"", handler.address, ZERO, 0, ZERO])
        receipt = deployer.send(factory.functions.createProxyWithNonce(singleton.address, setup, secrets.randbits(64))
                                .build_transaction({"from": deployer.account.address, "gas": 600_000}))
        [created] = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)  # the Safe's own logs too
        safe = w3.eth.contract(address=created["args"]["proxy"], abi=singleton.abi)
        assert safe.functions.getOwners().call() == [owner]
        return safe, w3.eth.contract(address=safe.address, abi=handler.abi)

    return make


def safe_vote(dn, safe, as_handler, owner_key: str, digest: str, service: str, registry) -> dict:
    """The vote for `safe` as the relay takes it: the fields of `approve --sign-only`, and as signature
    the owner's ECDSA signature over the Safe message hash of the vote's EIP-712 hash."""
    # the EIP-712 fields a vote commits to, with a throwaway key: only the signer, nonce and times are reused
    # signed at the chain's time: other tests of the module moved the devnet's clock past the wall clock,
    # and a vote signed before the Safe's admission is stale
    draft = sign_approval(Account.create(), chain_id=int(dn.info["chain_id"]), registry=registry.address, digest=digest,
                          service=service, environment=ENV, signed_at=dn.block_time())
    vote_hash = registry.functions.voteHash(safe.address, bytes.fromhex(digest.removeprefix("sha256:")), service, ENV, 1,
                                            draft.nonce, draft.signed_at, draft.deadline).call()
    safe_hash = as_handler.functions.getMessageHashForSafe(safe.address, vote_hash).call()
    signature = Account.from_key(owner_key).unsafe_sign_hash(safe_hash).signature
    return {"signer": safe.address, "digest": digest, "service": service, "environment": ENV, "decision": 1, "nonce": draft.nonce,
            "signed_at": draft.signed_at, "deadline": draft.deadline, "chain_id": draft.chain_id, "registry": draft.registry,
            "signature": "0x" + bytes(signature).hex()}


def test_a_safe_approver_votes_through_the_relay(dn, server, safe_of):
    owner_key = Account.create().key.hex()
    safe, as_handler = safe_of(owner_key)
    dn.ledger("steward", 2).add_member(safe.address, approver=True)  # initech's Safe
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=1, min_organisations=1)
    registry = dn.ledger().registry
    forged = safe_vote(dn, safe, as_handler, Account.create().key.hex(), digest, service, registry)  # not an owner
    honest = safe_vote(dn, safe, as_handler, owner_key, digest, service, registry)
    answer = server.post("/v1/relay", [forged, honest])
    assert answer.status == 200, answer.body
    body = answer.json()
    assert [(s["signer"], s["reason"]) for s in body["skipped"]] == [(safe.address, "bad_signature")]
    assert [s["signer"] for s in body["submitted"]] == [safe.address]
    assert dn.ledger().vote_of(digest, service, ENV, safe.address).decision == "approve"
    server.until("/v1/gate?" + "&".join(f"{k}={v}" for k, v in (("digest", digest), ("service", service), ("environment", ENV))),
                 lambda a: a.json()["allowed"])

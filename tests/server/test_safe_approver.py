"""A Safe (ERC-1271) approver through the relay: Safe 1.4.1's own contracts (tests/server/safes.py)
deployed on the devnet, a 1-of-1 Safe made an approver, and a vote whose signature is the Safe owner's
signature over the Safe message hash of the vote's EIP-712 hash. The registry's voteBySig checks it
with OpenZeppelin's SignatureChecker (ERC-1271 for a contract signer); the relay passes it on
unchanged. The web app's part (the Inbox's "as a Safe" path: it shows the Safe message hash and takes
the owners' combined signature) is tested in tests/server/test_safe_page.py."""

from __future__ import annotations

from eth_account import Account

from safes import combined_signature
from shipledger.client import sign_approval
from support import ENV, unique


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
    return {"signer": safe.address, "digest": digest, "service": service, "environment": ENV, "decision": 1, "nonce": draft.nonce,
            "signed_at": draft.signed_at, "deadline": draft.deadline, "chain_id": draft.chain_id, "registry": draft.registry,
            "signature": combined_signature(safe_hash, [owner_key])}


def test_a_safe_approver_votes_through_the_relay(dn, server, safe_of):
    owner_key = Account.create().key.hex()
    safe, as_handler = safe_of([owner_key], 1)
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

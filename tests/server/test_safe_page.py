"""The Inbox's Safe (ERC-1271) path in Debian's headless chromium, in a browser with no wallet, against a
real `shipledger serve` with the relay on: a 2-of-2 Safe 1.4.1 (Safe's own contracts,
tests/server/safes.py) is an approver; the page drafts its vote and shows the Safe message hash, which
must be the hash the Safe itself computes for the registry's EIP-712 hash of the fields shown; both
owners sign it here (eth_account), and the combined signature pasted into the page is relayed and
flips the gate. A combined signature that lacks an owner is refused with the registry's reason and
records nothing; the page itself refuses a pasted value of the wrong shape. Any console error (a CSP
violation is one) fails the test; a screenshot of every step is saved in the test's tmp directory."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from eth_account import Account
from web3.exceptions import ContractLogicError

from conftest import message, open_inbox, waiting_release
from safes import combined_signature
from support import ENV


def test_a_two_owner_safe_approves_from_the_inbox(dn, server, wallet, safe_of):
    owners = [Account.create().key.hex() for _ in range(2)]
    safe, as_handler = safe_of(owners, 2)
    dn.ledger("steward", 2).add_member(safe.address, approver=True)  # initech's Safe
    service, digest = waiting_release(dn, server, safe.address)
    gate = "/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": ENV})
    assert server.get(gate).json()["reason"] == "not_enough_approvals"

    w = wallet(None)  # the owners sign elsewhere: the page needs no browser wallet
    row = open_inbox(w, server, safe.address, digest)  # ?approver= the Safe fills the Safe's address
    assert w.page.locator("[data-safe-address]").input_value() == safe.address
    row.locator('button[data-action="safe-approve"]').click()
    box = w.page.locator("[data-safe-vote]")
    box.wait_for(state="visible")
    w.shot("safe-drafted")
    shown = box.inner_text()
    for needle in ("APPROVE this release", f"{service} 1.0.0, {digest}", f"Environment: {ENV}", "Valid: from ",
                   f"the Safe {safe.address}", f"chain {dn.info['chain_id']}", "ascending order of owner address"):
        assert needle in shown, (needle, shown)
    drafted = {k: box.get_attribute(f"data-{k}") for k in ("signer", "nonce", "signed-at", "deadline", "decision")}
    nonce, signed_at, deadline = int(drafted["nonce"]), int(drafted["signed-at"]), int(drafted["deadline"])
    assert drafted["signer"] == safe.address and drafted["decision"] == "1" and f"Nonce: {nonce}" in shown
    assert signed_at <= dn.block_time() and deadline == signed_at + 7 * 24 * 3600

    # the hashes the page shows are the contracts' own: the registry's vote hash, the Safe's message hash
    registry = dn.ledger().registry
    vote_hash = registry.functions.voteHash(safe.address, bytes.fromhex(digest.removeprefix("sha256:")), service, ENV, 1, nonce,
                                            signed_at, deadline).call()
    safe_hash = as_handler.functions.getMessageHashForSafe(safe.address, vote_hash).call()
    assert box.locator("[data-vote-hash]").inner_text() == "0x" + vote_hash.hex()
    assert box.locator("[data-safe-hash]").inner_text() == "0x" + safe_hash.hex()

    # a pasted value of the wrong shape is refused on the page: nothing is sent
    pasted, relay_button = box.locator("[data-safe-signature]"), box.locator("[data-safe-relay]")
    one_owner = combined_signature(safe_hash, owners[:1])
    for bad, says in (("", "Paste the owners' combined signature first: nothing was sent."),
                      ("0x" + "zz" * 65, "The combined signature is not hex"),
                      (one_owner[:-2], "The combined signature is 64 bytes: it must be 65 bytes per owner"),
                      (one_owner + "a", "The combined signature is an odd number of hex digits")):
        pasted.fill(bad)
        relay_button.click()
        w.page.locator(".wallet-message.error").filter(has_text=says).wait_for()
    w.shot("safe-bad-shape")
    assert w.relayed == []

    # one owner of two: the Safe refuses (GS020, too few signatures), so the registry skips the vote
    is_valid = as_handler.get_function_by_signature("isValidSignature(bytes32,bytes)")
    with pytest.raises(ContractLogicError, match="GS020"):
        is_valid(vote_hash, bytes.fromhex(one_owner[2:])).call()
    pasted.fill(one_owner)
    relay_button.click()
    refused = w.page.locator(".wallet-message.error").filter(has_text="The ledger did not record the vote")
    refused.wait_for(timeout=30_000)
    w.shot("safe-one-owner")
    assert refused.inner_text().startswith("The ledger did not record the vote: bad_signature: the Safe did not accept"), \
        refused.inner_text()
    assert len(w.relayed) == 1
    assert dn.ledger().vote_of(digest, service, ENV, safe.address).decision == "none"
    assert dn.history(service, "approved") == []
    assert server.get(gate).json()["reason"] == "not_enough_approvals"

    # both owners, in ascending order of owner address: the same drafted vote is recorded
    both = combined_signature(safe_hash, owners)
    assert is_valid(vote_hash, bytes.fromhex(both[2:])).call() == bytes.fromhex("1626ba7e")  # ERC-1271's magic value
    pasted.fill(both)
    relay_button.click()
    w.page.locator(".wallet-message.done").wait_for(timeout=30_000)
    done = message(w, "done")
    assert done.startswith("The Safe's approval is recorded in transaction 0x"), done
    relayed = json.loads(w.relayed[-1])
    assert len(w.relayed) == 2
    assert relayed == {"signer": safe.address, "digest": digest, "service": service, "environment": ENV, "decision": 1, "nonce": nonce,
                       "signed_at": signed_at, "deadline": deadline, "chain_id": int(dn.info["chain_id"]),
                       "registry": registry.address, "signature": both}
    assert dn.ledger().vote_of(digest, service, ENV, safe.address).decision == "approve"
    [approved] = dn.history(service, "approved")
    assert approved.fields["approver"] == safe.address and approved.fields["bySignature"]
    assert server.get(gate).json()["allowed"] is True
    row.locator(".gate").filter(has_text="allowed").wait_for()  # the page shows the new gate answer
    w.shot("safe-allowed")

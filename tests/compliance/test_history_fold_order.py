"""The registry's history head must fold records in log order (contracts/libraries/History.sol).

Removing an approver is the case that once broke it: OpenZeppelin emits RoleRevoked, then _freeSlot
emits ApproverSlotFreed; the registry folded them the other way round, so nobody recomputing the head
from the logs (index, export, verify-export, audit) could match it. _revokeRole now folds RoleRevoked
first."""

from __future__ import annotations

from shipledger.compliance.index import Index


def test_the_head_after_an_approver_is_removed_follows_the_logs(dn, tmp_path):
    approver = dn.address("approver", 2)
    steward = dn.ledger("steward", 2)  # initech's, the approver's organisation
    index = Index.open(tmp_path / "before.sqlite")
    ledger = dn.ledger()
    index.sync(ledger)
    assert index.history_heads()["ReleaseRegistry"] == _chain_head(ledger)  # in step before
    steward.set_approver(approver, False)
    index.sync(ledger)
    assert index.history_heads()["ReleaseRegistry"] == _chain_head(ledger)


def _chain_head(ledger) -> tuple[str, int]:
    head, count = ledger.registry.functions.historyHead().call()
    return "0x" + head[:24].hex(), count

"""Governance: K-of-N organisations, the delay of a weakening change, the field-by-field decision of
what weakens, cancellation by any organisation, stewards' reach, the bootstrap leaving the deploying
key with nothing, and historyHead recomputed from the logs for all three contracts."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from kit import (
    DEFAULT_ADMIN, GOVERNANCE_DELAY, calldata, GOVERNANCE_RECORDS, ROLES, ZERO32, Decision, Proposal, Verdict, advance,
    approve, artifact, block_ts, events, governed, grant, history_from_logs, mine_at, open_incident, policy,
    propose, record_topics, register, reject, set_policy, sha256, signed_vote, start, stored_policy,
)

pytestmark = pytest.mark.filterwarnings("ignore:The log with transaction hash:UserWarning")

TIMELOCK_ROLES = {name: Web3.keccak(text=f"{name}_ROLE") for name in ("PROPOSER", "EXECUTOR", "CANCELLER")}

# The prod policy every weakening case starts from (unless the case names its own base).
BASE = {"threshold": 3, "min_organisations": 2, "ttl": 1_000, "min_wait": 100, "freeze_severity": 2,
        "resolve_quorum": 2, "prior": "staging", "attestations": ("sbom", "provenance")}

# (case id, changes to BASE for the starting policy, changes for the proposed one, weakening?)
FIELD_CASES = [
    ("same", {}, {}, False),
    ("threshold-up", {}, {"threshold": 4}, False),
    ("threshold-down", {}, {"threshold": 2}, True),
    ("min-orgs-up", {}, {"min_organisations": 3}, False),
    ("min-orgs-down", {}, {"min_organisations": 1}, True),
    ("ttl-shorter", {}, {"ttl": 500}, False),
    ("ttl-longer", {}, {"ttl": 2_000}, True),
    ("ttl-to-0-never-expires", {}, {"ttl": 0}, True),
    ("ttl-from-0", {"ttl": 0}, {"ttl": 1_000}, False),
    ("ttl-0-stays-0", {"ttl": 0}, {"ttl": 0}, False),
    ("wait-longer", {}, {"min_wait": 200}, False),
    ("wait-shorter", {}, {"min_wait": 50}, True),
    ("freeze-more-severities", {}, {"freeze_severity": 3}, False),
    ("freeze-fewer-severities", {}, {"freeze_severity": 1}, True),
    ("freeze-off", {}, {"freeze_severity": 0}, True),
    ("freeze-from-off", {"freeze_severity": 0}, {"freeze_severity": 4}, False),
    ("resolve-quorum-up", {}, {"resolve_quorum": 3}, False),
    ("resolve-quorum-down", {}, {"resolve_quorum": 1}, True),
    ("prior-removed", {}, {"prior": ""}, True),
    ("prior-changed", {}, {"prior": "qa"}, True),
    ("prior-added", {"prior": ""}, {"prior": "staging"}, False),
    ("attestation-removed", {}, {"attestations": ("sbom",)}, True),
    ("attestation-added", {}, {"attestations": ("sbom", "provenance", "vuln-scan")}, False),
    ("attestations-reordered", {}, {"attestations": ("provenance", "sbom")}, False),
    ("tighter-here-weaker-there", {}, {"threshold": 4, "min_wait": 0}, True),
]


@pytest.mark.parametrize("base, change, weakening", [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_policy_change_is_judged_field_by_field(suite, base, change, weakening):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    start_policy = {**BASE, **base}
    set_policy(suite, "api", "prod", **start_policy)
    proposed = {**start_policy, **change}
    fn = reg.setPolicy("api", "prod", policy(**proposed))
    assert gov.isWeakening(suite.registry.address, fn._encode_transaction_data()).call() is weakening
    proposal_id, _ = propose(suite, fn)
    receipt = suite.transact(gov.approveProposal(proposal_id), a.steward2)
    now = block_ts(suite.w3, receipt)
    assert events(receipt, suite.governance, "ProposalScheduled") == [
        {"id": proposal_id, "weakening": weakening, "executableAt": now + (GOVERNANCE_DELAY if weakening else 0)}]
    proposal = gov.getProposal(proposal_id).call()
    assert (proposal[1], proposal[2]) == ((Proposal.SCHEDULED, True) if weakening else (Proposal.EXECUTED, False))
    version = 1 if weakening else 2  # a tightening change ran in the approving transaction
    assert tuple(reg.getPolicy("api", "prod").call()) == stored_policy(
        **(start_policy if weakening else proposed), version=version)
    if weakening:
        advance(suite.w3, GOVERNANCE_DELAY)
        receipt = suite.transact(gov.executeProposal(proposal_id), a.outsider)
        assert events(receipt, suite.governance, "ProposalExecuted") == [{"id": proposal_id, "executor": a.outsider}]
        assert tuple(reg.getPolicy("api", "prod").call()) == stored_policy(**proposed, version=2)


def test_new_policy_is_weakening(suite):
    fn = suite.registry.functions.setPolicy("api", "prod", policy(threshold=3, min_organisations=3))
    assert suite.governance.functions.isWeakening(suite.registry.address, fn._encode_transaction_data()).call() is True
    set_policy(suite, "api", "staging", threshold=3)  # another target's policy does not count
    assert suite.governance.functions.isWeakening(suite.registry.address, fn._encode_transaction_data()).call() is True


def test_consortium_changes_that_widen_wait_and_those_that_narrow_run_at_once(suite):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    newcomer = Account.create().address
    cases = [
        (reg.addOrganisation("hooli", newcomer), True),
        (reg.setSteward(3, newcomer), True),
        (reg.grantScopedRole(ROLES["RESPONDER"], "", a.approver1), True),
        (reg.grantScopedRole(ROLES["REGISTRAR"], "worker", a.approver4), True),
        (reg.revokeScopedRole(ROLES["DEPLOYER"], "", a.deployer), False),
        (reg.removeMember(a.approver3), False),
    ]
    for fn, weakening in cases:
        assert gov.isWeakening(suite.registry.address, fn._encode_transaction_data()).call() is weakening, fn.fn_name

    receipt = governed(suite, reg.addOrganisation("hooli", newcomer))
    assert events(receipt, suite.registry, "OrganisationAdded") == [{"org": 4, "name": "hooli", "steward": newcomer}]
    assert (reg.organisationCount().call(), reg.stewardOf(4).call(), reg.stewardOrganisation(newcomer).call()) == (
        4, newcomer, 4)
    other = Account.create().address
    receipt = governed(suite, reg.setSteward(3, other))
    assert events(receipt, suite.registry, "StewardSet") == [{"org": 3, "oldSteward": a.steward3, "newSteward": other}]
    assert (reg.stewardOf(3).call(), reg.stewardOrganisation(a.steward3).call(), reg.stewardOrganisation(other).call()) == (
        other, 0, 3)
    receipt = grant(suite, "REGISTRAR", a.approver4, scope="worker")
    assert events(receipt, suite.registry, "ScopedRoleGranted") == [{
        "role": ROLES["REGISTRAR"], "scopeKey": Web3.keccak(text="worker"), "account": a.approver4, "scope": "worker",
        "by": suite.governance.address}]
    assert reg.hasScopedRole(ROLES["REGISTRAR"], Web3.keccak(text="worker"), a.approver4).call() is True
    assert reg.hasScopedRole(ROLES["REGISTRAR"], Web3.keccak(text="api"), a.approver4).call() is False

    # Narrowing changes execute in the K-th approval's transaction.
    proposal_id, _ = propose(suite, reg.revokeScopedRole(ROLES["DEPLOYER"], "", a.deployer))
    receipt = suite.transact(gov.approveProposal(proposal_id), a.steward2)
    assert events(receipt, suite.registry, "ScopedRoleRevoked") == [{
        "role": ROLES["DEPLOYER"], "scopeKey": ZERO32, "account": a.deployer, "scope": "", "by": suite.governance.address}]
    assert reg.hasRole(ROLES["DEPLOYER"], a.deployer).call() is False
    proposal_id, _ = propose(suite, reg.removeMember(a.approver3))
    receipt = suite.transact(gov.approveProposal(proposal_id), a.steward2)
    assert events(receipt, suite.registry, "MemberRemoved") == [
        {"account": a.approver3, "org": 3, "by": suite.governance.address}]
    assert gov.getProposal(proposal_id).call()[1] == Proposal.EXECUTED


@pytest.mark.parametrize("needed, delay, weakening", [(3, 60, False), (2, 120, False), (1, 60, True), (2, 30, True),
                                                      (3, 30, True), (2, 60, False)],
                         ids=["K-up", "delay-up", "K-down", "delay-down", "K-up-delay-down", "same"])
def test_settings_change(suite, needed, delay, weakening):
    a, gov = suite.actors, suite.governance.functions
    fn = gov.setSettings(needed, delay)
    assert gov.isWeakening(suite.governance.address, fn._encode_transaction_data()).call() is weakening
    receipt = governed(suite, fn)
    assert events(receipt, suite.governance, "SettingsChanged") == [{
        "oldOrganisationsNeeded": 2, "newOrganisationsNeeded": needed, "oldDelay": 60, "newDelay": delay}]
    assert (gov.organisationsNeeded().call(), gov.delay().call()) == (needed, delay)
    # the new K applies to the next proposal: one organisation short of it, it cannot execute
    proposal_id, _ = propose(suite, suite.registry.functions.setPolicy("api", "prod", policy()))
    if needed == 1:
        assert gov.getProposal(proposal_id).call()[1] == Proposal.SCHEDULED  # the proposer alone is K
        return
    if needed == 3:
        suite.transact(gov.approveProposal(proposal_id), a.steward2)
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "NotEnoughOrganisations", {"id": proposal_id, "approvals": needed - 1, "needed": needed})


def test_settings_invalid_and_only_through_a_proposal(suite):
    a, gov = suite.actors, suite.governance.functions
    assert suite.revert_of(gov.setSettings(3, 60), a.steward1) == ("OnlySelf", {"caller": a.steward1})
    for needed in (0, 4):
        proposal_id, _ = propose(suite, gov.setSettings(needed, 60))
        why = "organisationsNeeded must be 1..the number of organisations"
        approval = gov.approveProposal(proposal_id)
        if needed == 4:  # K up is tightening: it runs, and fails, in the approving transaction
            assert suite.revert_of(approval, a.steward2) == ("InvalidSettings", {"why": why})
        else:
            suite.transact(approval, a.steward2)
            advance(suite.w3, GOVERNANCE_DELAY)
            assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == ("InvalidSettings", {"why": why})


def test_execute_before_the_delay_without_k_twice_and_unknown(suite):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    proposal_id, receipt = propose(suite, reg.setPolicy("api", "prod", policy()))
    created_at = block_ts(suite.w3, receipt)
    assert events(receipt, suite.governance, "ProposalCreated") == [{
        "id": proposal_id, "proposer": a.steward1, "org": 1, "target": suite.registry.address,
        "data": calldata(reg.setPolicy("api", "prod", policy()))}]
    assert events(receipt, suite.governance, "ProposalApproved") == [
        {"id": proposal_id, "steward": a.steward1, "org": 1, "approvals": 1, "needed": 2}]
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "NotEnoughOrganisations", {"id": proposal_id, "approvals": 1, "needed": 2})
    receipt = suite.transact(gov.approveProposal(proposal_id), a.steward2)
    executable_at = block_ts(suite.w3, receipt) + GOVERNANCE_DELAY
    assert events(receipt, suite.governance, "ProposalApproved") == [
        {"id": proposal_id, "steward": a.steward2, "org": 2, "approvals": 2, "needed": 2}]
    assert tuple(gov.getProposal(proposal_id).call()) == (
        suite.registry.address, Proposal.SCHEDULED, True, 1, created_at, executable_at, (1 << 1) | (1 << 2),
        calldata(reg.setPolicy("api", "prod", policy())))
    assert suite.revert_of(gov.approveProposal(proposal_id), a.steward3) == (
        "ProposalStateInvalid", {"id": proposal_id, "state": Proposal.SCHEDULED})
    mine_at(suite.w3, executable_at - 1)
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "DelayNotPassed", {"id": proposal_id, "executableAt": executable_at, "timestamp": executable_at - 1})
    mine_at(suite.w3, executable_at)
    suite.transact(gov.executeProposal(proposal_id), a.outsider)
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "ProposalStateInvalid", {"id": proposal_id, "state": Proposal.EXECUTED})
    assert suite.revert_of(gov.cancelProposal(proposal_id), a.steward3) == (
        "ProposalStateInvalid", {"id": proposal_id, "state": Proposal.EXECUTED})
    for fn in (gov.executeProposal(99), gov.approveProposal(99), gov.getProposal(99)):
        assert suite.revert_of(fn, a.steward3) == ("UnknownProposal", {"id": 99})
    assert gov.proposalCount().call() == proposal_id == 1


def test_unsupported_changes_are_refused_at_propose(suite):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    register_call = reg.register(artifact())._encode_transaction_data()
    assert suite.revert_of(gov.propose(suite.registry.address, register_call), a.steward1) == (
        "UnsupportedChange", {"target": suite.registry.address, "selector": bytes.fromhex(register_call[2:10])})
    grant_call = reg.grantScopedRole(ROLES["DEPLOYER"], "", a.approver1)._encode_transaction_data()
    assert suite.revert_of(gov.propose(suite.ledger.address, grant_call), a.steward1) == (
        "UnsupportedChange", {"target": suite.ledger.address, "selector": bytes.fromhex(grant_call[2:10])})
    assert suite.revert_of(gov.propose(suite.registry.address, b"\x01\x02"), a.steward1) == (
        "UnsupportedChange", {"target": suite.registry.address, "selector": b"\x00" * 4})
    update_delay = gov.updateDelay(0)._encode_transaction_data()
    assert suite.revert_of(gov.propose(suite.governance.address, update_delay), a.steward1) == (
        "UnsupportedChange", {"target": suite.governance.address, "selector": bytes.fromhex(update_delay[2:10])})


@pytest.mark.parametrize("when", ["pending", "scheduled"])
def test_any_steward_cancels(suite, when):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    proposal_id, _ = propose(suite, reg.setPolicy("api", "prod", policy()))
    if when == "scheduled":
        suite.transact(gov.approveProposal(proposal_id), a.steward2)
    assert suite.revert_of(gov.cancelProposal(proposal_id), a.outsider) == ("NotSteward", {"account": a.outsider})
    receipt = suite.transact(gov.cancelProposal(proposal_id), a.steward3)  # an organisation that never approved
    assert events(receipt, suite.governance, "ProposalCancelled") == [{"id": proposal_id, "steward": a.steward3, "org": 3}]
    assert gov.getProposal(proposal_id).call()[1] == Proposal.CANCELLED
    advance(suite.w3, GOVERNANCE_DELAY)
    for fn, sender in ((gov.executeProposal(proposal_id), a.outsider), (gov.approveProposal(proposal_id), a.steward2),
                       (gov.cancelProposal(proposal_id), a.steward1)):
        assert suite.revert_of(fn, sender) == ("ProposalStateInvalid", {"id": proposal_id, "state": Proposal.CANCELLED})
    assert suite.revert_of(reg.getPolicy("api", "prod"), a.outsider) == (
        "PolicyNotFound", {"service": "api", "environment": "prod"})


def test_propose_and_approve_only_by_stewards_once_per_organisation(suite):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    data = reg.setPolicy("api", "prod", policy())._encode_transaction_data()
    for account in (a.admin, a.approver1, a.registrar, a.outsider):
        assert suite.revert_of(gov.propose(suite.registry.address, data), account) == ("NotSteward", {"account": account})
    proposal_id, _ = propose(suite, reg.setPolicy("api", "prod", policy()))
    assert suite.revert_of(gov.approveProposal(proposal_id), a.approver2) == ("NotSteward", {"account": a.approver2})
    assert suite.revert_of(gov.approveProposal(proposal_id), a.steward1) == (
        "AlreadyApproved", {"id": proposal_id, "org": 1})


# ============================================================ stewards


def test_steward_manages_only_its_own_organisation(suite):
    a, reg = suite.actors, suite.registry.functions
    newcomer = Account.create().address
    receipt = suite.transact(reg.addMember(newcomer, False), a.steward2)  # joins globex, the steward's own
    assert events(receipt, suite.registry, "MemberAdded") == [{"account": newcomer, "org": 2, "by": a.steward2}]
    assert reg.organisationOf(newcomer).call() == 2
    assert suite.revert_of(reg.addMember(a.approver1, True), a.steward2) == (
        "AlreadyMember", {"account": a.approver1, "org": 1})  # cannot pull acme's approver into globex
    for fn in (reg.setApprover(a.approver1, False), reg.removeMember(a.approver1), reg.setApprover(a.deployer, True)):
        assert suite.revert_of(fn, a.steward2) == (
            "StewardOfOtherOrganisation", {"steward": a.steward2, "stewardOrg": 2, "memberOrg": 1})
    for account in (a.approver1, a.admin, a.outsider):
        assert suite.revert_of(reg.addMember(Account.create().address, False), account) == (
            "NotSteward", {"account": account})
    # its own members it manages without a vote
    receipt = suite.transact(reg.setApprover(newcomer, True), a.steward2)
    assert events(receipt, suite.registry, "ApproverSlotAssigned") == [
        {"account": newcomer, "index": 4, "org": 2, "epoch": 1}]
    receipt = suite.transact(reg.setApprover(newcomer, False), a.steward2)
    assert events(receipt, suite.registry, "ApproverSlotFreed") == [{"account": newcomer, "index": 4, "epoch": 1}]
    assert suite.revert_of(reg.setApprover(newcomer, False), a.steward2) == (
        "RoleNotHeld", {"role": ROLES["APPROVER"], "scope": "", "account": newcomer})
    assert suite.revert_of(reg.setApprover(a.approver2, True), a.steward2) == (
        "RoleAlreadyHeld", {"role": ROLES["APPROVER"], "scope": "", "account": a.approver2})


def test_a_steward_cannot_steward_two_organisations(suite):
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    proposal_id, _ = propose(suite, reg.addOrganisation("hooli", a.steward1))
    suite.transact(gov.approveProposal(proposal_id), a.steward2)
    advance(suite.w3, GOVERNANCE_DELAY)
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "AlreadySteward", {"account": a.steward1, "org": 1})


# ============================================================ bootstrap


def test_the_deploying_key_holds_no_role_after_bootstrap(suite):
    a, reg, gov, w3 = suite.actors, suite.registry.functions, suite.governance.functions, suite.w3
    registry_roles = [DEFAULT_ADMIN, *ROLES.values()]
    for role in registry_roles:
        assert reg.hasRole(role, a.admin).call() is False
        assert reg.getRoleAdmin(role).call() == DEFAULT_ADMIN
        for scope in (ZERO32, Web3.keccak(text="api")):
            assert reg.hasScopedRole(role, scope, a.admin).call() is False
    assert (reg.organisationOf(a.admin).call(), reg.stewardOrganisation(a.admin).call()) == (0, 0)
    # Nobody holds the registry's DEFAULT_ADMIN_ROLE: it was never granted.
    granted = suite.registry.events.RoleGranted().get_logs(from_block=0)
    assert granted and all(log["args"]["role"] != DEFAULT_ADMIN for log in granted)
    assert {log["args"]["sender"] for log in granted} == {a.admin}  # the constructor's grants only
    timelock_roles = [DEFAULT_ADMIN, *TIMELOCK_ROLES.values()]
    for role in timelock_roles:
        assert gov.hasRole(role, a.admin).call() is False
        assert gov.hasRole(role, suite.governance.address).call() is True
    # Every timelock role ever granted went to the Governance contract itself.
    grants = suite.governance.events.RoleGranted().get_logs(from_block=0)
    assert {(log["args"]["role"], log["args"]["account"]) for log in grants} == {
        (role, suite.governance.address) for role in timelock_roles}
    assert gov.getMinDelay().call() == 0  # each proposal's delay is chosen by Governance
    assert (gov.organisationsNeeded().call(), gov.delay().call(), gov.registry().call()) == (
        2, GOVERNANCE_DELAY, suite.registry.address)
    assert reg.governance().call() == suite.governance.address


# ============================================================ history


def test_history_heads_equal_the_heads_rebuilt_from_logs(suite):
    """A varied sequence over the three contracts; every head and count equals the one rebuilt from
    the raw logs in log order (Governance's own timelock events skipped)."""
    a, reg, led, gov, w3 = suite.actors, suite.registry.functions, suite.ledger.functions, suite.governance.functions, suite.w3
    newcomer = Account.create().address
    # governance: weakening executed, tightening executed at approval, cancelled, settings
    set_policy(suite, "api", "staging", threshold=1, freeze_severity=2)
    set_policy(suite, "api", "prod", threshold=2, min_organisations=2, prior="staging", attestations=("sbom",))
    set_policy(suite, "api", "staging", threshold=1, freeze_severity=3)
    cancelled, _ = propose(suite, reg.addOrganisation("hooli", newcomer))
    suite.transact(gov.cancelProposal(cancelled), a.steward3)
    governed(suite, gov.setSettings(2, 90))
    # members: an approver added and removed (RoleGranted/RoleRevoked interleave with slot events)
    suite.transact(reg.addMember(newcomer, True), a.steward3)
    suite.transact(reg.removeMember(newcomer), a.steward3)
    grant(suite, "RESPONDER", a.approver4)
    governed(suite, reg.removeMember(a.approver4))  # revokes RESPONDER and APPROVER
    # artifacts and votes
    item = artifact()
    register(suite, item)
    suite.transact(reg.registerBatch([artifact(version="1.0.1"), item]), a.registrar)
    suite.transact(reg.attest(item[0], "api", "sbom", sha256("sbom doc"), "https://sbom.example/1"), a.registrar)
    approve(suite, a.approver1, environment="staging")
    reject(suite, a.approver2, environment="prod")
    suite.transact(reg.withdraw(item[0], "api", "prod"), a.approver2)
    advance(w3, 1)  # a signature must be later than the signer's last action (the withdrawal)
    votes = [signed_vote(suite, a.approver1, nonce=1), signed_vote(suite, a.approver2, nonce=2),
             signed_vote(suite, a.outsider, nonce=3)]
    suite.transact(reg.voteBySig(votes), a.outsider)  # two recorded, one skipped
    suite.transact(reg.invalidateNonce(7), a.approver3)
    suite.transact(reg.revoke(artifact(version="1.0.1")[0], "api", "bad"), a.registrar)
    # ledger
    first, _ = start(suite, item[0], "api", "staging", 10)
    suite.transact(led.recordAnalysis(first, 9_000, Verdict.PASS, sha256("r"), "", "kayenta"), a.deployer)
    suite.transact(led.promote(first, 100), a.deployer)
    suite.transact(led.complete(first), a.deployer)
    second, _ = start(suite, item[0], "api", "staging", 100)
    suite.transact(led.complete(second), a.deployer)
    suite.transact(led.rollback(second, "redeploy broke"), a.deployer)
    incident = open_incident(suite, "api", "staging", severity=2)
    suite.transact(led.acknowledge(incident), a.responder)
    suite.transact(led.mitigate(incident, second), a.responder)
    suite.transact(led.resolve(incident, ZERO32, ""), a.responder)
    suite.transact(led.attachPostmortem(incident, sha256("pm"), "https://wiki.example/pm"), a.responder)
    assert tuple(reg.voteOf(item[0], "api", "prod", a.approver2).call())[0] == Decision.APPROVE

    for contract, only in ((suite.registry, None), (suite.ledger, None),
                           (suite.governance, record_topics(suite.governance, GOVERNANCE_RECORDS))):
        head, count = contract.functions.historyHead().call()
        assert (head, count) == history_from_logs(w3, contract.address, only), contract.address
        assert count > 5


def test_no_memory_is_reserved_for_spilled_variables():
    """History hashes a record where its data lies by borrowing the words below it and restoring
    them in the same assembly block. That is sound while the compiler reserves no memory for
    variables it moves off the stack (the free memory pointer starts at 0x80): a build that does
    reserve some fails here, and History must then copy instead."""
    from shipledger._internal import artifacts

    for name in ("ReleaseRegistry", "DeploymentLedger", "Governance"):
        code = artifacts.load(name)["deployedBytecode"].removeprefix("0x")
        assert code.startswith(("6080604052", "608080604052")), (name, code[:24])

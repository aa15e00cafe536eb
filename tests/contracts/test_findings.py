"""One regression test per finding of issue 10 ("The findings v2 must close"): each replays the attack
the review demonstrated against suite v1 and asserts that v2 refuses it, with the exact error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from kit import (
    DEFAULT_ADMIN, MAX_SIGNATURE_VALIDITY, ROLES, ZERO32, Decision, Gate, Incident, Proposal, Skip, Verdict, advance,
    approve, artifact, artifact_id, incident_input, block_ts, events, gate, grant, history_from_logs, key, latest_ts, mine_at,
    open_incident, policy, propose, record_hash, register, reject, revert_to, send_many, set_policy, sha256,
    signed_vote, snapshot, start, target, vote_event,
)

pytestmark = pytest.mark.filterwarnings("ignore:The log with transaction hash:UserWarning")

ROOT = Path(__file__).resolve().parents[2]
D = sha256("api 1.0.0")


def guarded(suite):
    """The scene of the one-key attack: staging and prod each need 2 approvals from 2 organisations,
    prod needs staging first, sev <= 2 freezes and lifting a freeze needs 2 organisations; 1.0.0 is
    approved by acme and globex for both, vetoed by initech, and a severity-1 incident is open."""
    a = suite.actors
    register(suite)
    set_policy(suite, "api", "staging", threshold=2, min_organisations=2, freeze_severity=2, resolve_quorum=2)
    set_policy(suite, "api", "prod", threshold=2, min_organisations=2, freeze_severity=2, resolve_quorum=2,
               prior="staging")
    for env in ("staging", "prod"):
        approve(suite, a.approver1, environment=env)
        approve(suite, a.approver2, environment=env)
        reject(suite, a.approver3, environment=env, reason="backdoor in the build")
    incident = open_incident(suite, "api", "staging", severity=1)
    return incident


# ============================================================ one ADMIN key ships anything (high)


def test_one_key_attack_every_step_refused(suite):
    """The 17 steps of v1's attack, tried by the key that deployed the suite (v1's ADMIN): each is
    refused, and the history, the policies and the gate are as before."""
    a, reg, led, gov = suite.actors, suite.registry.functions, suite.ledger.functions, suite.governance.functions
    incident = guarded(suite)
    head_before = reg.historyHead().call()
    puppet1, puppet2 = Account.create().address, Account.create().address
    lower = policy(threshold=1)
    admin = a.admin
    not_governance = ("NotGovernance", {"caller": admin})
    no_admin = ("AccessControlUnauthorizedAccount", {"account": admin, "neededRole": DEFAULT_ADMIN})
    steps = [
        (reg.addOrganisation("shell-a", admin), not_governance),
        (reg.addOrganisation("shell-b", a.outsider), not_governance),
        (reg.addMember(puppet1, True), ("NotSteward", {"account": admin})),
        (reg.addMember(puppet2, True), ("NotSteward", {"account": admin})),
        (reg.grantRole(ROLES["APPROVER"], puppet1), no_admin),
        (reg.setApprover(puppet2, True), ("NotMember", {"account": puppet2})),
        (reg.removeMember(a.approver3), ("NotSteward", {"account": admin})),
        (reg.setApprover(a.approver3, False), ("NotSteward", {"account": admin})),
        (reg.grantScopedRole(ROLES["DEPLOYER"], "", admin), not_governance),
        (reg.grantScopedRole(ROLES["RESPONDER"], "", admin), not_governance),
        (reg.grantRole(ROLES["DEPLOYER"], admin), no_admin),
        (led.resolve(incident, ZERO32, ""), ("AccessControlUnauthorizedAccount",
                                              {"account": admin, "neededRole": ROLES["RESPONDER"]})),
        (led.start(D, "api", "staging", 100), ("AccessControlUnauthorizedAccount",
                                               {"account": admin, "neededRole": ROLES["DEPLOYER"]})),
        (reg.setPolicy("api", "prod", lower), not_governance),
        (gov.propose(suite.registry.address, reg.setPolicy("api", "prod", lower)._encode_transaction_data()),
         ("NotSteward", {"account": admin})),
        (gov.schedule(suite.registry.address, 0, b"", ZERO32, ZERO32, 0), (
            "AccessControlUnauthorizedAccount", {"account": admin, "neededRole": Web3.keccak(text="PROPOSER_ROLE")})),
        (gov.execute(suite.registry.address, 0, b"", ZERO32, ZERO32), (
            "AccessControlUnauthorizedAccount", {"account": admin, "neededRole": Web3.keccak(text="EXECUTOR_ROLE")})),
    ]
    assert len(steps) == 17
    for fn, expected in steps:
        assert suite.revert_of(fn, admin) == expected
    assert reg.historyHead().call() == head_before
    assert reg.organisationCount().call() == 3
    assert [reg.getPolicy("api", env).call()[6] for env in ("staging", "prod")] == [1, 1]
    assert gate(suite, D, "api", "staging") == (Gate.REJECTED_BY, int(a.approver3, 16), 0)


def test_one_key_attack_by_a_single_steward_or_responder_refused(suite):
    """The strongest single keys left, a steward and a responder, cannot finish the attack either."""
    a, reg, led, gov = suite.actors, suite.registry.functions, suite.ledger.functions, suite.governance.functions
    incident = guarded(suite)
    # A steward's proposals need a second organisation.
    shell_id, _ = propose(suite, reg.addOrganisation("shell", a.steward1))
    assert suite.revert_of(gov.executeProposal(shell_id), a.steward1) == (
        "NotEnoughOrganisations", {"id": shell_id, "approvals": 1, "needed": 2})
    assert suite.revert_of(gov.approveProposal(shell_id), a.steward1) == (
        "AlreadyApproved", {"id": shell_id, "org": 1})
    grant_id, _ = propose(suite, reg.grantScopedRole(ROLES["RESPONDER"], "", a.approver1))
    assert suite.revert_of(gov.executeProposal(grant_id), a.outsider) == (
        "NotEnoughOrganisations", {"id": grant_id, "approvals": 1, "needed": 2})
    # It cannot remove another organisation's vetoer.
    for fn in (reg.removeMember(a.approver3), reg.setApprover(a.approver3, False)):
        assert suite.revert_of(fn, a.steward1) == (
            "StewardOfOtherOrganisation", {"steward": a.steward1, "stewardOrg": 1, "memberOrg": 3})
    # Its own puppets are approvers of acme only: the veto stands and acme is one organisation.
    puppet = Account.create().address
    suite.transact(reg.addMember(puppet, True), a.steward1)
    assert reg.organisationOf(puppet).call() == 1
    # One responder's resolution does not lift a freeze that needs two organisations.
    suite.transact(led.resolve(incident, ZERO32, ""), a.responder)
    assert led.getIncident(incident).call()[2] == Incident.OPEN
    suite.transact(reg.withdraw(D, "api", "staging"), a.approver3)  # even without the veto
    assert gate(suite, D, "api", "staging") == (Gate.FROZEN_BY_INCIDENT, 1, 1)
    assert suite.revert_of(led.start(D, "api", "staging", 100), a.deployer) == (
        "GateDenied", {"reason": Gate.FROZEN_BY_INCIDENT, "detailA": 1, "detailB": 1})
    assert reg.organisationCount().call() == 3
    assert [gov.getProposal(i).call()[1] for i in (shell_id, grant_id)] == [Proposal.PENDING] * 2


def test_lower_policy_start_restore_in_one_block_refused(suite):
    """v1: lower the policy, start, restore the policy, all in one block. v2: lowering is weakening, so
    it waits for the delay even with K organisations, and any organisation cancels it meanwhile."""
    a, reg, gov = suite.actors, suite.registry.functions, suite.governance.functions
    guarded(suite)
    weaker = reg.setPolicy("api", "staging", policy(threshold=1))
    proposal_id, _ = propose(suite, weaker)
    receipt = suite.transact(gov.approveProposal(proposal_id), a.steward2)
    executable_at = block_ts(suite.w3, receipt) + 60
    assert events(receipt, suite.governance, "ProposalScheduled") == [
        {"id": proposal_id, "weakening": True, "executableAt": executable_at}]
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "DelayNotPassed", {"id": proposal_id, "executableAt": executable_at, "timestamp": latest_ts(suite.w3)})
    assert tuple(reg.getPolicy("api", "staging").call())[:7] == (2, 2, 0, 0, 2, 2, 1)
    receipt = suite.transact(gov.cancelProposal(proposal_id), a.steward3)
    assert events(receipt, suite.governance, "ProposalCancelled") == [
        {"id": proposal_id, "steward": a.steward3, "org": 3}]
    operation = gov.hashOperation(suite.registry.address, 0, weaker._encode_transaction_data(), ZERO32,
                                  proposal_id.to_bytes(32, "big")).call()
    assert gov.isOperation(operation).call() is False  # the timelock operation is gone too
    advance(suite.w3, 61)
    assert suite.revert_of(gov.executeProposal(proposal_id), a.outsider) == (
        "ProposalStateInvalid", {"id": proposal_id, "state": Proposal.CANCELLED})
    assert reg.getPolicy("api", "staging").call()[6] == 1


# ============================================================ an old offline signature overrides a later veto (high)


def test_old_signature_cannot_override_a_later_veto(suite):
    a, reg = suite.actors, suite.registry.functions
    register(suite)
    set_policy(suite, threshold=1)
    advance(suite.w3, 1)
    old = signed_vote(suite, a.approver3, nonce=1, deadline=latest_ts(suite.w3) + 7 * 24 * 3600)
    advance(suite.w3, 10)
    veto = reject(suite, a.approver3, reason="found a backdoor")
    vetoed_at = block_ts(suite.w3, veto)
    assert reg.voteBySig([old]).call({"from": a.outsider}) == 0
    receipt = suite.transact(reg.voteBySig([old]), a.outsider)
    assert events(receipt, suite.registry, "SignedVoteSkipped") == [{
        "signer": a.approver3, "digest": D, "nonce": 1, "index": 0, "reason": Skip.STALE, "submitter": a.outsider}]
    assert events(receipt, suite.registry, "ArtifactApproved") == []
    assert reg.nonceUsed(a.approver3, 1).call() is False
    assert tuple(reg.voteOf(D, "api", "prod", a.approver3).call()) == (Decision.REJECT, vetoed_at)
    assert gate(suite, D) == (Gate.REJECTED_BY, int(a.approver3, 16), 0)


def test_signature_deadline_is_bounded_and_ttl_runs_from_signing(suite):
    a, reg = suite.actors, suite.registry.functions
    register(suite)
    set_policy(suite, threshold=1, ttl=100)
    signed_at = latest_ts(suite.w3)
    too_long = signed_vote(suite, a.approver1, nonce=1, signed_at=signed_at, deadline=signed_at + 101)
    receipt = suite.transact(reg.voteBySig([too_long]), a.outsider)
    assert [e["reason"] for e in events(receipt, suite.registry, "SignedVoteSkipped")] == [Skip.EXPIRED]
    vote = signed_vote(suite, a.approver1, nonce=2, signed_at=signed_at, deadline=signed_at + 100)
    advance(suite.w3, 50)
    receipt = suite.transact(reg.voteBySig([vote]), a.outsider)
    assert [e["signedAt"] for e in events(receipt, suite.registry, "ArtifactApproved")] == [signed_at]
    mine_at(suite.w3, signed_at + 100)
    assert gate(suite, D) == (Gate.ALLOWED, 0, 0)
    mine_at(suite.w3, signed_at + 101)  # 100 s after signing, however late it was submitted
    assert gate(suite, D) == (Gate.APPROVALS_EXPIRED, 0, 1)


def test_signature_deadline_capped_at_30_days_when_ttl_is_zero(suite):
    a, reg = suite.actors, suite.registry.functions
    register(suite)
    set_policy(suite, threshold=1, ttl=0)
    signed_at = latest_ts(suite.w3)
    votes = [signed_vote(suite, a.approver1, nonce=1, signed_at=signed_at, deadline=signed_at + MAX_SIGNATURE_VALIDITY + 1),
             signed_vote(suite, a.approver1, nonce=2, signed_at=signed_at, deadline=signed_at + MAX_SIGNATURE_VALIDITY)]
    receipt = suite.transact(reg.voteBySig(votes), a.outsider)
    assert [(e["nonce"], e["reason"]) for e in events(receipt, suite.registry, "SignedVoteSkipped")] == [(1, Skip.EXPIRED)]
    assert [e["nonce"] for e in events(receipt, suite.registry, "ArtifactApproved")] == [2]


# ============================================================ the gate is checked only at start (medium-high)


def _step_scene(suite):
    a = suite.actors
    register(suite)
    set_policy(suite, "api", "staging", threshold=2, min_organisations=2, ttl=30 * 24 * 3600, freeze_severity=2)
    approve(suite, a.approver1, environment="staging")
    approve(suite, a.approver2, environment="staging")
    deployment_id, _ = start(suite, D, "api", "staging", 1)
    return deployment_id


def _happen(suite, what, deployment_id):
    a, led = suite.actors, suite.ledger.functions
    if what == "veto":
        reject(suite, a.approver3, environment="staging")
        return "StepDenied", {"id": deployment_id, "reason": Gate.REJECTED_BY, "detailA": int(a.approver3, 16), "detailB": 0}
    if what == "sev1-incident":
        open_incident(suite, "api", "staging", severity=1)
        return "StepDenied", {"id": deployment_id, "reason": Gate.FROZEN_BY_INCIDENT, "detailA": 1, "detailB": 1}
    if what == "expiry":
        advance(suite.w3, 30 * 24 * 3600 + 1)
        return "StepDenied", {"id": deployment_id, "reason": Gate.APPROVALS_EXPIRED, "detailA": 0, "detailB": 2}
    assert what == "fail-verdict"
    suite.transact(led.recordAnalysis(deployment_id, 1_200, Verdict.FAIL, sha256("report"), "", "kayenta"), a.deployer)
    return "CanaryBlocks", {"id": deployment_id, "verdict": Verdict.FAIL}


@pytest.mark.parametrize("what", ["veto", "sev1-incident", "expiry", "fail-verdict"])
def test_promote_and_complete_recheck_the_gate(suite, what):
    """A rollout at 1%: after a veto, a severity-1 incident, expiry or a Fail verdict, neither promote
    to 100 nor (once at 100) complete goes through."""
    a, led = suite.actors, suite.ledger.functions
    deployment_id = _step_scene(suite)
    snap = snapshot(suite.w3)
    expected = _happen(suite, what, deployment_id)
    assert suite.revert_of(led.promote(deployment_id, 100), a.deployer) == expected
    revert_to(suite.w3, snap)
    suite.transact(led.promote(deployment_id, 100), a.deployer)
    expected = _happen(suite, what, deployment_id)
    assert suite.revert_of(led.complete(deployment_id), a.deployer) == expected
    assert tuple(led.targetState("api", "staging").call()) == (0, deployment_id)
    assert led.getDeployment(deployment_id).call()[5] == 1  # still InProgress


# ============================================================ a rollback revives a revoked artifact (medium)


def test_rollback_never_revives_a_revoked_artifact(suite):
    a, reg, led = suite.actors, suite.registry.functions, suite.ledger.functions
    old, new = artifact(version="1.0.0"), artifact(version="1.0.1")
    register(suite, old, new)
    set_policy(suite, threshold=1)
    for item in (old, new):
        approve(suite, a.approver1, digest=item[0])
    first, _ = start(suite, old[0])
    suite.transact(led.complete(first), a.deployer)
    suite.transact(reg.revoke(old[0], "api", "backdoored"), a.registrar)
    second, _ = start(suite, new[0])
    suite.transact(led.complete(second), a.deployer)
    assert suite.revert_of(led.rollback(second, "bad release"), a.deployer) == (
        "RestoresRevokedArtifact", {"id": second, "restoredId": first, "artifactId": artifact_id("api", old[0])})
    assert tuple(led.targetState("api", "prod").call()) == (second, 0)


# ============================================================ a re-admitted approver's old votes (medium)


def test_readmitted_approver_starts_with_no_votes(suite):
    a, reg = suite.actors, suite.registry.functions
    register(suite)
    set_policy(suite, threshold=2, min_organisations=2)
    approve(suite, a.approver1)  # acme
    approve(suite, a.approver2)  # globex
    old_signature = signed_vote(suite, a.approver1, decision=Decision.APPROVE, nonce=5, environment="prod")
    assert gate(suite, D) == (Gate.ALLOWED, 0, 0)
    suite.transact(reg.removeMember(a.approver1), a.steward1)
    assert gate(suite, D) == (Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    advance(suite.w3, 5)
    receipt = suite.transact(reg.addMember(a.approver1, True), a.steward3)  # back, in initech
    assert events(receipt, suite.registry, "ApproverSlotAssigned") == [
        {"account": a.approver1, "index": 0, "org": 3, "epoch": 2}]
    assert gate(suite, D) == (Gate.NOT_ENOUGH_APPROVALS, 1, 2)  # the acme approval is not back as initech's
    assert tuple(reg.voteOf(D, "api", "prod", a.approver1).call()) == (Decision.NONE, 0)
    receipt = suite.transact(reg.voteBySig([old_signature]), a.outsider)  # signed before re-admission
    assert [e["reason"] for e in events(receipt, suite.registry, "SignedVoteSkipped")] == [Skip.STALE]
    receipt = approve(suite, a.approver1)
    assert events(receipt, suite.registry, "ArtifactApproved")[0]["org"] == 3
    assert gate(suite, D) == (Gate.ALLOWED, 0, 0)


# ============================================================ low: the Vote struct does not name its signer

WALLET_SOURCE = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;
/// TEST ONLY: an ERC-1271 wallet that accepts any raw signature of its owner over the hash it is given.
contract OwnerWallet {
    address public immutable owner;
    constructor(address owner_) { owner = owner_; }
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return 0xffffffff;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        return ecrecover(hash, v, r, s) == owner ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}
"""


@pytest.fixture(scope="module")
def wallet_artifact():
    """OwnerWallet compiled now with the project's compiler driver, for Berlin (nothing is downloaded)."""
    standard_input = {"language": "Solidity", "sources": {"OwnerWallet.sol": {"content": WALLET_SOURCE}},
                      "settings": {"evmVersion": "berlin", "optimizer": {"enabled": True, "runs": 200},
                                   "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}}}
    done = subprocess.run([str(ROOT / "tools" / "solc"), "--standard-json"], input=json.dumps(standard_input),
                          capture_output=True, text=True, check=True, timeout=300)
    output = json.loads(done.stdout)
    errors = [e["formattedMessage"] for e in output.get("errors", []) if e["severity"] == "error"]
    assert not errors, errors
    compiled = output["contracts"]["OwnerWallet.sol"]["OwnerWallet"]
    return compiled["abi"], "0x" + compiled["evm"]["bytecode"]["object"]


def test_one_owner_signature_counts_for_one_wallet_only(suite, wallet_artifact):
    a, reg, w3 = suite.actors, suite.registry.functions, suite.w3
    owner = Account.create()
    abi, bytecode = wallet_artifact
    wallets = []
    for _ in range(2):
        receipt = suite.transact(w3.eth.contract(abi=abi, bytecode=bytecode).constructor(owner.address), a.outsider)
        wallets.append(receipt.contractAddress)
    w1, w2 = wallets
    suite.transact(reg.addMember(w1, True), a.steward2)
    suite.transact(reg.addMember(w2, True), a.steward3)
    register(suite)
    set_policy(suite, threshold=2, min_organisations=2)
    vote = signed_vote(suite, w1, nonce=1, private_key=owner.key)
    replayed = (w2, *vote[1:])  # the same owner signature offered for the owner's other wallet
    receipt = suite.transact(reg.voteBySig([vote, replayed]), a.outsider)
    assert [e["approver"] for e in events(receipt, suite.registry, "ArtifactApproved")] == [w1]
    assert events(receipt, suite.registry, "SignedVoteSkipped") == [{
        "signer": w2, "digest": D, "nonce": 1, "index": 1, "reason": Skip.BAD_SIGNATURE, "submitter": a.outsider}]
    assert gate(suite, D) == (Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    # the owner can still vote for its second wallet, by signing for that wallet
    receipt = suite.transact(reg.voteBySig([signed_vote(suite, w2, nonce=1, private_key=owner.key)]), a.outsider)
    assert [e["approver"] for e in events(receipt, suite.registry, "ArtifactApproved")] == [w2]
    assert gate(suite, D) == (Gate.ALLOWED, 0, 0)


# ============================================================ low: the freeze check scans every open incident


def test_start_gas_is_flat_in_open_incidents(suite):
    """start costs the same with 0, 100 and 1,000 open severity-4 incidents (which do not freeze)."""
    a, led, w3 = suite.actors, suite.ledger.functions, suite.w3
    register(suite)
    set_policy(suite, threshold=1, freeze_severity=2)
    approve(suite, a.approver1)
    # One incident opened and resolved first: the ledger's counters and history head are then
    # non-zero, as on any chain in use, so the first measurement does not also pay for their
    # zero-to-non-zero writes (17,100 gas each) and compares only the incidents. A rollout that
    # failed does the same for the target's word (which the open incident counts share).
    first = open_incident(suite, severity=4)
    suite.transact(led.resolve(first, ZERO32, ""), a.responder)
    suite.transact(led.fail(start(suite, D, "api", "prod", 10)[0], "warm-up"), a.deployer)
    assert list(led.openIncidentCounts("api", "prod").call()) == [0, 0, 0, 0]

    def start_gas() -> int:
        snap = snapshot(w3)
        gas = start(suite, D, "api", "prod", 10)[1].gasUsed
        revert_to(w3, snap)
        return gas

    measured = [start_gas()]
    opened = 0
    for total in (100, 1_000):
        calls = [("openIncident", [incident_input(severity=4)]) for _ in range(total - opened)]
        send_many(suite, suite.ledger, calls, a.responder, gas=300_000)
        opened = total
        assert list(led.openIncidentCounts("api", "prod").call()) == [0, 0, 0, total]
        measured.append(start_gas())
    assert measured[0] == measured[1] == measured[2], measured


# ============================================================ low: a registration is identical when only the digest matches


def test_registration_identity_is_the_whole_record_and_registrar_is_per_service(suite):
    a, reg, w3 = suite.actors, suite.registry.functions, suite.w3
    rogue = a.approver4  # an acme member, made REGISTRAR of "worker" only
    grant(suite, "REGISTRAR", rogue, scope="worker")
    genuine = artifact()
    forged = artifact(commit=b"\xee" * 32, provenance=b"\xee" * 32, sbom=b"\xee" * 32)
    assert record_hash(genuine) != record_hash(forged)
    for fn in (reg.register(forged), reg.revoke(D, "api", "mine now"), reg.registerBatch([forged])):
        assert suite.revert_of(fn, rogue) == ("NotRegistrarOf", {"account": rogue, "service": "api"})
    snap = snapshot(w3)
    # the honest registrar first: a forged record for the same version is refused, not absorbed
    register(suite, genuine)
    grant(suite, "REGISTRAR", rogue, scope="api")
    assert suite.revert_of(reg.register(forged), rogue) == (
        "VersionAlreadyRegistered", {"service": "api", "version": "1.0.0", "existingRecordHash": record_hash(genuine)})
    assert reg.register(genuine).call({"from": rogue}) is False  # only the identical record is a no-op
    assert reg.recordOf("api", "1.0.0").call() == record_hash(genuine)
    revert_to(w3, snap)
    # a rogue first: the honest registration fails loudly and names the record that won
    grant(suite, "REGISTRAR", rogue, scope="api")
    register(suite, forged, registrar=rogue)
    assert suite.revert_of(reg.register(genuine), a.registrar) == (
        "VersionAlreadyRegistered", {"service": "api", "version": "1.0.0", "existingRecordHash": record_hash(forged)})


# ============================================================ low: one RESPONDER can lift any freeze


def test_one_responder_cannot_lift_a_freeze_that_needs_two_organisations(suite):
    a, led = suite.actors, suite.ledger.functions
    register(suite)
    set_policy(suite, threshold=1, freeze_severity=2, resolve_quorum=2)
    approve(suite, a.approver1)
    grant(suite, "RESPONDER", a.deployer)  # acme's on-call; the responder is globex's
    incident = open_incident(suite, severity=1)
    receipt = suite.transact(led.resolve(incident, ZERO32, ""), a.responder)
    assert events(receipt, suite.ledger, "IncidentResolveApproved") == [{
        "id": incident, "target": target("api", "prod"), "responder": a.responder, "org": 2, "organisations": 1,
        "needed": 2}]
    assert events(receipt, suite.ledger, "IncidentResolved") == []
    assert tuple(led.getIncident(incident).call()) == (target("api", "prod"), 1, Incident.OPEN, 1 << 2)
    assert suite.revert_of(led.resolve(incident, ZERO32, ""), a.responder) == (
        "AlreadyResolvedBy", {"incidentId": incident, "org": 2})
    assert gate(suite, D) == (Gate.FROZEN_BY_INCIDENT, 1, 1)
    postmortem = sha256("postmortem")
    receipt = suite.transact(led.resolve(incident, postmortem, "https://wiki.example/pm"), a.deployer)
    assert events(receipt, suite.ledger, "IncidentResolved") == [{
        "id": incident, "target": target("api", "prod"), "postmortemDigest": postmortem,
        "postmortemUri": "https://wiki.example/pm", "responder": a.deployer}]
    assert tuple(led.getIncident(incident).call())[2:] == (Incident.RESOLVED, (1 << 1) | (1 << 2))
    assert gate(suite, D) == (Gate.ALLOWED, 0, 0)


# ============================================================ low: a rollback clears the prior-environment completion


def test_rollback_keeps_a_still_standing_prior_environment_completion(suite):
    a, led = suite.actors, suite.ledger.functions
    register(suite)
    set_policy(suite, "api", "staging", threshold=1)
    set_policy(suite, "api", "prod", threshold=1, prior="staging")
    approve(suite, a.approver1, environment="staging")
    approve(suite, a.approver1, environment="prod")
    ids = []
    for _ in range(2):  # the same artifact completes twice in staging (a redeploy)
        deployment_id, _ = start(suite, D, "api", "staging")
        suite.transact(led.complete(deployment_id), a.deployer)
        ids.append(deployment_id)
    aid, staging = artifact_id("api", D), target("api", "staging")
    assert led.completions(aid, staging).call() == 2
    suite.transact(led.rollback(ids[1], "redeploy broke"), a.deployer)
    assert tuple(led.targetState("api", "staging").call()) == (ids[0], 0)
    assert led.completions(aid, staging).call() == 1
    assert gate(suite, D, "api", "prod") == (Gate.ALLOWED, 0, 0)
    suite.transact(led.rollback(ids[0], "all of it"), a.deployer)
    assert led.completions(aid, staging).call() == 0
    assert gate(suite, D, "api", "prod") == (Gate.MISSING_PRIOR_ENVIRONMENT, int.from_bytes(key("staging")), 0)


# ============================================================ low: voteBySig reverts the whole batch


def test_front_running_one_vote_does_not_grief_the_batch(suite):
    a, reg = suite.actors, suite.registry.functions
    register(suite)
    set_policy(suite, threshold=3, min_organisations=3)
    votes = [signed_vote(suite, signer, nonce=n) for n, signer in enumerate((a.approver1, a.approver2, a.approver3), 1)]
    suite.transact(reg.voteBySig([votes[1]]), a.outsider)  # copied out of the pending batch and sent first
    assert reg.voteBySig(votes).call({"from": a.registrar}) == 2
    receipt = suite.transact(reg.voteBySig(votes), a.registrar)
    assert [e["approver"] for e in events(receipt, suite.registry, "ArtifactApproved")] == [a.approver1, a.approver3]
    assert events(receipt, suite.registry, "SignedVoteSkipped") == [{
        "signer": a.approver2, "digest": D, "nonce": 2, "index": 1, "reason": Skip.NONCE_USED, "submitter": a.registrar}]
    assert gate(suite, D) == (Gate.ALLOWED, 0, 0)


# ============================================================ low: mitigate accepts a rollback of another target


@pytest.mark.parametrize("where", [("api", "staging"), ("worker", "prod")], ids=["other-env", "other-service"])
def test_mitigate_refuses_a_rollback_of_another_target(suite, where):
    a, led = suite.actors, suite.ledger.functions
    service, env = where
    item = artifact(service=service)
    register(suite, item)
    set_policy(suite, service, env, threshold=1)
    approve(suite, a.approver1, digest=item[0], service=service, environment=env)
    deployment_id, _ = start(suite, item[0], service, env, 10)
    suite.transact(led.rollback(deployment_id, "abort"), a.deployer)
    incident = open_incident(suite, "api", "prod", severity=3)
    assert suite.revert_of(led.mitigate(incident, deployment_id), a.responder) == (
        "RollbackNotFound", {"incidentId": incident, "rollbackId": deployment_id})
    assert led.getIncident(incident).call()[2] == Incident.OPEN


# ============================================================ low: approver slots are used for life


def test_approver_slots_are_reused_after_removal(suite):
    a, reg = suite.actors, suite.registry.functions
    accounts = [Web3.to_checksum_address((0xA000 + i).to_bytes(20, "big")) for i in range(252)]  # slots 4..255
    send_many(suite, suite.registry, [("addMember", [account, True]) for account in accounts], a.steward1)
    newcomer = Account.create().address
    assert suite.revert_of(reg.addMember(newcomer, True), a.steward2) == ("TooManyApprovers", {})
    receipt = suite.transact(reg.removeMember(a.approver2), a.steward2)  # slot 1
    assert events(receipt, suite.registry, "ApproverSlotFreed") == [{"account": a.approver2, "index": 1, "epoch": 1}]
    receipt = suite.transact(reg.addMember(newcomer, True), a.steward2)
    assert events(receipt, suite.registry, "ApproverSlotAssigned") == [
        {"account": newcomer, "index": 1, "org": 2, "epoch": 2}]
    assert suite.revert_of(reg.addMember(Account.create().address, True), a.steward2) == ("TooManyApprovers", {})


# ============================================================ low: removeMember revokes only APPROVER


def test_remove_member_revokes_every_role(suite):
    a, reg, led = suite.actors, suite.registry.functions, suite.ledger.functions
    register(suite)
    receipt = suite.transact(reg.removeMember(a.registrar), a.steward1)  # REGISTRAR and ATTESTOR, everywhere
    assert events(receipt, suite.registry, "RoleRevoked") == [
        {"role": ROLES["REGISTRAR"], "account": a.registrar, "sender": a.steward1},
        {"role": ROLES["ATTESTOR"], "account": a.registrar, "sender": a.steward1}]
    assert events(receipt, suite.registry, "MemberRemoved") == [{"account": a.registrar, "org": 1, "by": a.steward1}]
    for role in ("REGISTRAR", "ATTESTOR"):
        assert reg.hasScopedRole(ROLES[role], ZERO32, a.registrar).call() is False
    assert suite.revert_of(reg.register(artifact(version="2.0.0")), a.registrar) == (
        "NotRegistrarOf", {"account": a.registrar, "service": "api"})
    assert suite.revert_of(reg.attest(D, "api", "sbom", sha256("sbom"), ""), a.registrar) == (
        "NotAttestorOf", {"account": a.registrar, "attestationType": "sbom"})
    suite.transact(reg.removeMember(a.deployer), a.steward1)
    assert suite.revert_of(led.start(D, "api", "prod", 10), a.deployer) == (
        "AccessControlUnauthorizedAccount", {"account": a.deployer, "neededRole": ROLES["DEPLOYER"]})


# ============================================================ low: signed-vote events carry no nonce, deadline or submitter


def test_signed_vote_events_rebuild_the_nonce_bitmap(suite):
    a, reg, w3 = suite.actors, suite.registry.functions, suite.w3
    register(suite)
    set_policy(suite, threshold=1)
    signed_at = latest_ts(w3)
    deadline = signed_at + 999
    vote = signed_vote(suite, a.approver1, nonce=77, signed_at=signed_at, deadline=deadline)
    veto = signed_vote(suite, a.approver2, nonce=2**200, decision=Decision.REJECT, signed_at=signed_at)
    receipt = suite.transact(reg.voteBySig([vote, veto]), a.outsider)
    assert events(receipt, suite.registry, "ArtifactApproved") == [vote_event(
        a.approver1, 1, by_signature=True, signed_at=signed_at, nonce=77, deadline=deadline, submitter=a.outsider)]
    assert events(receipt, suite.registry, "ArtifactRejected") == [vote_event(
        a.approver2, 2, by_signature=True, signed_at=signed_at, nonce=2**200, deadline=signed_at + 3600,
        submitter=a.outsider, rejected=True)]
    suite.transact(reg.invalidateNonce(12), a.approver3)
    stale = signed_vote(suite, a.approver1, nonce=78, signed_at=signed_at - 1)
    suite.transact(reg.voteBySig([stale]), a.outsider)  # skipped: burns nothing
    # The bitmap rebuilt from the logs alone equals the getter's, also for the nonces it does not list.
    used = set()
    for name in ("ArtifactApproved", "ArtifactRejected"):
        for log in getattr(suite.registry.events, name)().get_logs(from_block=0):
            if log["args"]["bySignature"]:
                used.add((log["args"]["approver"], log["args"]["nonce"]))
    for log in suite.registry.events.NonceInvalidated().get_logs(from_block=0):
        used.add((log["args"]["signer"], log["args"]["nonce"]))
    assert used == {(a.approver1, 77), (a.approver2, 2**200), (a.approver3, 12)}
    candidates = used | {(a.approver1, 78), (a.approver3, 77), (a.approver2, 12)}
    assert {c for c in candidates if reg.nonceUsed(*c).call()} == used


# ============================================================ low: policies are not validated


def _execute_policy(suite, service, environment, **kwargs):
    """Proposes and approves a (weakening: new) policy and returns the executeProposal call, due now."""
    fn = suite.registry.functions.setPolicy(service, environment, policy(**kwargs))
    proposal_id, _ = propose(suite, fn)
    suite.transact(suite.governance.functions.approveProposal(proposal_id), suite.actors.steward2)
    advance(suite.w3, 60)
    return suite.governance.functions.executeProposal(proposal_id)


@pytest.mark.parametrize("kwargs, why", [
    ({"threshold": 4, "min_organisations": 4}, "minOrganisations cannot exceed the number of organisations"),
    ({"threshold": 1, "resolve_quorum": 4}, "resolveQuorum must be 1..the number of organisations"),
    ({"threshold": 1, "prior": "prod"}, "prior environments would form a cycle"),
], ids=["min-orgs-above-org-count", "resolve-quorum-above-org-count", "prior-is-itself"])
def test_invalid_policy_cannot_execute(suite, kwargs, why):
    execute = _execute_policy(suite, "api", "prod", **kwargs)
    assert suite.revert_of(execute, suite.actors.outsider) == ("InvalidPolicy", {"why": why})


def test_prior_environment_cycle_refused(suite):
    set_policy(suite, "api", "prod", threshold=1, prior="staging")
    set_policy(suite, "api", "staging", threshold=1, prior="qa")
    execute = _execute_policy(suite, "api", "qa", threshold=1, prior="prod")  # qa -> prod -> staging -> qa
    assert suite.revert_of(execute, suite.actors.outsider) == (
        "InvalidPolicy", {"why": "prior environments would form a cycle"})
    assert suite.revert_of(suite.registry.functions.getPolicy("api", "qa"), suite.actors.outsider) == (
        "PolicyNotFound", {"service": "api", "environment": "qa"})


def test_findings_leave_a_consistent_history(suite):
    """After the attack scene the registry's head still equals the one rebuilt from its logs."""
    guarded(suite)
    for contract in (suite.registry, suite.ledger):
        assert tuple(contract.functions.historyHead().call()) == history_from_logs(suite.w3, contract.address)

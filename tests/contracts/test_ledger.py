"""DeploymentLedger (suite v2) against a real anvil: the gate, rollouts re-checked at every step, the
deployment state machine, incidents (O(1) freeze counts, resolve quorum, postmortems) and atomicity.
Every revert test asserts the exact custom error and its arguments; every state change asserts the
event arguments and the state read back. Policies are set from Governance's address (kit.as_governance):
the vote is tested in test_governance.py; who may call what in test_access.py."""

from __future__ import annotations

import hashlib
from enum import IntEnum

import pytest
from eth_abi import encode
from web3 import Web3

from kit import as_governance, events

pytestmark = pytest.mark.filterwarnings("ignore:The log with transaction hash:UserWarning")

SERVICE = "payments-api"
STAGING = "staging"
PROD = "prod"
ZERO32 = b"\x00" * 32

DEPLOYER_ROLE = Web3.keccak(text="DEPLOYER_ROLE")
RESPONDER_ROLE = Web3.keccak(text="RESPONDER_ROLE")


class Reason(IntEnum):
    """GateReason, numbered as in IReleaseRegistry.sol."""

    Allowed = 0
    UnknownArtifact = 1
    ArtifactRevoked = 2
    NoPolicy = 3
    RejectedBy = 4
    WaitingPeriod = 5
    NotEnoughApprovals = 6
    ApprovalsExpired = 7
    NotEnoughOrganisations = 8
    MissingPriorEnvironment = 9
    FrozenByIncident = 10
    RolloutInProgress = 11
    MissingAttestation = 12


class Status(IntEnum):
    """IDeploymentLedger.DeploymentStatus."""

    None_ = 0
    InProgress = 1
    Completed = 2
    Failed = 3
    RolledBack = 4


class Verdict(IntEnum):
    None_ = 0
    Pass = 1
    Marginal = 2
    Fail = 3


class IncidentStatus(IntEnum):
    None_ = 0
    Open = 1
    Acknowledged = 2
    Mitigated = 3
    Resolved = 4


# ---------------------------------------------------------------------------------------- keys


def name_key(name: str) -> bytes:
    return Web3.keccak(text=name)


def target_key(service: str, environment: str) -> bytes:
    return Web3.keccak(encode(["bytes32", "bytes32"], [name_key(service), name_key(environment)]))


def artifact_id(service: str, digest: bytes) -> bytes:
    return Web3.keccak(encode(["bytes32", "bytes32"], [name_key(service), digest]))


def digest_for(service: str, version: str) -> bytes:
    return hashlib.sha256(f"{service}@{version}".encode()).digest()


# ---------------------------------------------------------------------------------------- helpers


def advance(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def now(w3) -> int:
    """block.timestamp as eth_call sees it on anvil (the latest block's)."""
    return w3.eth.get_block("latest").timestamp


def register(suite, version: str = "1.4.2", service: str = SERVICE):
    """Registers an artifact with realistic metadata; returns (digest, receipt)."""
    digest = digest_for(service, version)
    commit = bytes.fromhex("9fceb02d0ae598e95dc970b74767f19372d61af8") + b"\x00" * 12
    artifact = (
        digest,
        service,
        version,
        0,  # kind: build
        commit,
        1_735_689_600,
        hashlib.sha256(b"provenance " + digest).digest(),
        hashlib.sha256(b"sbom " + digest).digest(),
        f"oci://registry.example/{service}@sha256:{digest.hex()}",
    )
    receipt = suite.transact(suite.registry.functions.register(artifact), suite.actors.registrar)
    return digest, receipt


def set_policy(suite, environment: str, *, service: str = SERVICE, threshold: int = 2, min_orgs: int = 2,
               ttl: int = 0, min_wait: int = 0, freeze: int = 2, prior: str = "", resolve_quorum: int = 1,
               attestations=()):
    policy = (threshold, min_orgs, ttl, min_wait, freeze, resolve_quorum, prior, list(attestations))
    return as_governance(suite, suite.registry.functions.setPolicy(service, environment, policy))


def approve(suite, digest: bytes, environment: str, *approvers: str, service: str = SERVICE) -> None:
    for approver in approvers:
        suite.transact(suite.registry.functions.approve(digest, service, environment, "lgtm"), approver)


def gate(suite, digest: bytes, environment: str, service: str = SERVICE) -> tuple[int, int, int]:
    return tuple(suite.ledger.functions.gate(digest, service, environment).call())


def make_releasable(suite, environment: str = STAGING, version: str = "1.4.2", *, service: str = SERVICE,
                    policy: dict | None = None, set_the_policy: bool = True, approvers=None,
                    expect_allowed: bool = True) -> bytes:
    """Registers an artifact, sets the (service, environment) policy (2 approvals from 2 organisations,
    freeze at severity <= 2 unless `policy` overrides) and has approver1 (org 1) and approver2 (org 2)
    approve it, so the gate allows it. Returns the digest."""
    a = suite.actors
    digest, _ = register(suite, version, service)
    if set_the_policy:
        set_policy(suite, environment, service=service, **(policy or {}))
    approve(suite, digest, environment, *(approvers or (a.approver1, a.approver2)), service=service)
    if expect_allowed:
        assert gate(suite, digest, environment, service) == (Reason.Allowed, 0, 0)
    return digest


def make_releasable_prod(suite, digest: bytes) -> None:
    """prod policy requires staging first; approver1 and approver3 approve the artifact for prod."""
    a = suite.actors
    set_policy(suite, PROD, prior=STAGING)
    approve(suite, digest, PROD, a.approver1, a.approver3)


def start(suite, digest: bytes, environment: str = STAGING, percent: int = 10, service: str = SERVICE):
    """Starts a rollout; returns (deployment id, receipt)."""
    receipt = suite.transact(suite.ledger.functions.start(digest, service, environment, percent),
                             suite.actors.deployer)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentStarted")
    return event["id"], receipt


def complete(suite, deployment_id: int):
    return suite.transact(suite.ledger.functions.complete(deployment_id), suite.actors.deployer)


def go_live(suite, version: str, environment: str = STAGING, **kwargs) -> int:
    """A release that went through: approved, started at 100% and completed. Returns its id."""
    digest = make_releasable(suite, environment, version, **kwargs)
    deployment_id, _ = start(suite, digest, environment, 100)
    complete(suite, deployment_id)
    return deployment_id


def state(suite, environment: str = STAGING, service: str = SERVICE) -> tuple[int, int]:
    """(live, active) of a target."""
    return tuple(suite.ledger.functions.targetState(service, environment).call())


def deployment(suite, deployment_id: int) -> tuple:
    return tuple(suite.ledger.functions.getDeployment(deployment_id).call())


def status_of(suite, deployment_id: int) -> int:
    return deployment(suite, deployment_id)[5]


def incident_input(environment: str = STAGING, severity: int = 2, suspects=(), title: str = "5xx spike",
                   service: str = SERVICE):
    return (service, environment, severity, list(suspects), title,
            hashlib.sha256(b"incident details").digest(), "https://status.example/incidents/42")


def open_incident(suite, environment: str = STAGING, severity: int = 2, suspects=(), service: str = SERVICE) -> int:
    receipt = suite.transact(
        suite.ledger.functions.openIncident(incident_input(environment, severity, suspects, service=service)),
        suite.actors.responder,
    )
    (event,) = suite.events(receipt, suite.ledger, "IncidentOpened")
    return event["id"]


def advance_incident(suite, incident_id: int, to: IncidentStatus, rollback_id: int = 0) -> None:
    """Walks an Open incident forward to `to`."""
    fns, responder = suite.ledger.functions, suite.actors.responder
    if to >= IncidentStatus.Acknowledged:
        suite.transact(fns.acknowledge(incident_id), responder)
    if to >= IncidentStatus.Mitigated:
        suite.transact(fns.mitigate(incident_id, rollback_id), responder)
    if to >= IncidentStatus.Resolved:
        suite.transact(fns.resolve(incident_id, hashlib.sha256(b"pm").digest(), "https://wiki.example/pm"),
                       responder)


def send_reverting(suite, fn, sender: str):
    """Mines fn as a real transaction that reverts (fixed gas, no estimate) and returns its receipt."""
    tx_hash = fn.transact({"from": sender, "gas": 3_000_000, "gasPrice": suite.w3.eth.gas_price})
    receipt = suite.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt.status == 0
    assert receipt.logs == []
    return receipt


# ================================================================================== gate


def test_gate_unknown_artifact(suite):
    set_policy(suite, STAGING)
    assert gate(suite, digest_for(SERVICE, "9.9.9"), STAGING) == (Reason.UnknownArtifact, 0, 0)


def test_gate_artifact_of_another_service_is_unknown(suite):
    digest = make_releasable(suite, STAGING, "1.4.2", service="ledger-api")
    set_policy(suite, STAGING)
    assert gate(suite, digest, STAGING, SERVICE) == (Reason.UnknownArtifact, 0, 0)


def test_gate_artifact_revoked(suite):
    digest = make_releasable(suite)
    suite.transact(suite.registry.functions.revoke(digest, SERVICE, "CVE-2025-0001"), suite.actors.registrar)
    assert gate(suite, digest, STAGING) == (Reason.ArtifactRevoked, 0, 0)


def test_gate_no_policy(suite):
    digest, _ = register(suite)
    assert gate(suite, digest, STAGING) == (Reason.NoPolicy, 0, 0)
    set_policy(suite, STAGING)
    assert gate(suite, digest, PROD) == (Reason.NoPolicy, 0, 0)


def test_gate_rejected_by(suite):
    a = suite.actors
    digest = make_releasable(suite, approvers=(a.approver1, a.approver2))
    suite.transact(suite.registry.functions.reject(digest, SERVICE, STAGING, "breaks checkout"), a.approver3)
    assert gate(suite, digest, STAGING) == (Reason.RejectedBy, int(a.approver3, 16), 0)


def test_gate_rejected_by_lifted_after_withdraw(suite):
    a = suite.actors
    digest = make_releasable(suite)
    suite.transact(suite.registry.functions.reject(digest, SERVICE, STAGING, "wait"), a.approver3)
    suite.transact(suite.registry.functions.withdraw(digest, SERVICE, STAGING), a.approver3)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_rejection_comes_before_waiting_period(suite):
    a = suite.actors
    digest, _ = register(suite)
    set_policy(suite, STAGING, min_wait=3600)
    suite.transact(suite.registry.functions.reject(digest, SERVICE, STAGING, "no"), a.approver2)
    assert gate(suite, digest, STAGING) == (Reason.RejectedBy, int(a.approver2, 16), 0)


def test_gate_waiting_period(suite, w3):
    a = suite.actors
    digest, receipt = register(suite)
    registered_at = w3.eth.get_block(receipt.blockNumber).timestamp
    set_policy(suite, STAGING, min_wait=3600)
    approve(suite, digest, STAGING, a.approver1, a.approver2)
    assert gate(suite, digest, STAGING) == (Reason.WaitingPeriod, registered_at + 3600, now(w3))
    advance(w3, 600)
    assert gate(suite, digest, STAGING) == (Reason.WaitingPeriod, registered_at + 3600, now(w3))
    advance(w3, 3600)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_waiting_period_comes_before_approvals(suite, w3):
    digest, receipt = register(suite)
    set_policy(suite, STAGING, min_wait=60)
    registered_at = w3.eth.get_block(receipt.blockNumber).timestamp
    assert gate(suite, digest, STAGING) == (Reason.WaitingPeriod, registered_at + 60, now(w3))


def test_gate_not_enough_approvals(suite):
    a = suite.actors
    digest, _ = register(suite)
    set_policy(suite, STAGING, threshold=3, min_orgs=1)
    assert gate(suite, digest, STAGING) == (Reason.NotEnoughApprovals, 0, 3)
    approve(suite, digest, STAGING, a.approver1)
    assert gate(suite, digest, STAGING) == (Reason.NotEnoughApprovals, 1, 3)
    approve(suite, digest, STAGING, a.approver2)
    assert gate(suite, digest, STAGING) == (Reason.NotEnoughApprovals, 2, 3)
    approve(suite, digest, STAGING, a.approver3)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_approvals_for_another_environment_do_not_count(suite):
    a = suite.actors
    digest = make_releasable(suite, STAGING)
    set_policy(suite, PROD)
    assert gate(suite, digest, PROD) == (Reason.NotEnoughApprovals, 0, 2)
    approve(suite, digest, PROD, a.approver1)
    assert gate(suite, digest, PROD) == (Reason.NotEnoughApprovals, 1, 2)


def test_gate_approvals_expired(suite, w3):
    digest = make_releasable(suite, policy={"ttl": 3600})
    advance(w3, 3601)
    assert gate(suite, digest, STAGING) == (Reason.ApprovalsExpired, 0, 2)


def test_gate_approvals_partly_expired(suite, w3):
    a = suite.actors
    digest, _ = register(suite)
    set_policy(suite, STAGING, ttl=3600)
    approve(suite, digest, STAGING, a.approver1)
    advance(w3, 1800)
    approve(suite, digest, STAGING, a.approver2)
    advance(w3, 1900)  # approver1's approval is now 3700s old, approver2's 1900s
    assert gate(suite, digest, STAGING) == (Reason.ApprovalsExpired, 1, 2)
    approve(suite, digest, STAGING, a.approver3)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_not_enough_approvals_when_too_few_even_counting_expired(suite, w3):
    a = suite.actors
    digest, _ = register(suite)
    set_policy(suite, STAGING, threshold=3, min_orgs=1, ttl=100)
    approve(suite, digest, STAGING, a.approver1)
    advance(w3, 200)
    approve(suite, digest, STAGING, a.approver2)
    # 1 valid + 1 expired < 3: not "expired", simply not enough
    assert gate(suite, digest, STAGING) == (Reason.NotEnoughApprovals, 1, 3)


def test_start_ttl_boundary_is_inclusive(suite, w3):
    """An approval cast at t with ttl T is still valid at t + T and expired at t + T + 1."""
    a = suite.actors
    digest, _ = register(suite)
    set_policy(suite, STAGING, threshold=1, min_orgs=1, ttl=3600)
    receipt = suite.transact(suite.registry.functions.approve(digest, SERVICE, STAGING, "ok"), a.approver1)
    cast_at = w3.eth.get_block(receipt.blockNumber).timestamp
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    w3.provider.make_request("evm_setNextBlockTimestamp", [cast_at + 3601])
    send_reverting(suite, suite.ledger.functions.start(digest, SERVICE, STAGING, 10), a.deployer)
    assert suite.ledger.functions.deploymentCount().call() == 0
    assert gate(suite, digest, STAGING) == (Reason.ApprovalsExpired, 0, 1)
    w3.provider.make_request("evm_revert", [snapshot])
    w3.provider.make_request("evm_setNextBlockTimestamp", [cast_at + 3600])
    deployment_id, _ = start(suite, digest)
    assert deployment_id == 1


def test_gate_not_enough_organisations(suite):
    a = suite.actors
    digest, _ = register(suite)
    set_policy(suite, STAGING, threshold=2, min_orgs=2)
    approve(suite, digest, STAGING, a.approver1, a.approver4)  # both in org 1
    assert gate(suite, digest, STAGING) == (Reason.NotEnoughOrganisations, 1, 2)
    approve(suite, digest, STAGING, a.approver3)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_missing_prior_environment(suite):
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    assert gate(suite, digest, PROD) == (Reason.MissingPriorEnvironment, int.from_bytes(name_key(STAGING)), 0)


def test_gate_missing_prior_environment_until_staging_completes(suite):
    missing = (Reason.MissingPriorEnvironment, int.from_bytes(name_key(STAGING)), 0)
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    staging_id, _ = start(suite, digest, STAGING, 50)
    assert gate(suite, digest, PROD) == missing  # in progress is not enough
    suite.transact(suite.ledger.functions.promote(staging_id, 100), suite.actors.deployer)
    assert gate(suite, digest, PROD) == missing  # 100% but not completed
    complete(suite, staging_id)
    assert gate(suite, digest, PROD) == (Reason.Allowed, 0, 0)


def test_gate_missing_prior_environment_after_staging_rolled_back(suite):
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    staging_id, _ = start(suite, digest, STAGING, 100)
    complete(suite, staging_id)
    assert gate(suite, digest, PROD) == (Reason.Allowed, 0, 0)
    suite.transact(suite.ledger.functions.rollback(staging_id, "bad canary"), suite.actors.deployer)
    assert gate(suite, digest, PROD) == (Reason.MissingPriorEnvironment, int.from_bytes(name_key(STAGING)), 0)


def test_gate_missing_prior_environment_after_staging_failed(suite):
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    staging_id, _ = start(suite, digest, STAGING, 100)
    suite.transact(suite.ledger.functions.fail(staging_id, "smoke tests red"), suite.actors.deployer)
    assert gate(suite, digest, PROD) == (Reason.MissingPriorEnvironment, int.from_bytes(name_key(STAGING)), 0)


def test_gate_prior_environment_of_another_artifact_does_not_count(suite):
    other = make_releasable(suite, STAGING, "1.4.1")
    other_id, _ = start(suite, other, STAGING, 100)
    complete(suite, other_id)
    digest = make_releasable(suite, STAGING, "1.4.2")
    make_releasable_prod(suite, digest)
    assert gate(suite, digest, PROD) == (Reason.MissingPriorEnvironment, int.from_bytes(name_key(STAGING)), 0)


def test_gate_prior_environment_still_met_after_staging_moves_on(suite):
    """Completed once in staging stays completed when a later staging release replaces it."""
    digest = make_releasable(suite, STAGING, "1.4.2")
    make_releasable_prod(suite, digest)
    staging_id, _ = start(suite, digest, STAGING, 100)
    complete(suite, staging_id)
    go_live(suite, "1.4.3", STAGING)
    assert gate(suite, digest, PROD) == (Reason.Allowed, 0, 0)


def test_gate_prior_environment_met_after_rollback_of_same_artifact_redeploy(suite):
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    first, _ = start(suite, digest, STAGING, 100)
    complete(suite, first)
    second, _ = start(suite, digest, STAGING, 100)  # redeploy of the same artifact (e.g. config refresh)
    complete(suite, second)
    suite.transact(suite.ledger.functions.rollback(second, "refresh broke"), suite.actors.deployer)
    assert state(suite, STAGING) == (first, 0)
    assert status_of(suite, first) == Status.Completed  # the same artifact is live in staging
    assert gate(suite, digest, PROD) == (Reason.Allowed, 0, 0)


def test_gate_frozen_by_incident_at_freeze_severity(suite):
    digest = make_releasable(suite, policy={"freeze": 2})
    open_incident(suite, STAGING, severity=2)
    assert gate(suite, digest, STAGING) == (Reason.FrozenByIncident, 1, 2)  # (freezing incidents, most severe)


def test_gate_frozen_by_incident_more_severe(suite):
    digest = make_releasable(suite, policy={"freeze": 2})
    open_incident(suite, STAGING, severity=1)
    assert gate(suite, digest, STAGING) == (Reason.FrozenByIncident, 1, 1)


def test_gate_not_frozen_by_less_severe_incident(suite):
    digest = make_releasable(suite, policy={"freeze": 2})
    open_incident(suite, STAGING, severity=3)
    open_incident(suite, STAGING, severity=4)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_frozen_reports_the_freezing_incident_among_several(suite):
    digest = make_releasable(suite, policy={"freeze": 2})
    open_incident(suite, STAGING, severity=4)
    open_incident(suite, STAGING, severity=2)
    open_incident(suite, STAGING, severity=1)
    open_incident(suite, STAGING, severity=2)
    assert gate(suite, digest, STAGING) == (Reason.FrozenByIncident, 3, 1)  # the sev-4 one does not freeze


def test_gate_frozen_only_for_the_incident_target(suite):
    digest = make_releasable(suite, STAGING, policy={"freeze": 4})
    open_incident(suite, PROD, severity=1)
    open_incident(suite, STAGING, severity=1, service="ledger-api")
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_frozen_until_incident_resolved(suite):
    digest = make_releasable(suite, policy={"freeze": 2})
    incident = open_incident(suite, STAGING, severity=2)
    advance_incident(suite, incident, IncidentStatus.Acknowledged)
    assert gate(suite, digest, STAGING) == (Reason.FrozenByIncident, 1, 2)
    suite.transact(suite.ledger.functions.mitigate(incident, 0), suite.actors.responder)
    assert gate(suite, digest, STAGING) == (Reason.FrozenByIncident, 1, 2)  # mitigated is still open
    suite.transact(suite.ledger.functions.resolve(incident, ZERO32, ""), suite.actors.responder)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_freeze_severity_zero_never_freezes(suite):
    digest = make_releasable(suite, policy={"freeze": 0})
    open_incident(suite, STAGING, severity=1)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_registry_reasons_come_before_freeze(suite):
    digest, _ = register(suite)
    set_policy(suite, STAGING, freeze=4)
    open_incident(suite, STAGING, severity=1)
    assert gate(suite, digest, STAGING) == (Reason.NotEnoughApprovals, 0, 2)


def test_gate_missing_prior_comes_before_freeze(suite):
    digest = make_releasable(suite, STAGING)
    set_policy(suite, PROD, prior=STAGING, freeze=4)
    approve(suite, digest, PROD, suite.actors.approver1, suite.actors.approver2)
    open_incident(suite, PROD, severity=1)
    assert gate(suite, digest, PROD) == (Reason.MissingPriorEnvironment, int.from_bytes(name_key(STAGING)), 0)


def test_gate_allowed(suite):
    digest = make_releasable(suite)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_gate_invalid_name(suite):
    digest = make_releasable(suite)
    long_name = "e" * 65
    assert suite.revert_of(suite.ledger.functions.gate(digest, SERVICE, long_name), suite.actors.outsider) == (
        "InvalidName", {"name": long_name})
    assert suite.revert_of(suite.ledger.functions.gate(digest, "", STAGING), suite.actors.outsider) == (
        "InvalidName", {"name": ""})


# ================================================================================== start


def test_start_happy_path(suite, w3):
    a = suite.actors
    digest = make_releasable(suite)
    assert suite.ledger.functions.deploymentCount().call() == 0
    receipt = suite.transact(suite.ledger.functions.start(digest, SERVICE, STAGING, 10), a.deployer)
    assert suite.events(receipt, suite.ledger, "DeploymentStarted") == [{
        "id": 1,
        "digest": digest,
        "serviceKey": name_key(SERVICE),
        "environmentKey": name_key(STAGING),
        "service": SERVICE,
        "environment": STAGING,
        "percent": 10,
        "previous": 0,
        "deployer": a.deployer,
    }]
    started_at = w3.eth.get_block(receipt.blockNumber).timestamp
    assert deployment(suite, 1) == (
        artifact_id(SERVICE, digest), target_key(SERVICE, STAGING), 0, started_at, 10, Status.InProgress, Verdict.None_)
    assert state(suite) == (0, 1)
    assert suite.ledger.functions.deploymentCount().call() == 1


def test_start_previous_is_the_live_deployment(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    receipt = suite.transact(suite.ledger.functions.start(digest, SERVICE, STAGING, 25), suite.actors.deployer)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentStarted")
    assert (event["id"], event["previous"], event["percent"]) == (2, live, 25)
    assert deployment(suite, 2)[2] == live
    assert state(suite) == (live, 2)


def test_start_at_full_percent(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    assert deployment(suite, deployment_id)[4] == 100


def test_start_gate_denied(suite):
    digest, _ = register(suite)
    set_policy(suite, STAGING)
    approve(suite, digest, STAGING, suite.actors.approver1)
    assert suite.revert_of(suite.ledger.functions.start(digest, SERVICE, STAGING, 10), suite.actors.deployer) == (
        "GateDenied", {"reason": Reason.NotEnoughApprovals, "detailA": 1, "detailB": 2})


def test_start_gate_denied_unknown_artifact(suite):
    set_policy(suite, STAGING)
    fn = suite.ledger.functions.start(digest_for(SERVICE, "0.0.0"), SERVICE, STAGING, 10)
    assert suite.revert_of(fn, suite.actors.deployer) == (
        "GateDenied", {"reason": Reason.UnknownArtifact, "detailA": 0, "detailB": 0})


def test_start_gate_denied_frozen(suite):
    digest = make_releasable(suite)
    open_incident(suite, STAGING, severity=1)
    assert suite.revert_of(suite.ledger.functions.start(digest, SERVICE, STAGING, 10), suite.actors.deployer) == (
        "GateDenied", {"reason": Reason.FrozenByIncident, "detailA": 1, "detailB": 1})


def test_start_gate_denied_missing_prior_environment(suite):
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    assert suite.revert_of(suite.ledger.functions.start(digest, SERVICE, PROD, 10), suite.actors.deployer) == (
        "GateDenied",
        {"reason": Reason.MissingPriorEnvironment, "detailA": int.from_bytes(name_key(STAGING)), "detailB": 0})


def test_start_prod_after_staging_completed(suite):
    digest = make_releasable(suite, STAGING)
    make_releasable_prod(suite, digest)
    staging_id, _ = start(suite, digest, STAGING, 100)
    complete(suite, staging_id)
    prod_id, receipt = start(suite, digest, PROD, 5)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentStarted")
    assert (event["environment"], event["environmentKey"], event["previous"]) == (PROD, name_key(PROD), 0)
    assert state(suite, PROD) == (0, prod_id)
    assert state(suite, STAGING) == (staging_id, 0)


@pytest.mark.parametrize("percent", [0, 101, 255])
def test_start_invalid_percent(suite, percent):
    digest = make_releasable(suite)
    assert suite.revert_of(suite.ledger.functions.start(digest, SERVICE, STAGING, percent), suite.actors.deployer) == (
        "InvalidPercent", {"percent": percent})


def test_start_invalid_name(suite):
    digest = make_releasable(suite)
    fn = suite.ledger.functions.start(digest, SERVICE, "", 10)
    assert suite.revert_of(fn, suite.actors.deployer) == ("InvalidName", {"name": ""})


def test_start_rollout_in_progress(suite):
    first = make_releasable(suite, STAGING, "1.4.1")
    active, _ = start(suite, first)
    second = make_releasable(suite, STAGING, "1.4.2", set_the_policy=False, expect_allowed=False)
    assert suite.revert_of(suite.ledger.functions.start(second, SERVICE, STAGING, 10), suite.actors.deployer) == (
        "GateDenied", {"reason": Reason.RolloutInProgress, "detailA": active, "detailB": 0})
    assert gate(suite, second, STAGING) == (Reason.RolloutInProgress, active, 0)  # the gate answers as start would


def test_start_rollout_in_progress_is_per_target(suite):
    digest = make_releasable(suite, STAGING)
    start(suite, digest, STAGING)
    other = make_releasable(suite, STAGING, "2.0.0", service="ledger-api")
    other_id, _ = start(suite, other, STAGING, 10, service="ledger-api")
    assert other_id == 2
    assert state(suite, STAGING, "ledger-api") == (0, 2)
    assert state(suite, STAGING) == (0, 1)


def test_start_after_failed_rollout(suite):
    digest = make_releasable(suite)
    first, _ = start(suite, digest)
    suite.transact(suite.ledger.functions.fail(first, "canary red"), suite.actors.deployer)
    second, _ = start(suite, digest)
    assert second == 2
    assert state(suite) == (0, 2)


# ================================================================================== promote


def test_promote_raises_percent(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 10)
    receipt = suite.transact(suite.ledger.functions.promote(deployment_id, 50), suite.actors.deployer)
    assert suite.events(receipt, suite.ledger, "DeploymentPromoted") == [{
        "id": deployment_id, "target": target_key(SERVICE, STAGING), "fromPercent": 10, "toPercent": 50,
        "deployer": suite.actors.deployer,
    }]
    assert deployment(suite, deployment_id)[4] == 50
    assert deployment(suite, deployment_id)[5] == Status.InProgress
    receipt = suite.transact(suite.ledger.functions.promote(deployment_id, 100), suite.actors.deployer)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentPromoted")
    assert (event["fromPercent"], event["toPercent"]) == (50, 100)
    assert deployment(suite, deployment_id)[4] == 100


@pytest.mark.parametrize("requested", [0, 5, 50])
def test_promote_percent_not_increasing(suite, requested):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 50)
    assert suite.revert_of(suite.ledger.functions.promote(deployment_id, requested), suite.actors.deployer) == (
        "PercentNotIncreasing", {"id": deployment_id, "current": 50, "requested": requested})


@pytest.mark.parametrize("requested", [101, 255])
def test_promote_invalid_percent(suite, requested):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 50)
    assert suite.revert_of(suite.ledger.functions.promote(deployment_id, requested), suite.actors.deployer) == (
        "InvalidPercent", {"percent": requested})


# ================================================================================== recordAnalysis


def test_recordAnalysis_emits_verdict(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 10)
    suite.transact(suite.ledger.functions.promote(deployment_id, 25), suite.actors.deployer)
    report = hashlib.sha256(b"kayenta report").digest()
    fn = suite.ledger.functions.recordAnalysis(deployment_id, 9_350, Verdict.Pass, report,
                                               "s3://canary/reports/1.json", "kayenta")
    receipt = suite.transact(fn, suite.actors.deployer)
    assert suite.events(receipt, suite.ledger, "CanaryAnalysisRecorded") == [{
        "id": deployment_id,
        "target": target_key(SERVICE, STAGING),
        "percent": 25,
        "scoreBasisPoints": 9_350,
        "verdict": Verdict.Pass,
        "reportDigest": report,
        "reportUri": "s3://canary/reports/1.json",
        "judge": "kayenta",
        "recorder": suite.actors.deployer,
    }]
    assert deployment(suite, deployment_id)[4:] == (25, Status.InProgress, Verdict.Pass)


@pytest.mark.parametrize("score,verdict", [(0, Verdict.Fail), (10_000, Verdict.Pass), (5_000, Verdict.Marginal)])
def test_recordAnalysis_bounds_accepted(suite, score, verdict):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest)
    receipt = suite.transact(
        suite.ledger.functions.recordAnalysis(deployment_id, score, verdict, ZERO32, "", ""), suite.actors.deployer)
    (event,) = suite.events(receipt, suite.ledger, "CanaryAnalysisRecorded")
    assert (event["scoreBasisPoints"], event["verdict"]) == (score, verdict)


@pytest.mark.parametrize("score", [10_001, 65_535])
def test_recordAnalysis_invalid_score(suite, score):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest)
    fn = suite.ledger.functions.recordAnalysis(deployment_id, score, Verdict.Pass, ZERO32, "", "kayenta")
    assert suite.revert_of(fn, suite.actors.deployer) == ("InvalidScore", {"scoreBasisPoints": score})


def test_recordAnalysis_invalid_verdict(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest)
    fn = suite.ledger.functions.recordAnalysis(deployment_id, 9_000, Verdict.None_, ZERO32, "", "kayenta")
    assert suite.revert_of(fn, suite.actors.deployer) == ("InvalidVerdict", {"verdict": 0})


# ================================================================================== complete


def test_complete_first_deployment_becomes_live(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    receipt = complete(suite, deployment_id)
    assert suite.events(receipt, suite.ledger, "DeploymentCompleted") == [{
        "id": deployment_id, "target": target_key(SERVICE, STAGING), "replaced": 0,
        "deployer": suite.actors.deployer,
    }]
    assert state(suite) == (deployment_id, 0)
    assert status_of(suite, deployment_id) == Status.Completed


def test_complete_replaces_the_live_deployment(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    deployment_id, _ = start(suite, digest, STAGING, 10)
    suite.transact(suite.ledger.functions.promote(deployment_id, 100), suite.actors.deployer)
    receipt = complete(suite, deployment_id)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentCompleted")
    assert (event["id"], event["replaced"]) == (deployment_id, live)
    assert state(suite) == (deployment_id, 0)
    assert status_of(suite, live) == Status.Completed  # the replaced one keeps its record
    assert deployment(suite, deployment_id)[2] == live


@pytest.mark.parametrize("percent", [1, 99])
def test_complete_rollout_incomplete(suite, percent):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, percent)
    assert suite.revert_of(suite.ledger.functions.complete(deployment_id), suite.actors.deployer) == (
        "RolloutIncomplete", {"id": deployment_id, "percent": percent})


def test_complete_artifact_revoked_during_rollout(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    suite.transact(suite.registry.functions.revoke(digest, SERVICE, "CVE-2025-0001"), suite.actors.registrar)
    assert suite.revert_of(suite.ledger.functions.complete(deployment_id), suite.actors.deployer) == (
        "StepDenied", {"id": deployment_id, "reason": Reason.ArtifactRevoked, "detailA": 0, "detailB": 0})
    # the rollout can still be failed so the target is free again
    suite.transact(suite.ledger.functions.fail(deployment_id, "artifact revoked"), suite.actors.deployer)
    assert state(suite) == (0, 0)


def test_complete_rechecks_the_gate(suite):
    """v1 pinned that only revocation stops a completion; v2 re-checks the gate (test_findings.py
    replays each way in which a rollout stops being allowed)."""
    a = suite.actors
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    suite.transact(suite.registry.functions.reject(digest, SERVICE, STAGING, "late veto"), a.approver3)
    assert suite.revert_of(suite.ledger.functions.complete(deployment_id), a.deployer) == (
        "StepDenied", {"id": deployment_id, "reason": Reason.RejectedBy, "detailA": int(a.approver3, 16), "detailB": 0})
    suite.transact(suite.registry.functions.withdraw(digest, SERVICE, STAGING), a.approver3)
    complete(suite, deployment_id)
    assert state(suite) == (deployment_id, 0)


def test_steps_pass_with_their_own_rollout_in_progress(suite):
    """The rollout being stepped is the active one; the gate's RolloutInProgress is about others."""
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 10)
    assert gate(suite, digest, STAGING) == (Reason.RolloutInProgress, deployment_id, 0)
    suite.transact(suite.ledger.functions.promote(deployment_id, 100), suite.actors.deployer)
    complete(suite, deployment_id)
    assert gate(suite, digest, STAGING) == (Reason.Allowed, 0, 0)


def test_canary_marginal_blocks_until_a_later_pass(suite):
    fns, deployer = suite.ledger.functions, suite.actors.deployer
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 10)
    suite.transact(fns.recordAnalysis(deployment_id, 6_000, Verdict.Marginal, ZERO32, "", "kayenta"), deployer)
    assert suite.revert_of(fns.promote(deployment_id, 50), deployer) == (
        "CanaryBlocks", {"id": deployment_id, "verdict": Verdict.Marginal})
    suite.transact(fns.recordAnalysis(deployment_id, 9_500, Verdict.Pass, ZERO32, "", "kayenta"), deployer)
    suite.transact(fns.promote(deployment_id, 100), deployer)
    assert deployment(suite, deployment_id)[4:] == (100, Status.InProgress, Verdict.Pass)


def test_canary_fail_is_never_undone(suite):
    fns, deployer = suite.ledger.functions, suite.actors.deployer
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    suite.transact(fns.recordAnalysis(deployment_id, 1_000, Verdict.Fail, ZERO32, "", "kayenta"), deployer)
    receipt = suite.transact(fns.recordAnalysis(deployment_id, 9_900, Verdict.Pass, ZERO32, "", "kayenta"), deployer)
    assert events(receipt, suite.ledger, "CanaryAnalysisRecorded")[0]["verdict"] == Verdict.Pass  # recorded as said
    assert deployment(suite, deployment_id)[6] == Verdict.Fail  # but the rollout stays blocked
    assert suite.revert_of(fns.complete(deployment_id), deployer) == (
        "CanaryBlocks", {"id": deployment_id, "verdict": Verdict.Fail})
    suite.transact(fns.fail(deployment_id, "canary failed"), deployer)
    assert state(suite) == (0, 0)


def test_completions_are_counted_per_artifact_and_target(suite):
    fns = suite.ledger.functions
    digest = make_releasable(suite)
    key = (artifact_id(SERVICE, digest), target_key(SERVICE, STAGING))
    ids = []
    for expected in (1, 2):
        deployment_id, _ = start(suite, digest, STAGING, 100)
        complete(suite, deployment_id)
        ids.append(deployment_id)
        assert fns.completions(*key).call() == expected
    assert fns.completions(artifact_id(SERVICE, digest), target_key(SERVICE, PROD)).call() == 0
    suite.transact(fns.rollback(ids[1], "redeploy broke"), suite.actors.deployer)
    assert fns.completions(*key).call() == 1
    failed, _ = start(suite, digest, STAGING, 100)
    suite.transact(fns.fail(failed, "no"), suite.actors.deployer)
    assert fns.completions(*key).call() == 1  # a failed or in-progress rollout counts for nothing


# ================================================================================== fail


def test_fail_keeps_the_live_deployment(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    deployment_id, _ = start(suite, digest, STAGING, 10)
    receipt = suite.transact(suite.ledger.functions.fail(deployment_id, "p99 latency +40%"), suite.actors.deployer)
    assert suite.events(receipt, suite.ledger, "DeploymentFailed") == [{
        "id": deployment_id, "target": target_key(SERVICE, STAGING), "reason": "p99 latency +40%",
        "deployer": suite.actors.deployer,
    }]
    assert state(suite) == (live, 0)
    assert status_of(suite, deployment_id) == Status.Failed
    assert deployment(suite, deployment_id)[4] == 10


# ================================================================================== rollback


def test_rollback_in_progress_restores_live(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    deployment_id, _ = start(suite, digest, STAGING, 30)
    receipt = suite.transact(suite.ledger.functions.rollback(deployment_id, "error budget burn"),
                             suite.actors.deployer)
    assert suite.events(receipt, suite.ledger, "DeploymentRolledBack") == [{
        "id": deployment_id, "target": target_key(SERVICE, STAGING), "restored": live,
        "fromStatus": Status.InProgress, "reason": "error budget burn", "deployer": suite.actors.deployer,
    }]
    assert state(suite) == (live, 0)
    assert status_of(suite, deployment_id) == Status.RolledBack
    assert status_of(suite, live) == Status.Completed


def test_rollback_in_progress_without_live(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest)
    receipt = suite.transact(suite.ledger.functions.rollback(deployment_id, "abort"), suite.actors.deployer)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentRolledBack")
    assert (event["restored"], event["fromStatus"]) == (0, Status.InProgress)
    assert state(suite) == (0, 0)


def test_rollback_live_restores_previous(suite):
    previous = go_live(suite, "1.4.1")
    live = go_live(suite, "1.4.2")
    assert state(suite) == (live, 0)
    receipt = suite.transact(suite.ledger.functions.rollback(live, "incident 7"), suite.actors.deployer)
    assert suite.events(receipt, suite.ledger, "DeploymentRolledBack") == [{
        "id": live, "target": target_key(SERVICE, STAGING), "restored": previous,
        "fromStatus": Status.Completed, "reason": "incident 7", "deployer": suite.actors.deployer,
    }]
    assert state(suite) == (previous, 0)
    assert status_of(suite, live) == Status.RolledBack
    assert status_of(suite, previous) == Status.Completed


def test_rollback_live_chain_back_to_none(suite):
    first = go_live(suite, "1.4.1")
    second = go_live(suite, "1.4.2")
    suite.transact(suite.ledger.functions.rollback(second, "bad"), suite.actors.deployer)
    receipt = suite.transact(suite.ledger.functions.rollback(first, "also bad"), suite.actors.deployer)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentRolledBack")
    assert (event["id"], event["restored"], event["fromStatus"]) == (first, 0, Status.Completed)
    assert state(suite) == (0, 0)


def test_rollback_not_live_deployment(suite):
    replaced = go_live(suite, "1.4.1")
    live = go_live(suite, "1.4.2")
    assert suite.revert_of(suite.ledger.functions.rollback(replaced, "too late"), suite.actors.deployer) == (
        "NotLiveDeployment", {"id": replaced, "liveId": live})


def test_rollback_live_while_rollout_in_progress(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    active, _ = start(suite, digest)
    assert suite.revert_of(suite.ledger.functions.rollback(live, "incident"), suite.actors.deployer) == (
        "RolloutInProgress", {"target": target_key(SERVICE, STAGING), "activeId": active})


def test_rollback_in_progress_refuses_to_restore_a_revoked_live(suite):
    """A rollback never returns to a revoked artifact; `fail` ends the rollout instead."""
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    active, _ = start(suite, digest)
    live_digest = digest_for(SERVICE, "1.4.1")
    suite.transact(suite.registry.functions.revoke(live_digest, SERVICE, "backdoored"), suite.actors.registrar)
    assert suite.revert_of(suite.ledger.functions.rollback(active, "abort"), suite.actors.deployer) == (
        "RestoresRevokedArtifact", {"id": active, "restoredId": live, "artifactId": artifact_id(SERVICE, live_digest)})
    suite.transact(suite.ledger.functions.fail(active, "abort"), suite.actors.deployer)
    assert state(suite) == (live, 0)


def test_gate_freeze_comes_before_rollout_in_progress(suite):
    digest = make_releasable(suite, STAGING, "1.4.1")
    start(suite, digest)
    other = make_releasable(suite, STAGING, "1.4.2", set_the_policy=False, expect_allowed=False)
    open_incident(suite, STAGING, severity=1)
    assert gate(suite, other, STAGING) == (Reason.FrozenByIncident, 1, 1)


def test_rollback_then_new_rollout_records_restored_as_previous(suite):
    previous = go_live(suite, "1.4.1")
    live = go_live(suite, "1.4.2")
    suite.transact(suite.ledger.functions.rollback(live, "bad"), suite.actors.deployer)
    digest = make_releasable(suite, STAGING, "1.4.3")
    _, receipt = start(suite, digest)
    (event,) = suite.events(receipt, suite.ledger, "DeploymentStarted")
    assert event["previous"] == previous


# ================================================================================== state machine


def _to_terminal(suite, terminal: str) -> int:
    """A deployment driven to Completed, Failed, RolledBack (from in progress) or RolledBack (from live)."""
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    fns, deployer = suite.ledger.functions, suite.actors.deployer
    if terminal == "Completed":
        complete(suite, deployment_id)
    elif terminal == "Failed":
        suite.transact(fns.fail(deployment_id, "red"), deployer)
    elif terminal == "RolledBackInProgress":
        suite.transact(fns.rollback(deployment_id, "abort"), deployer)
    elif terminal == "RolledBackLive":
        complete(suite, deployment_id)
        suite.transact(fns.rollback(deployment_id, "incident"), deployer)
    return deployment_id


TERMINAL_STATUS = {
    "Completed": Status.Completed,
    "Failed": Status.Failed,
    "RolledBackInProgress": Status.RolledBack,
    "RolledBackLive": Status.RolledBack,
}

IN_PROGRESS_ONLY = {
    "promote": lambda fns, i: fns.promote(i, 100),
    "recordAnalysis": lambda fns, i: fns.recordAnalysis(i, 9_000, Verdict.Pass, ZERO32, "", "kayenta"),
    "complete": lambda fns, i: fns.complete(i),
    "fail": lambda fns, i: fns.fail(i, "late"),
}


@pytest.mark.parametrize("terminal", list(TERMINAL_STATUS))
@pytest.mark.parametrize("operation", list(IN_PROGRESS_ONLY))
def test_state_machine_in_progress_only_operations_after_terminal(suite, operation, terminal):
    deployment_id = _to_terminal(suite, terminal)
    actual = TERMINAL_STATUS[terminal]
    assert status_of(suite, deployment_id) == actual
    fn = IN_PROGRESS_ONLY[operation](suite.ledger.functions, deployment_id)
    assert suite.revert_of(fn, suite.actors.deployer) == (
        "DeploymentStateInvalid", {"id": deployment_id, "expected": Status.InProgress, "actual": actual})


@pytest.mark.parametrize("terminal", ["Failed", "RolledBackInProgress", "RolledBackLive"])
def test_rollback_after_terminal(suite, terminal):
    deployment_id = _to_terminal(suite, terminal)
    actual = TERMINAL_STATUS[terminal]
    fn = suite.ledger.functions.rollback(deployment_id, "again")
    assert suite.revert_of(fn, suite.actors.deployer) == (
        "DeploymentStateInvalid", {"id": deployment_id, "expected": Status.InProgress, "actual": actual})


UNKNOWN_DEPLOYMENT_CALLS = {
    "promote": lambda fns, i: fns.promote(i, 50),
    "recordAnalysis": lambda fns, i: fns.recordAnalysis(i, 9_000, Verdict.Pass, ZERO32, "", "kayenta"),
    "complete": lambda fns, i: fns.complete(i),
    "fail": lambda fns, i: fns.fail(i, "x"),
    "rollback": lambda fns, i: fns.rollback(i, "x"),
    "getDeployment": lambda fns, i: fns.getDeployment(i),
}


@pytest.mark.parametrize("bad_id", [0, 2, 2**256 - 1])
@pytest.mark.parametrize("operation", list(UNKNOWN_DEPLOYMENT_CALLS))
def test_state_machine_unknown_deployment(suite, operation, bad_id):
    digest = make_releasable(suite)
    start(suite, digest)  # id 1 exists; 2 was never used
    fn = UNKNOWN_DEPLOYMENT_CALLS[operation](suite.ledger.functions, bad_id)
    assert suite.revert_of(fn, suite.actors.deployer) == ("UnknownDeployment", {"id": bad_id})


# ================================================================================== incidents


def test_openIncident_emits_and_stores(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    active, _ = start(suite, digest)
    details = hashlib.sha256(b"incident details").digest()
    fn = suite.ledger.functions.openIncident(
        (SERVICE, STAGING, 2, [active, live], "5xx spike", details, "https://status.example/incidents/42"))
    receipt = suite.transact(fn, suite.actors.responder)
    assert suite.events(receipt, suite.ledger, "IncidentOpened") == [{
        "id": 1,
        "serviceKey": name_key(SERVICE),
        "environmentKey": name_key(STAGING),
        "service": SERVICE,
        "environment": STAGING,
        "severity": 2,
        "suspects": [active, live],
        "title": "5xx spike",
        "detailsDigest": details,
        "detailsUri": "https://status.example/incidents/42",
        "responder": suite.actors.responder,
    }]
    assert tuple(suite.ledger.functions.getIncident(1).call()) == (
        target_key(SERVICE, STAGING), 2, IncidentStatus.Open, 0)
    assert suite.ledger.functions.incidentCount().call() == 1
    assert list(suite.ledger.functions.openIncidentCounts(SERVICE, STAGING).call()) == [0, 1, 0, 0]


def test_openIncident_without_suspects(suite):
    incident = open_incident(suite, PROD, severity=4)
    assert incident == 1
    assert tuple(suite.ledger.functions.getIncident(1).call()) == (target_key(SERVICE, PROD), 4, IncidentStatus.Open, 0)


@pytest.mark.parametrize("severity", [0, 5, 255])
def test_openIncident_invalid_severity(suite, severity):
    fn = suite.ledger.functions.openIncident(incident_input(severity=severity))
    assert suite.revert_of(fn, suite.actors.responder) == ("InvalidSeverity", {"severity": severity})


def test_openIncident_empty_title(suite):
    fn = suite.ledger.functions.openIncident(incident_input(title=""))
    assert suite.revert_of(fn, suite.actors.responder) == ("EmptyTitle", {})


def test_openIncident_invalid_name(suite):
    fn = suite.ledger.functions.openIncident(incident_input(environment=""))
    assert suite.revert_of(fn, suite.actors.responder) == ("InvalidName", {"name": ""})


@pytest.mark.parametrize("bad_suspect", [0, 2, 999])
def test_openIncident_unknown_suspect(suite, bad_suspect):
    digest = make_releasable(suite)
    known, _ = start(suite, digest)
    fn = suite.ledger.functions.openIncident(incident_input(suspects=[known, bad_suspect]))
    assert suite.revert_of(fn, suite.actors.responder) == ("UnknownDeployment", {"id": bad_suspect})


def test_acknowledge_mitigate_resolve_lifecycle_with_rollback(suite):
    responder = suite.actors.responder
    fns = suite.ledger.functions
    target = target_key(SERVICE, STAGING)
    previous = go_live(suite, "1.4.1")
    live = go_live(suite, "1.4.2")
    incident = open_incident(suite, STAGING, severity=1, suspects=[live])

    receipt = suite.transact(fns.acknowledge(incident), responder)
    assert suite.events(receipt, suite.ledger, "IncidentAcknowledged") == [
        {"id": incident, "target": target, "responder": responder}]
    assert fns.getIncident(incident).call()[2] == IncidentStatus.Acknowledged

    suite.transact(fns.rollback(live, f"incident {incident}"), suite.actors.deployer)
    assert state(suite) == (previous, 0)
    receipt = suite.transact(fns.mitigate(incident, live), responder)
    assert suite.events(receipt, suite.ledger, "IncidentMitigated") == [
        {"id": incident, "target": target, "rollbackId": live, "responder": responder}]
    assert fns.getIncident(incident).call()[2] == IncidentStatus.Mitigated
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [1, 0, 0, 0]  # mitigated is still open

    postmortem = hashlib.sha256(b"postmortem").digest()
    receipt = suite.transact(fns.resolve(incident, postmortem, "https://wiki.example/pm/1"), responder)
    assert events(receipt, suite.ledger, "IncidentResolveApproved") == [{
        "id": incident, "target": target, "responder": responder, "org": 2, "organisations": 1, "needed": 1}]
    assert events(receipt, suite.ledger, "IncidentResolved") == [{
        "id": incident, "target": target, "postmortemDigest": postmortem,
        "postmortemUri": "https://wiki.example/pm/1", "responder": responder,
    }]
    assert tuple(fns.getIncident(incident).call()) == (target, 1, IncidentStatus.Resolved, 1 << 2)
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [0, 0, 0, 0]
    assert fns.incidentCount().call() == 1


def test_mitigate_without_rollback(suite):
    incident = open_incident(suite)
    advance_incident(suite, incident, IncidentStatus.Acknowledged)
    receipt = suite.transact(suite.ledger.functions.mitigate(incident, 0), suite.actors.responder)
    assert suite.events(receipt, suite.ledger, "IncidentMitigated") == [{
        "id": incident, "target": target_key(SERVICE, STAGING), "rollbackId": 0,
        "responder": suite.actors.responder}]
    assert suite.ledger.functions.getIncident(incident).call()[2] == IncidentStatus.Mitigated


def test_mitigate_with_rollback_of_in_progress(suite):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest)
    suite.transact(suite.ledger.functions.rollback(deployment_id, "abort"), suite.actors.deployer)
    incident = open_incident(suite, suspects=[deployment_id])
    advance_incident(suite, incident, IncidentStatus.Acknowledged)
    receipt = suite.transact(suite.ledger.functions.mitigate(incident, deployment_id), suite.actors.responder)
    (event,) = suite.events(receipt, suite.ledger, "IncidentMitigated")
    assert event["rollbackId"] == deployment_id


# (incident driven to, call, expected, actual)
# v1 also refused mitigate and resolve from Open and resolve from Acknowledged; v2 allows them
# (as incident tools do), see test_incident_valid_shortcuts.
INCIDENT_BAD_TRANSITIONS = [
    (IncidentStatus.Acknowledged, "acknowledge", IncidentStatus.Open, IncidentStatus.Acknowledged),
    (IncidentStatus.Mitigated, "acknowledge", IncidentStatus.Open, IncidentStatus.Mitigated),
    (IncidentStatus.Mitigated, "mitigate", IncidentStatus.Acknowledged, IncidentStatus.Mitigated),
    (IncidentStatus.Resolved, "acknowledge", IncidentStatus.Open, IncidentStatus.Resolved),
    (IncidentStatus.Resolved, "mitigate", IncidentStatus.Acknowledged, IncidentStatus.Resolved),
    (IncidentStatus.Resolved, "resolve", IncidentStatus.Mitigated, IncidentStatus.Resolved),
]

INCIDENT_CALLS = {
    "acknowledge": lambda fns, i: fns.acknowledge(i),
    "mitigate": lambda fns, i: fns.mitigate(i, 0),
    "resolve": lambda fns, i: fns.resolve(i, ZERO32, ""),
}


@pytest.mark.parametrize("driven_to,call,expected,actual", INCIDENT_BAD_TRANSITIONS,
                         ids=[f"{c}-when-{d.name}" for d, c, _, _ in INCIDENT_BAD_TRANSITIONS])
def test_incident_state_invalid(suite, driven_to, call, expected, actual):
    incident = open_incident(suite)
    advance_incident(suite, incident, driven_to)
    fn = INCIDENT_CALLS[call](suite.ledger.functions, incident)
    assert suite.revert_of(fn, suite.actors.responder) == (
        "IncidentStateInvalid", {"id": incident, "expected": expected, "actual": actual})


@pytest.mark.parametrize("bad_id", [0, 2])
@pytest.mark.parametrize("call", ["acknowledge", "mitigate", "resolve", "getIncident"])
def test_incident_unknown(suite, call, bad_id):
    open_incident(suite)  # id 1 exists
    fns = suite.ledger.functions
    fn = fns.getIncident(bad_id) if call == "getIncident" else INCIDENT_CALLS[call](fns, bad_id)
    assert suite.revert_of(fn, suite.actors.responder) == ("UnknownIncident", {"id": bad_id})


@pytest.mark.parametrize("kind", ["never-used", "in-progress", "completed", "failed"])
def test_mitigate_rollback_not_found(suite, kind):
    digest = make_releasable(suite)
    deployment_id, _ = start(suite, digest, STAGING, 100)
    if kind == "never-used":
        deployment_id = 7
    elif kind == "completed":
        complete(suite, deployment_id)
    elif kind == "failed":
        suite.transact(suite.ledger.functions.fail(deployment_id, "red"), suite.actors.deployer)
    incident = open_incident(suite)
    advance_incident(suite, incident, IncidentStatus.Acknowledged)
    fn = suite.ledger.functions.mitigate(incident, deployment_id)
    assert suite.revert_of(fn, suite.actors.responder) == (
        "RollbackNotFound", {"incidentId": incident, "rollbackId": deployment_id})


def test_openIncidentCounts_before_and_after_resolve(suite):
    fns = suite.ledger.functions
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [0, 0, 0, 0]
    first = open_incident(suite, STAGING, severity=1)
    second = open_incident(suite, STAGING, severity=3)
    third = open_incident(suite, STAGING, severity=2)
    elsewhere = open_incident(suite, PROD, severity=1)
    assert (first, second, third, elsewhere) == (1, 2, 3, 4)
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [1, 1, 1, 0]
    assert list(fns.openIncidentCounts(SERVICE, PROD).call()) == [1, 0, 0, 0]
    advance_incident(suite, first, IncidentStatus.Resolved)
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [0, 1, 1, 0]
    advance_incident(suite, third, IncidentStatus.Mitigated)
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [0, 1, 1, 0]  # mitigated is not resolved
    suite.transact(fns.resolve(third, ZERO32, ""), suite.actors.responder)
    assert list(fns.openIncidentCounts(SERVICE, STAGING).call()) == [0, 0, 1, 0]
    assert list(fns.openIncidentCounts(SERVICE, PROD).call()) == [1, 0, 0, 0]
    assert fns.incidentCount().call() == 4


@pytest.mark.parametrize("path", [("mitigate",), ("resolve",), ("acknowledge", "resolve")],
                         ids=["mitigate-from-open", "resolve-from-open", "resolve-from-acknowledged"])
def test_incident_valid_shortcuts(suite, path):
    fns, responder = suite.ledger.functions, suite.actors.responder
    incident = open_incident(suite)
    for call in path:
        suite.transact(INCIDENT_CALLS[call](fns, incident), responder)
    expected = IncidentStatus.Mitigated if path[-1] == "mitigate" else IncidentStatus.Resolved
    assert fns.getIncident(incident).call()[2] == expected


def test_attachPostmortem_at_any_time(suite):
    fns, responder = suite.ledger.functions, suite.actors.responder
    incident = open_incident(suite)
    for status in (IncidentStatus.Open, IncidentStatus.Resolved):
        if status == IncidentStatus.Resolved:
            suite.transact(fns.resolve(incident, ZERO32, ""), responder)
        digest = hashlib.sha256(f"pm {status}".encode()).digest()
        receipt = suite.transact(fns.attachPostmortem(incident, digest, "https://wiki.example/pm/9"), responder)
        assert events(receipt, suite.ledger, "PostmortemAttached") == [{
            "id": incident, "target": target_key(SERVICE, STAGING), "digest": digest,
            "uri": "https://wiki.example/pm/9", "responder": responder}]
    assert suite.revert_of(fns.attachPostmortem(7, ZERO32, ""), responder) == ("UnknownIncident", {"id": 7})


def test_resolve_freezing_incident_needs_the_policy_quorum(suite):
    """resolveQuorum applies to incidents that freeze their target's policy; others take one."""
    a, fns = suite.actors, suite.ledger.functions
    set_policy(suite, STAGING, freeze=2, resolve_quorum=2)
    freezing = open_incident(suite, STAGING, severity=2)
    minor = open_incident(suite, STAGING, severity=3)
    receipt = suite.transact(fns.resolve(minor, ZERO32, ""), a.responder)
    assert [(e["organisations"], e["needed"]) for e in events(receipt, suite.ledger, "IncidentResolveApproved")] == [(1, 1)]
    assert len(events(receipt, suite.ledger, "IncidentResolved")) == 1
    receipt = suite.transact(fns.resolve(freezing, ZERO32, ""), a.responder)
    assert [(e["organisations"], e["needed"]) for e in events(receipt, suite.ledger, "IncidentResolveApproved")] == [(1, 2)]
    assert events(receipt, suite.ledger, "IncidentResolved") == []
    assert fns.getIncident(freezing).call()[2] == IncidentStatus.Open


# ================================================================================== access control

# The access-control matrix of every state-changing function is in test_access.py.


def test_access_control_roles_are_read_live_from_registry(suite):
    a = suite.actors
    digest = make_releasable(suite)
    fn = suite.ledger.functions.start(digest, SERVICE, STAGING, 10)
    as_governance(suite, suite.registry.functions.revokeScopedRole(DEPLOYER_ROLE, "", a.deployer))
    assert suite.revert_of(fn, a.deployer) == (
        "AccessControlUnauthorizedAccount", {"account": a.deployer, "neededRole": DEPLOYER_ROLE})
    as_governance(suite, suite.registry.functions.grantScopedRole(DEPLOYER_ROLE, "", a.approver4))
    receipt = suite.transact(fn, a.approver4)
    (event,) = events(receipt, suite.ledger, "DeploymentStarted")
    assert event["deployer"] == a.approver4


def test_access_control_gate_is_open_to_anyone(suite):
    digest = make_releasable(suite)
    assert tuple(suite.ledger.functions.gate(digest, SERVICE, STAGING).call({"from": suite.actors.outsider})) == (
        Reason.Allowed, 0, 0)


# ================================================================================== atomicity


def test_start_revert_gate_denied_leaves_no_trace(suite):
    live = go_live(suite, "1.4.1")
    digest, _ = register(suite, "1.4.2")  # no approvals for it
    before = (suite.ledger.functions.deploymentCount().call(), state(suite))
    send_reverting(suite, suite.ledger.functions.start(digest, SERVICE, STAGING, 10), suite.actors.deployer)
    assert (suite.ledger.functions.deploymentCount().call(), state(suite)) == before == (1, (live, 0))
    assert suite.revert_of(suite.ledger.functions.getDeployment(2), suite.actors.outsider) == (
        "UnknownDeployment", {"id": 2})


def test_start_revert_rollout_in_progress_leaves_no_trace(suite):
    first = make_releasable(suite, STAGING, "1.4.1")
    active, _ = start(suite, first)
    second = make_releasable(suite, STAGING, "1.4.2", set_the_policy=False, expect_allowed=False)
    send_reverting(suite, suite.ledger.functions.start(second, SERVICE, STAGING, 10), suite.actors.deployer)
    assert suite.ledger.functions.deploymentCount().call() == 1
    assert state(suite) == (0, active)


def test_openIncident_revert_on_late_bad_suspect_leaves_no_trace(suite):
    digest = make_releasable(suite)
    known, _ = start(suite, digest)
    fn = suite.ledger.functions.openIncident(incident_input(severity=1, suspects=[known, 42]))
    send_reverting(suite, fn, suite.actors.responder)
    assert suite.ledger.functions.incidentCount().call() == 0
    assert list(suite.ledger.functions.openIncidentCounts(SERVICE, STAGING).call()) == [0, 0, 0, 0]
    assert suite.revert_of(suite.ledger.functions.getIncident(1), suite.actors.outsider) == (
        "UnknownIncident", {"id": 1})
    # and no severity-1 incident froze the target (the policy freezes at severity <= 2, and a freeze
    # would be reported before the rollout in progress)
    assert gate(suite, digest, STAGING) == (Reason.RolloutInProgress, known, 0)


def test_complete_revert_revoked_leaves_rollout_in_progress(suite):
    live = go_live(suite, "1.4.1")
    digest = make_releasable(suite, STAGING, "1.4.2")
    deployment_id, _ = start(suite, digest, STAGING, 100)
    suite.transact(suite.registry.functions.revoke(digest, SERVICE, "tampered"), suite.actors.registrar)
    send_reverting(suite, suite.ledger.functions.complete(deployment_id), suite.actors.deployer)
    assert state(suite) == (live, deployment_id)
    assert status_of(suite, deployment_id) == Status.InProgress


def test_rollback_revert_keeps_live_and_prior_environment(suite):
    digest = make_releasable(suite, STAGING, "1.4.1")
    make_releasable_prod(suite, digest)
    live, _ = start(suite, digest, STAGING, 100)
    complete(suite, live)
    other = make_releasable(suite, STAGING, "1.4.2")
    active, _ = start(suite, other)
    send_reverting(suite, suite.ledger.functions.rollback(live, "incident"), suite.actors.deployer)
    assert state(suite) == (live, active)
    assert status_of(suite, live) == Status.Completed
    assert gate(suite, digest, PROD) == (Reason.Allowed, 0, 0)


def test_mitigate_revert_rollback_not_found_keeps_status(suite):
    incident = open_incident(suite)
    advance_incident(suite, incident, IncidentStatus.Acknowledged)
    send_reverting(suite, suite.ledger.functions.mitigate(incident, 5), suite.actors.responder)
    assert suite.ledger.functions.getIncident(incident).call()[2] == IncidentStatus.Acknowledged

"""A Python reference model of suite v2's rules, driven by a Hypothesis state machine against the real
contracts on the session anvil (issue 10, "Hypothesis stateful model").

The model (the small classes below, one per concern) knows only the rules of the issue and the
contracts' documented behaviour; it is never fed a result it is checked against. Each rule of the
machine asks the model what a call should do (succeed, or revert with which error and arguments),
asks the chain the same (an eth_call in the pending block, whose time the model sets), compares,
and only then sends the transaction. After every rule one JSON-RPC batch reads the chain's answers
for everything the model knows (gate, votes, nonces, deployments, targets, completions, incidents,
open counts, policies, ids) and compares them with the model's: the invariants of the forge list
that apply here. At the end of each example the compliance audit replays the chain's history and
must find nothing on a history the model calls legitimate, with counts equal to the model's.

Time: every transaction is mined at exactly the model's clock + 1 s (evm_setNextBlockTimestamp), and
the checks read at "latest", whose time is the model's clock; so ttl, wait and deadline boundaries
are exact. Each example starts from one evm_snapshot of the set-up consortium.

Default run (inside `make test`): 15 examples of up to 25 steps, derandomized. A long campaign:
`make model` or SHIPLEDGER_MODEL_EXAMPLES=N (and SHIPLEDGER_MODEL_STEPS=M) with a random seed.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from eth_abi import decode as abi_decode
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from kit import (ROLES, Decision, Gate, Incident as IncidentStatus, Kind, Proposal as ProposalState, Skip, Status, Verdict,
                 artifact, artifact_id, governed, key, policy, sha256, signed_vote, snapshot, revert_to, target)
from shipledger._internal.revert import decode_revert
from shipledger._internal.rpc import Rpc
from shipledger.compliance.audit import audit, policy_weakens
from shipledger.compliance.index import Endpoint, Index

pytestmark = pytest.mark.filterwarnings("ignore:The log with transaction hash:UserWarning")

SERVICE = "model-shop"
VERSIONS = ("1.0.0", "1.0.1", "1.1.0")
ENVIRONMENTS = ("staging", "prod", "dr")  # dr starts without a policy: the gate says no_policy
ATTESTATION_TYPES = ("sbom", "provenance")
APPROVERS = ("approver1", "approver2", "approver3", "approver4")
NONCES = (0, 1, 2)  # a small pool, so that a nonce is reused
DELAY = 60  # the governance delay of tests/conftest.py
MAX_SIGNATURE_VALIDITY = 30 * 24 * 3600
GAS = 5_000_000
READS: dict[str, object] = {}  # label -> the contract call the invariant check reads, built once
SEEN: Counter = Counter()  # what the campaign exercised (printed at the end: a model that never vetoes proves little)

# The starting policies (set through governance before the snapshot). prod: 2 approvals from 2
# organisations within 2 hours, a 5-minute wait, staging first, an sbom, a freeze at severity <= 2
# lifted by responders of 2 organisations.
START_POLICIES = {
    "staging": dict(threshold=1),
    "prod": dict(threshold=2, min_organisations=2, ttl=7200, min_wait=300, freeze_severity=2, resolve_quorum=2,
                 prior="staging", attestations=("sbom",)),
}


def digest_of(version: str) -> bytes:
    return sha256(f"{SERVICE} {version}")


def artifact_input(version: str) -> tuple:
    return artifact(digest_of(version), SERVICE, version, kind=Kind.IMAGE)


# ============================================================================ the model, one class per concern

# The deployment state machine: Failed and RolledBack are terminal, a Completed one can only be rolled back.
NEXT_STATUS = {(Status.IN_PROGRESS, Status.COMPLETED), (Status.IN_PROGRESS, Status.FAILED),
               (Status.IN_PROGRESS, Status.ROLLED_BACK), (Status.COMPLETED, Status.ROLLED_BACK)}


@dataclass
class Policy:
    """ReleaseRegistry.Policy (priorEnvironment and types by name, not key)."""

    threshold: int = 1
    min_organisations: int = 0
    ttl: int = 0
    min_wait: int = 0
    freeze_severity: int = 0
    resolve_quorum: int = 1
    prior: str = ""
    attestations: tuple = ()
    version: int = 0

    @classmethod
    def of(cls, **fields) -> "Policy":
        fields = dict(fields)
        fields["attestations"] = tuple(fields.get("attestations", ()))
        return cls(**fields)

    def input(self) -> tuple:
        return policy(self.threshold, self.min_organisations, self.ttl, self.min_wait, self.freeze_severity,
                      self.resolve_quorum, self.prior, self.attestations)

    def weakened_by(self, new: "Policy") -> bool:
        """Governance._policyWeakens: any one field letting more through than before weakens."""
        if self.version == 0:
            return True  # a policy where there was none lets releases through
        return (new.threshold < self.threshold or new.min_organisations < self.min_organisations
                or (self.ttl != 0 and (new.ttl == 0 or new.ttl > self.ttl))  # ttl 0: approvals never expire
                or new.min_wait < self.min_wait
                or new.freeze_severity < self.freeze_severity  # s freezes severities 1..s, 0 none
                or new.resolve_quorum < self.resolve_quorum
                or (self.prior != "" and new.prior != self.prior)
                or any(t not in new.attestations for t in self.attestations))


class Consortium:
    """Organisations, members and approver vote slots (ReleaseRegistry's members section): an approver
    takes the last freed slot or a new one, in a new epoch of that slot; removing it frees the slot."""

    def __init__(self, member_org: dict[str, int], approvers: tuple[str, ...], admitted_at: int):
        self.member_org = dict(member_org)  # account -> organisation (1 acme, 2 globex, 3 initech)
        self.slot_of: dict[str, int] = {}  # active approvers only
        self.admitted_at: dict[str, int] = {}
        self.slot_epoch: dict[int, int] = {}
        self.slot_holder: dict[int, str] = {}
        self.free_slots: list[int] = []
        self.slot_count = 0
        for account in approvers:  # the bootstrap admits them in this order
            self.admit(account, admitted_at)

    def is_approver(self, account: str) -> bool:
        return account in self.slot_of

    def admit(self, account: str, now: int) -> None:
        slot = self.free_slots.pop() if self.free_slots else self.slot_count
        if slot == self.slot_count:
            self.slot_count += 1
        self.slot_epoch[slot] = self.slot_epoch.get(slot, 0) + 1
        self.slot_holder[slot] = account
        self.slot_of[account] = slot
        self.admitted_at[account] = now

    def dismiss(self, account: str) -> None:
        slot = self.slot_of.pop(account)
        del self.slot_holder[slot]
        del self.admitted_at[account]
        self.free_slots.append(slot)


@dataclass
class Entry:
    """One 64-bit vote entry: decision, the organisation it was cast for, the slot's epoch, and the
    time of the signer's action (signedAt, or the block time of a transaction or withdrawal)."""

    decision: int
    org: int
    epoch: int
    time: int


class Votes:
    """Votes per release (artifact, environment) and vote slot; a signer's latest action wins."""

    def __init__(self, consortium: Consortium):
        self.consortium = consortium
        self.entries: dict[tuple[str, str], dict[int, Entry]] = {}
        self.used_nonces: set[tuple[str, int]] = set()

    def counting(self, release, account: str) -> Entry | None:
        """The entry of account's current slot and epoch (a re-admitted approver starts with none)."""
        c = self.consortium
        if not c.is_approver(account):
            return None
        slot = c.slot_of[account]
        entry = self.entries.get(release, {}).get(slot)
        return entry if entry is not None and entry.epoch == c.slot_epoch[slot] else None

    def record(self, release, account: str, decision: int, time: int) -> None:
        c = self.consortium
        slot = c.slot_of[account]
        self.entries.setdefault(release, {})[slot] = Entry(decision, c.member_org[account], c.slot_epoch[slot], time)

    def vote_of(self, release, account: str) -> tuple[int, int]:
        """ReleaseRegistry.voteOf: (decision, time) of a counting, non-withdrawn vote, else (None, 0)."""
        entry = self.counting(release, account)
        if entry is None or entry.decision == Decision.NONE:
            return (Decision.NONE, 0)
        return (entry.decision, entry.time)

    def tally(self, release, ttl: int, now: int) -> tuple[int, int, set, str | None]:
        """ReleaseRegistry._tally: in slot order; the first rejector vetoes; an approval is valid for
        ttl after its time and counts for the organisation it was cast for."""
        valid = expired = 0
        organisations, rejector = set(), None
        for slot in sorted(self.consortium.slot_holder):
            account = self.consortium.slot_holder[slot]
            entry = self.counting(release, account)
            if entry is None:
                continue
            if entry.decision == Decision.REJECT:
                rejector = rejector or account
            elif entry.decision == Decision.APPROVE:
                if ttl == 0 or entry.time + ttl >= now:
                    valid += 1
                    organisations.add(entry.org)
                else:
                    expired += 1
        return valid, expired, organisations, rejector


@dataclass
class ArtifactState:
    registered_at: int
    revoked: bool = False


@dataclass
class Deployment:
    id: int
    version: str
    environment: str
    previous: int
    percent: int
    status: int = Status.IN_PROGRESS
    canary: int = Verdict.NONE


@dataclass
class TargetState:
    live: int = 0
    active: int = 0


@dataclass
class IncidentState:
    environment: str
    severity: int
    status: int = IncidentStatus.OPEN
    resolved_by: set = field(default_factory=set)


class Incidents:
    """Open incidents per target and severity (DeploymentLedger._openBySeverity) and their lifecycle."""

    def __init__(self):
        self.by_id: dict[int, IncidentState] = {}

    def open_counts(self, environment: str) -> list[int]:
        counts = [0, 0, 0, 0]
        for incident in self.by_id.values():
            if incident.environment == environment and incident.status != IncidentStatus.RESOLVED:
                counts[incident.severity - 1] += 1
        return counts

    def resolve_quorum(self, incident: IncidentState, policy: Policy | None) -> int:
        """Lifting a freeze needs responders of resolveQuorum organisations; any other incident one."""
        if policy is None or policy.freeze_severity == 0 or incident.severity > policy.freeze_severity:
            return 1
        return policy.resolve_quorum


class Model:
    """The suite's state as the rules make it, and the gate's answer from it."""

    def __init__(self, actors, now: int, admitted_at: int, policies: dict[str, Policy], proposals: int):
        self.actors = actors
        self.now = now
        member_org = {getattr(actors, name): org for name, org in
                      (("approver1", 1), ("approver2", 2), ("approver3", 3), ("approver4", 1),
                       ("registrar", 1), ("deployer", 1), ("responder", 2))}
        self.consortium = Consortium(member_org, tuple(getattr(actors, n) for n in APPROVERS), admitted_at)
        self.votes = Votes(self.consortium)
        self.artifacts: dict[str, ArtifactState] = {}
        self.attested: set[tuple[str, str]] = set()
        self.policies = dict(policies)
        self.deployments: dict[int, Deployment] = {}
        self.targets = {env: TargetState() for env in ENVIRONMENTS}
        self.completions: Counter = Counter()  # (version, environment) -> standing completions
        self.incidents = Incidents()
        self.proposals = proposals
        self.counts = Counter()  # what the audit's summary should count

    def gate(self, version: str, environment: str, self_id: int = 0) -> tuple[int, int, int]:
        """ReleaseRegistry.checkRelease, then DeploymentLedger._gate, in the contracts' order."""
        art = self.artifacts.get(version)
        if art is None:
            return (Gate.UNKNOWN_ARTIFACT, 0, 0)
        if art.revoked:
            return (Gate.ARTIFACT_REVOKED, 0, 0)
        pol = self.policies.get(environment)
        if pol is None:
            return (Gate.NO_POLICY, 0, 0)
        valid, expired, organisations, rejector = self.votes.tally((version, environment), pol.ttl, self.now)
        if rejector is not None:
            return (Gate.REJECTED_BY, int(rejector, 16), 0)
        ready_at = art.registered_at + pol.min_wait
        if self.now < ready_at:
            return (Gate.WAITING_PERIOD, ready_at, self.now)
        if valid < pol.threshold:
            reason = Gate.APPROVALS_EXPIRED if valid + expired >= pol.threshold else Gate.NOT_ENOUGH_APPROVALS
            return (reason, valid, pol.threshold)
        if len(organisations) < pol.min_organisations:
            return (Gate.NOT_ENOUGH_ORGANISATIONS, len(organisations), pol.min_organisations)
        for kind in pol.attestations:
            if (version, kind) not in self.attested:
                return (Gate.MISSING_ATTESTATION, int.from_bytes(key(kind), "big"), 0)
        if pol.prior and self.completions[(version, pol.prior)] == 0:
            return (Gate.MISSING_PRIOR_ENVIRONMENT, int.from_bytes(key(pol.prior), "big"), 0)
        if pol.freeze_severity:
            counts = self.incidents.open_counts(environment)[: pol.freeze_severity]
            if any(counts):
                return (Gate.FROZEN_BY_INCIDENT, sum(counts), next(s for s, n in enumerate(counts, 1) if n))
        active = self.targets[environment].active
        if active and active != self_id:
            return (Gate.ROLLOUT_IN_PROGRESS, active, 0)
        return (Gate.ALLOWED, 0, 0)


# ============================================================================ the chain side


class Chain:
    """Calls on the suite at the model's clock: `outcome` asks the pending block (mined next at
    clock + 1 s) what a call would do, `send` mines it there."""

    def __init__(self, suite):
        self.suite = suite
        self.w3 = suite.w3
        self.rpc = Rpc(suite.w3.provider.endpoint_uri)
        self.gas_price = suite.w3.eth.gas_price
        self._data: dict[tuple, str] = {}

    def set_next_time(self, timestamp: int) -> None:
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])

    def mine_at(self, timestamp: int) -> None:
        self.set_next_time(timestamp)
        self.w3.provider.make_request("evm_mine", [])

    def outcome(self, fn, sender: str) -> tuple | None:
        """None if fn would succeed from sender in the next block, else (error name, argument values)."""
        request = {"from": sender, "to": fn.address, "data": self.data(fn), "gas": hex(GAS)}
        [reply] = self.rpc.replies([("eth_call", [request, "pending"])])
        if "error" not in reply:
            return None
        decoded = decode_revert(reply["error"].get("data"))
        assert decoded is not None, f"revert data not a known custom error: {reply['error']}"
        return decoded[0], tuple(decoded[1].values())

    def send(self, fn, sender: str):
        request = {"from": sender, "to": fn.address, "data": self.data(fn), "gas": hex(GAS), "gasPrice": hex(self.gas_price)}
        tx_hash = self.rpc.call("eth_sendTransaction", [request])
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.005)
        assert receipt.status == 1, f"transaction reverted although its call in the pending block did not: {tx_hash}"
        return receipt

    def data(self, fn) -> str:
        """The call data of fn; web3 encodes slowly, and the checks ask the same calls after every step."""
        cache_key = (fn.address, fn.fn_name, repr(fn.args))
        if cache_key not in self._data:
            self._data[cache_key] = fn._encode_transaction_data()
        return self._data[cache_key]

    def batch_calls(self, calls: list[tuple[object, list[str]]]) -> list[tuple]:
        """Each (contract function call, output types) read at "latest" in one JSON-RPC batch."""
        requests = [("eth_call", [{"to": fn.address, "data": self.data(fn)}, "latest"]) for fn, _ in calls]
        replies = self.rpc.batch(requests)
        return [abi_decode(types, bytes.fromhex(reply.removeprefix("0x"))) for (_, types), reply in zip(calls, replies)]


PRE_REGISTERED = VERSIONS[:2]  # registered before the snapshot (1.0.0 with an sbom); the rules register 1.1.0
PRE_ATTESTED = ((VERSIONS[0], "sbom"),)


def set_up_consortium(suite) -> tuple[dict[str, Policy], dict[str, int]]:
    """Before the snapshot: two artifacts, and through governance a second responder (the registrar,
    in acme) so that a freeze can be lifted by two organisations, and the starting policies.
    Returns the policies and each artifact's registration time."""
    a = suite.actors
    registered_at = {}
    for version in PRE_REGISTERED:
        receipt = suite.transact(suite.registry.functions.register(artifact_input(version)), a.registrar)
        registered_at[version] = suite.w3.eth.get_block(receipt.blockNumber).timestamp
    for version, kind in PRE_ATTESTED:
        suite.transact(suite.registry.functions.attest(digest_of(version), SERVICE, kind, sha256(f"{kind} of {version}"),
                                                       "https://att.example"), a.registrar)
    governed(suite, suite.registry.functions.grantScopedRole(ROLES["RESPONDER"], "", a.registrar))
    policies = {}
    for environment, fields in START_POLICIES.items():
        governed(suite, suite.registry.functions.setPolicy(SERVICE, environment, policy(**fields)))
        policies[environment] = replace(Policy.of(**fields), version=1)
    return policies, registered_at


# ============================================================================ the state machine


class SuiteMachine(RuleBasedStateMachine):
    """Set by the test before the run: the suite, the snapshot to start each example from, the model's
    starting facts."""

    suite = None
    origin = None  # dict: snapshot, policies, admitted_at, proposals, executions

    # ---------------------------------------------------------------- set-up and teardown

    @initialize()
    def begin(self):
        s = type(self).origin
        revert_to(self.suite.w3, s["snapshot"])
        s["snapshot"] = snapshot(self.suite.w3)  # anvil forgets a snapshot once reverted to
        self.chain = Chain(self.suite)
        self.a = self.suite.actors
        now = self.suite.w3.eth.get_block("latest").timestamp
        self.model = Model(self.a, now, s["admitted_at"], s["policies"], s["proposals"])
        self.model.artifacts = {v: ArtifactState(registered_at=t) for v, t in s["registered_at"].items()}
        self.model.attested = set(PRE_ATTESTED)
        self.pocket: list[tuple] = []  # signed votes handed out, not yet submitted
        self.last_percent: dict[int, int] = {}
        self.last_status: dict[int, int] = {}
        self.last_counts = (0, 0, 0)

    def teardown(self):
        if getattr(self, "model", None) is not None:
            self.check_audit()

    # ---------------------------------------------------------------- helpers

    def account(self, name: str) -> str:
        return getattr(self.a, name)

    def steward_of(self, org: int) -> str:
        return getattr(self.a, f"steward{org}")

    def act(self, fn, sender: str, expected: tuple | None):
        """The model's expected outcome (None: success) against the chain's, then the transaction
        if it succeeds. Every action happens at clock + 1 s."""
        at = self.model.now + 1
        self.chain.set_next_time(at)
        actual = self.chain.outcome(fn, sender)
        assert actual == expected, f"{fn.fn_name}: the model expects {expected}, the chain answers {actual}"
        if expected is not None:
            self.saw(f"{fn.fn_name}: {expected[0]}")
            return None
        receipt = self.chain.send(fn, sender)
        self.model.now = at
        self.saw(f"{fn.fn_name}: sent")
        return receipt

    @staticmethod
    def saw(what: str) -> None:
        SEEN[what] += 1

    def events(self, receipt, contract, name):
        return [dict(e["args"]) for e in getattr(contract.events, name)().process_receipt(receipt)
                if e["address"] == contract.address]

    # ---------------------------------------------------------------- artifacts

    @precondition(lambda self: len(self.model.artifacts) < len(VERSIONS))  # a no-op once all are registered
    @rule(version=st.sampled_from(VERSIONS))
    def register(self, version):
        # register: the identical whole record again is a no-op; a first one records registeredAt
        fn = self.suite.registry.functions.register(artifact_input(version))
        receipt = self.act(fn, self.a.registrar, None)
        if version not in self.model.artifacts:
            self.model.artifacts[version] = ArtifactState(registered_at=self.model.now)
            assert len(self.events(receipt, self.suite.registry, "ArtifactRegistered")) == 1
        else:
            assert self.events(receipt, self.suite.registry, "ArtifactRegistered") == []

    @precondition(lambda self: self.model.deployments)  # revocation mostly matters once something shipped
    @rule(version=st.sampled_from(VERSIONS))
    def revoke(self, version):
        # revoke: a REGISTRAR of the service, once per artifact, immediate and single-party
        art = self.model.artifacts.get(version)
        digest = digest_of(version)
        expected = (("ArtifactNotFound", (digest, SERVICE)) if art is None
                    else ("ArtifactIsRevoked", (digest, SERVICE)) if art.revoked else None)
        if self.act(self.suite.registry.functions.revoke(digest, SERVICE, "backdoored"), self.a.registrar, expected):
            art.revoked = True

    @rule(version=st.sampled_from(VERSIONS), kind=st.sampled_from(ATTESTATION_TYPES))
    def attest(self, version, kind):
        # attest: an ATTESTOR of the type records a document for a registered artifact
        digest = digest_of(version)
        expected = None if version in self.model.artifacts else ("ArtifactNotFound", (digest, SERVICE))
        fn = self.suite.registry.functions.attest(digest, SERVICE, kind, sha256(f"{kind} of {version}"), "https://att.example")
        if self.act(fn, self.a.registrar, expected):
            self.model.attested.add((version, kind))

    # ---------------------------------------------------------------- votes by transaction

    def vote_refusal(self, account, version, environment) -> tuple | None:
        """ReleaseRegistry._voteByTransaction's refusals before the latest-action rule, in order."""
        digest = digest_of(version)
        if not self.model.consortium.is_approver(account):
            return ("NotApprover", (account,))
        art = self.model.artifacts.get(version)
        if art is None:
            return ("ArtifactNotFound", (digest, SERVICE))
        if art.revoked:
            return ("ArtifactIsRevoked", (digest, SERVICE))
        if environment not in self.model.policies:
            return ("PolicyNotFound", (SERVICE, environment))
        return None

    @rule(approver=st.sampled_from(APPROVERS), version=st.sampled_from(VERSIONS), environment=st.sampled_from(ENVIRONMENTS),
          decision=st.sampled_from((Decision.APPROVE, Decision.REJECT)))
    def vote(self, approver, version, environment, decision):
        # approve / reject: by transaction, at block time; the same decision twice is refused
        account, release = self.account(approver), (version, environment)
        expected = self.vote_refusal(account, version, environment)
        if expected is None:
            entry = self.model.votes.counting(release, account)
            if entry is not None and entry.decision == decision:
                expected = ("VoteAlreadyCast", (digest_of(version), environment, account, int(decision)))
        fns = self.suite.registry.functions
        fn = (fns.approve if decision == Decision.APPROVE else fns.reject)(digest_of(version), SERVICE, environment, "m")
        if self.act(fn, account, expected):
            self.model.votes.record(release, account, decision, self.model.now)
            self.model.counts["votes"] += 1
            assert self.model.votes.vote_of(release, account) == (decision, self.model.now)  # last action wins

    @rule(version=st.sampled_from(VERSIONS), environment=st.sampled_from(ENVIRONMENTS))
    def approve_by_all(self, version, environment):
        # every approver approves in turn (each one a `vote` step): so that gates open often enough
        # for the rollout rules to have something to re-check
        for approver in APPROVERS:
            self.vote(approver, version, environment, Decision.APPROVE)

    @rule(approver=st.sampled_from(APPROVERS), version=st.sampled_from(VERSIONS), environment=st.sampled_from(ENVIRONMENTS))
    def withdraw(self, approver, version, environment):
        # withdraw: keeps the time of the action, so an older signature stays stale
        account, release = self.account(approver), (version, environment)
        entry = self.model.votes.counting(release, account)
        if not self.model.consortium.is_approver(account):
            expected = ("NotApprover", (account,))
        elif entry is None or entry.decision == Decision.NONE:
            expected = ("NoVoteToWithdraw", (digest_of(version), environment, account))
        else:
            expected = None
        if self.act(self.suite.registry.functions.withdraw(digest_of(version), SERVICE, environment), account, expected):
            self.model.votes.record(release, account, Decision.NONE, self.model.now)

    # ---------------------------------------------------------------- votes by signature

    @rule(approver=st.sampled_from(APPROVERS), version=st.sampled_from(VERSIONS), environment=st.sampled_from(ENVIRONMENTS),
          decision=st.sampled_from((Decision.APPROVE, Decision.REJECT)), nonce=st.sampled_from(NONCES),
          age=st.sampled_from((0, 1, 120, 8000, -30)), life=st.sampled_from((30, 3600, 3 * 86400)))
    def sign(self, approver, version, environment, decision, nonce, age, life):
        # an approver signs a vote off-chain (signedAt `age` seconds ago; -30: a clock ahead) and
        # hands it out; anyone may submit it later
        signed_at = self.model.now - age
        self.pocket.append(signed_vote(self.suite, self.account(approver), digest=digest_of(version), service=SERVICE,
                                       environment=environment, decision=decision, nonce=nonce, signed_at=signed_at,
                                       deadline=signed_at + life))

    @rule(approver=st.sampled_from(APPROVERS), version=st.sampled_from(VERSIONS))
    def sign_then_veto(self, approver, version):
        # the finding "an old offline signature overrides a later veto": sign an approval, then reject
        # by transaction; the signature handed out must come back Stale when submitted
        account = self.account(approver)
        self.pocket.append(signed_vote(self.suite, account, digest=digest_of(version), service=SERVICE,
                                       environment="prod", decision=Decision.APPROVE, nonce=2, signed_at=self.model.now,
                                       deadline=self.model.now + 3600))
        self.vote(approver, version, "prod", Decision.REJECT)

    def signed_skip(self, vote: tuple) -> int:
        """ReleaseRegistry._checkSignedVote and _vote by signature: why a vote is skipped, in the
        contract's order, or Skip.NONE when it is recorded (at the model's clock)."""
        signer, _digest, _service, environment, decision, nonce, signed_at, deadline, _sig = vote
        version = next(v for v in VERSIONS if digest_of(v) == vote[1])
        m, now = self.model, self.model.now
        if not m.consortium.is_approver(signer):
            return Skip.NOT_APPROVER
        if (signer, nonce) in m.votes.used_nonces:
            return Skip.NONCE_USED
        if signed_at > now:
            return Skip.SIGNED_IN_FUTURE
        if now > deadline:
            return Skip.EXPIRED
        art, pol = m.artifacts.get(version), m.policies.get(environment)
        if art is None or art.revoked or pol is None:
            return Skip.REFUSED
        validity = MAX_SIGNATURE_VALIDITY if pol.ttl == 0 or pol.ttl > MAX_SIGNATURE_VALIDITY else pol.ttl
        if deadline > signed_at + validity:
            return Skip.EXPIRED  # a deadline at most the ttl after signedAt
        entry = m.votes.counting((version, environment), signer)
        if signed_at <= m.consortium.admitted_at[signer] or signed_at <= (entry.time if entry else 0):
            return Skip.STALE  # the latest action wins
        if entry is not None and entry.decision == decision:
            return Skip.REFUSED
        return Skip.NONE

    @precondition(lambda self: self.pocket)
    @rule(data=st.data())
    def submit(self, data):
        self.submit_batch(data.draw(st.lists(st.integers(0, len(self.pocket) - 1), min_size=1, max_size=3, unique=True)))

    def submit_batch(self, picks: list[int]) -> list[tuple[int, int]]:
        # voteBySig by an outsider: each vote recorded or skipped with its reason; the batch goes on.
        # Returns the (index, reason) of each skipped vote.
        batch = [self.pocket[i] for i in picks]
        self.pocket = [v for i, v in enumerate(self.pocket) if i not in picks]
        self.model.now += 1  # the model judges each vote at the submission's block time
        expected_skips, recorded = [], 0
        for index, vote in enumerate(batch):
            skip = self.signed_skip(vote)
            self.saw(f"signed vote: {Skip(skip).name.lower()}")
            if skip == Skip.NONE:
                signer, nonce, version = vote[0], vote[5], next(v for v in VERSIONS if digest_of(v) == vote[1])
                assert (signer, nonce) not in self.model.votes.used_nonces  # each (signer, nonce) once
                self.model.votes.used_nonces.add((signer, nonce))
                self.model.votes.record((version, vote[3]), signer, vote[4], vote[6])  # the ttl runs from signedAt
                recorded += 1
            else:
                expected_skips.append((index, int(skip)))
        self.model.now -= 1
        receipt = self.act(self.suite.registry.functions.voteBySig(batch), self.a.outsider, None)
        skipped = [(e["index"], e["reason"]) for e in self.events(receipt, self.suite.registry, "SignedVoteSkipped")]
        votes = (self.events(receipt, self.suite.registry, "ArtifactApproved")
                 + self.events(receipt, self.suite.registry, "ArtifactRejected"))
        assert skipped == expected_skips and len(votes) == recorded, (skipped, expected_skips, len(votes), recorded)
        self.model.counts["votes"] += recorded
        return skipped

    @rule(approver=st.sampled_from(APPROVERS), nonce=st.sampled_from(NONCES))
    def invalidate_nonce(self, approver, nonce):
        # anyone may burn their own nonces
        account = self.account(approver)
        if self.act(self.suite.registry.functions.invalidateNonce(nonce), account, None):
            self.model.votes.used_nonces.add((account, nonce))

    # ---------------------------------------------------------------- membership (stewards)

    @rule(approver=st.sampled_from(APPROVERS), on=st.booleans())
    def set_approver(self, approver, on):
        # setApprover by the member's own steward: off frees the slot (its votes stop counting), on
        # takes a slot in a new epoch (re-admitted: no votes)
        account = self.account(approver)
        org = self.model.consortium.member_org.get(account)
        steward = self.steward_of(org or 1)
        held = self.model.consortium.is_approver(account)
        if org is None:
            expected = ("NotMember", (account,))
        elif on == held:
            expected = ("RoleAlreadyHeld" if on else "RoleNotHeld", (ROLES["APPROVER"], "", account))
        else:
            expected = None
        if self.act(self.suite.registry.functions.setApprover(account, on), steward, expected):
            if on:
                self.model.consortium.admit(account, self.model.now)
            else:
                self.model.consortium.dismiss(account)

    @rule(approver=st.sampled_from(APPROVERS))
    def remove_member(self, approver):
        # removeMember by the member's steward: every role goes, the slot is freed
        account = self.account(approver)
        org = self.model.consortium.member_org.get(account)
        expected = None if org is not None else ("NotMember", (account,))
        if self.act(self.suite.registry.functions.removeMember(account), self.steward_of(org or 1), expected):
            if self.model.consortium.is_approver(account):
                self.model.consortium.dismiss(account)
            del self.model.consortium.member_org[account]

    @rule(approver=st.sampled_from(APPROVERS), org=st.sampled_from((1, 2, 3)))
    def add_member(self, approver, org):
        # addMember by a steward: joins the steward's organisation as an approver; votes it casts
        # from now count for that organisation
        account = self.account(approver)
        current = self.model.consortium.member_org.get(account)
        expected = None if current is None else ("AlreadyMember", (account, current))
        if self.act(self.suite.registry.functions.addMember(account, True), self.steward_of(org), expected):
            self.model.consortium.member_org[account] = org
            self.model.consortium.admit(account, self.model.now)

    # ---------------------------------------------------------------- policies (governance)

    @rule(environment=st.sampled_from(ENVIRONMENTS), data=st.data(), cancel=st.booleans())
    def govern_policy(self, environment, data, cancel):
        # setPolicy through governance: steward1 proposes, steward2 approves (K = 2); a tightening
        # change runs at once, a weakening one waits the delay (steward3 may cancel it meanwhile)
        # half the time one field of the current policy changes (each field's classification on its
        # own), otherwise a whole new valid policy is drawn
        prior_name = {"staging": "", "prod": "staging", "dr": "prod"}[environment]
        choices = {"threshold": st.integers(1, 3), "min_organisations": st.integers(0, 3),
                   "ttl": st.sampled_from((0, 3600, 7200, 14400)), "min_wait": st.sampled_from((0, 300, 600)),
                   "freeze_severity": st.integers(0, 4), "resolve_quorum": st.integers(1, 3),
                   "prior": st.sampled_from(("", prior_name)),
                   "attestations": st.lists(st.sampled_from(ATTESTATION_TYPES), unique=True, max_size=2).map(tuple)}
        current = self.model.policies.get(environment, Policy())
        if data.draw(st.booleans(), label="one field"):
            name = data.draw(st.sampled_from(sorted(choices)), label="field")
            new = replace(current, **{name: data.draw(choices[name], label=name)})
            self.saw(f"governed one field: {name} {getattr(current, name)} -> {getattr(new, name)}")
        else:
            new = Policy(**{name: data.draw(strategy, label=name) for name, strategy in choices.items()})
        # setPolicy's validation: minOrganisations at most the threshold (and the 3 organisations)
        new = replace(new, min_organisations=min(new.min_organisations, new.threshold), version=0)
        self.govern(environment, new, cancel)

    def govern(self, environment: str, new: Policy, cancel: bool = False) -> bool:
        """The governed setPolicy; whether it was judged weakening."""
        old = self.model.policies.get(environment, Policy())
        weakening = old.weakened_by(new)
        self.saw(f"governed policy: {'weakening' if weakening else 'tightening'}")
        gov = self.suite.governance.functions
        call = self.suite.registry.functions.setPolicy(SERVICE, environment, new.input())
        receipt = self.act(gov.propose(call.address, call._encode_transaction_data()), self.a.steward1, None)
        self.model.proposals += 1
        proposal_id = self.model.proposals
        assert self.events(receipt, self.suite.governance, "ProposalCreated")[0]["id"] == proposal_id
        self.act(gov.approveProposal(proposal_id), self.a.steward2, None)
        state = self.suite.governance.functions.getProposal(proposal_id).call()
        assert (state[1], state[2]) == (ProposalState.SCHEDULED if weakening else ProposalState.EXECUTED, weakening)
        if weakening:
            executable_at = self.model.now + DELAY
            self.act(gov.executeProposal(proposal_id), self.a.outsider,
                     ("DelayNotPassed", (proposal_id, executable_at, self.model.now + 1)))
            if cancel:
                self.act(gov.cancelProposal(proposal_id), self.a.steward3, None)
                return weakening
            self.model.now = executable_at - 1
            self.act(gov.executeProposal(proposal_id), self.a.outsider, None)
        self.model.policies[environment] = replace(new, version=old.version + 1)
        self.model.counts["executions"] += 1
        return weakening

    # ---------------------------------------------------------------- deployments

    def pick_deployment(self, data) -> Deployment:
        """A deployment for a step: mostly one in progress (if any), sometimes any, so that the state
        refusals are exercised too."""
        in_progress = [d.id for d in self.model.deployments.values() if d.status == Status.IN_PROGRESS]
        return self.model.deployments[data.draw(st.sampled_from(in_progress * 3 + sorted(self.model.deployments)))]

    def step_refusal(self, d: Deployment) -> tuple | None:
        """DeploymentLedger._recheck: the canary, then the gate as `start` would answer it."""
        if d.canary in (Verdict.FAIL, Verdict.MARGINAL):
            return ("CanaryBlocks", (d.id, d.canary))
        reason = self.model.gate(d.version, d.environment, d.id)
        return None if reason[0] == Gate.ALLOWED else ("StepDenied", (d.id, *reason))

    def in_progress_refusal(self, d: Deployment) -> tuple | None:
        if d.status != Status.IN_PROGRESS:
            return ("DeploymentStateInvalid", (d.id, Status.IN_PROGRESS, d.status))
        return None

    @rule(version=st.sampled_from(VERSIONS), environment=st.sampled_from(ENVIRONMENTS),
          percent=st.sampled_from((10, 50, 100)))
    def start(self, version, environment, percent):
        # start: only while the gate allows (rollout_in_progress included)
        self.model.now += 1
        reason = self.model.gate(version, environment)
        self.model.now -= 1
        self.saw(f"start: {Gate(reason[0]).name.lower()}")
        expected = None if reason[0] == Gate.ALLOWED else ("GateDenied", reason)
        fn = self.suite.ledger.functions.start(digest_of(version), SERVICE, environment, percent)
        if self.act(fn, self.a.deployer, expected):
            t = self.model.targets[environment]
            deployment_id = len(self.model.deployments) + 1
            self.model.deployments[deployment_id] = Deployment(deployment_id, version, environment, t.live, percent)
            t.active = deployment_id
            self.model.counts["starts"] += 1

    @rule(version=st.sampled_from(VERSIONS), environment=st.sampled_from(ENVIRONMENTS), percent=st.sampled_from((100, 10)))
    def ship(self, version, environment, percent):
        # every approver approves, then a start, and at 100 % a completion (each one the step of its
        # own rule): the gate may still deny (wait, attestation, prior environment, freeze, veto);
        # at 10 % the rollout stays in progress for promote, analyse, fail and rollback
        self.approve_by_all(version, environment)
        before = len(self.model.deployments)
        self.start(version, environment, percent)
        if len(self.model.deployments) > before and percent == 100:
            self.complete_deployment(self.model.deployments[before + 1])

    @precondition(lambda self: self.model.deployments)
    @rule(data=st.data(), percent=st.sampled_from((50, 100)))
    def promote(self, data, percent):
        self.promote_deployment(self.pick_deployment(data), percent)

    def promote_deployment(self, d: Deployment, percent: int):
        # promote: re-checks the gate (and the canary) at every step; percentages only rise
        self.model.now += 1
        expected = (self.in_progress_refusal(d)
                    or (("PercentNotIncreasing", (d.id, d.percent, percent)) if percent <= d.percent else None)
                    or self.step_refusal(d))
        self.model.now -= 1
        if expected:
            self.saw(f"promote refused: {expected[0]}")
        if self.act(self.suite.ledger.functions.promote(d.id, percent), self.a.deployer, expected):
            d.percent = percent
            self.model.counts["promotions"] += 1

    @precondition(lambda self: self.model.deployments)
    @rule(data=st.data(), verdict=st.sampled_from((Verdict.PASS, Verdict.MARGINAL, Verdict.FAIL)))
    def analyse(self, data, verdict):
        # recordAnalysis: a Fail is never undone; a Marginal until a later Pass
        d = self.pick_deployment(data)
        fn = self.suite.ledger.functions.recordAnalysis(d.id, 9000, verdict, sha256("report"), "https://r", "model")
        if self.act(fn, self.a.deployer, self.in_progress_refusal(d)) and d.canary != Verdict.FAIL:
            d.canary = verdict

    @precondition(lambda self: self.model.deployments)
    @rule(data=st.data())
    def complete(self, data):
        self.complete_deployment(self.pick_deployment(data))

    def complete_deployment(self, d: Deployment):
        # complete: at 100 %, re-checked; the deployment becomes live, one more completion counted
        self.model.now += 1
        expected = (self.in_progress_refusal(d)
                    or (("RolloutIncomplete", (d.id, d.percent)) if d.percent != 100 else None)
                    or self.step_refusal(d))
        self.model.now -= 1
        if self.act(self.suite.ledger.functions.complete(d.id), self.a.deployer, expected):
            assert not self.model.artifacts[d.version].revoked  # nothing revoked becomes live
            t = self.model.targets[d.environment]
            t.live, t.active, d.status = d.id, 0, Status.COMPLETED
            self.model.completions[(d.version, d.environment)] += 1
            self.model.counts["completions"] += 1

    @precondition(lambda self: self.model.deployments)
    @rule(data=st.data())
    def fail(self, data):
        d = self.pick_deployment(data)
        if self.act(self.suite.ledger.functions.fail(d.id, "canary"), self.a.deployer, self.in_progress_refusal(d)):
            d.status, self.model.targets[d.environment].active = Status.FAILED, 0

    @precondition(lambda self: self.model.deployments)
    @rule(data=st.data())
    def rollback(self, data):
        self.rollback_deployment(self.pick_deployment(data))

    def rollback_deployment(self, d: Deployment):
        # rollback: of the rollout in progress (back to live) or of the live one (back to the
        # deployment it replaced); never restores a revoked artifact
        t = self.model.targets[d.environment]
        if d.status == Status.IN_PROGRESS:
            restored, expected = t.live, None
        elif d.status == Status.COMPLETED:
            restored = d.previous
            expected = (("NotLiveDeployment", (d.id, t.live)) if t.live != d.id
                        else ("RolloutInProgress", (target(SERVICE, d.environment), t.active)) if t.active else None)
        else:
            restored, expected = 0, ("DeploymentStateInvalid", (d.id, Status.IN_PROGRESS, d.status))
        if expected is None and restored and self.model.artifacts[self.model.deployments[restored].version].revoked:
            expected = ("RestoresRevokedArtifact",
                        (d.id, restored, artifact_id(SERVICE, digest_of(self.model.deployments[restored].version))))
        if expected:
            self.saw(f"rollback refused: {expected[0]}")
        if self.act(self.suite.ledger.functions.rollback(d.id, "bad"), self.a.deployer, expected):
            if d.status == Status.IN_PROGRESS:
                t.active = 0
            else:
                t.live = restored  # exactly the previous Completed deployment
                assert restored == 0 or self.model.deployments[restored].status == Status.COMPLETED
                self.model.completions[(d.version, d.environment)] -= 1
            d.status = Status.ROLLED_BACK
            self.model.counts["rollbacks"] += 1

    # ---------------------------------------------------------------- incidents

    @rule(environment=st.sampled_from(ENVIRONMENTS), severity=st.integers(1, 4))
    def open_incident(self, environment, severity):
        # openIncident: one RESPONDER, immediate; freezes the target up to the policy's severity
        fn = self.suite.ledger.functions.openIncident(
            (SERVICE, environment, severity, [], "5xx", sha256("details"), "https://status.example"))
        if self.act(fn, self.a.responder, None):
            self.model.incidents.by_id[len(self.model.incidents.by_id) + 1] = IncidentState(environment, severity)

    @precondition(lambda self: self.model.incidents.by_id)
    @rule(data=st.data(), to=st.sampled_from(("acknowledge", "mitigate")))
    def progress_incident(self, data, to):
        # acknowledge from Open; mitigate from Open or Acknowledged
        incident_id = data.draw(st.sampled_from(sorted(self.model.incidents.by_id)))
        incident = self.model.incidents.by_id[incident_id]
        allowed = (IncidentStatus.OPEN,) if to == "acknowledge" else (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED)
        expected_from = IncidentStatus.OPEN if to == "acknowledge" else IncidentStatus.ACKNOWLEDGED
        expected = None if incident.status in allowed else ("IncidentStateInvalid", (incident_id, expected_from, incident.status))
        fns = self.suite.ledger.functions
        fn = fns.acknowledge(incident_id) if to == "acknowledge" else fns.mitigate(incident_id, 0)
        if self.act(fn, self.a.responder, expected):
            incident.status = IncidentStatus.ACKNOWLEDGED if to == "acknowledge" else IncidentStatus.MITIGATED

    @precondition(lambda self: self.model.incidents.by_id)
    @rule(data=st.data(), responder=st.sampled_from(("responder", "registrar")))
    def resolve(self, data, responder):
        # resolve: from open, acknowledged or mitigated; a freezing incident needs responders of
        # resolveQuorum distinct organisations (responder: globex, registrar: acme)
        self.resolve_incident(data.draw(st.sampled_from(sorted(self.model.incidents.by_id))), responder)

    def resolve_incident(self, incident_id: int, responder: str):
        incident = self.model.incidents.by_id[incident_id]
        account = self.account(responder)
        org = self.model.consortium.member_org[account]
        if incident.status == IncidentStatus.RESOLVED:
            expected = ("IncidentStateInvalid", (incident_id, IncidentStatus.MITIGATED, IncidentStatus.RESOLVED))
        elif org in incident.resolved_by:
            expected = ("AlreadyResolvedBy", (incident_id, org))
        else:
            expected = None
        fn = self.suite.ledger.functions.resolve(incident_id, sha256("postmortem"), "https://pm")
        if self.act(fn, account, expected):
            incident.resolved_by.add(org)
            needed = self.model.incidents.resolve_quorum(incident, self.model.policies.get(incident.environment))
            if len(incident.resolved_by) >= needed:
                incident.status = IncidentStatus.RESOLVED
                self.model.counts["resolutions"] += 1
            self.saw(f"resolve quorum {needed}")

    # ---------------------------------------------------------------- time

    @rule(seconds=st.sampled_from((1, 60, 299, 3600, 7201, 86400)))
    def wait(self, seconds):
        # time passes: waiting periods end, approvals expire (ttl from signedAt), deadlines pass
        self.model.now += seconds
        self.chain.mine_at(self.model.now)

    # ---------------------------------------------------------------- the invariants

    @invariant()
    def chain_equals_model(self):
        """Everything the model knows, read from the chain in one batch at the model's clock."""
        m, r, l = self.model, self.suite.registry.functions, self.suite.ledger.functions
        assert self.suite.w3.eth.get_block("latest").timestamp == m.now
        calls, expected, what = [], [], []

        def check(make_call, types, value, label, view=tuple):
            """Compare view(decoded outputs) with the model's value. The call is built once per label
            (web3 builds calls slowly; the same ones are asked after every step of every example)."""
            if label not in READS:
                READS[label] = make_call()
            calls.append((READS[label], types))
            expected.append((value, view))
            what.append(label)

        approvers = [self.account(n) for n in APPROVERS]
        for version in VERSIONS:
            for environment in ENVIRONMENTS:
                # the gate: the same answer, reason and details, for every (artifact, environment)
                check(lambda: l.gate(digest_of(version), SERVICE, environment), ["uint8", "uint256", "uint256"],
                      m.gate(version, environment), f"gate {version} {environment}")
                for account in approvers:
                    # the tally's inputs: each signer's last action (voteOf)
                    check(lambda: r.voteOf(digest_of(version), SERVICE, environment, account), ["uint8", "uint256"],
                          m.votes.vote_of((version, environment), account), f"voteOf {version} {environment} {account}")
                check(lambda: l.completions(artifact_id(SERVICE, digest_of(version)), target(SERVICE, environment)), ["uint256"],
                      (m.completions[(version, environment)],), f"completions {version} {environment}")
        for account in approvers:
            for nonce in NONCES:
                check(lambda: r.nonceUsed(account, nonce), ["bool"], ((account, nonce) in m.votes.used_nonces,),
                      f"nonceUsed {account} {nonce}")
        for environment in ENVIRONMENTS:
            t = m.targets[environment]
            check(lambda: l.targetState(SERVICE, environment), ["(uint64,uint64)"], (t.live, t.active), f"target {environment}",
                  lambda got: tuple(got[0]))
            # the frozen state: open incidents by severity
            check(lambda: l.openIncidentCounts(SERVICE, environment), ["uint64[4]"],
                  tuple(m.incidents.open_counts(environment)), f"open incidents {environment}",
                  lambda got: tuple(got[0]))
            pol = m.policies.get(environment)
            check(lambda: r.policyAt(target(SERVICE, environment)), ["(uint8,uint8,uint32,uint32,uint8,uint8,uint32,bytes32,bytes32[])"],
                  pol.version if pol else 0, f"policy {environment}", lambda got: got[0][6])
        for d in m.deployments.values():
            check(lambda: l.getDeployment(d.id), ["(bytes32,bytes32,uint64,uint40,uint8,uint8,uint8)"],
                  (d.previous, d.percent, d.status, d.canary), f"deployment {d.id}",
                  lambda got: tuple(got[0][2:3] + got[0][4:]))
        for incident_id, incident in m.incidents.by_id.items():
            check(lambda: l.getIncident(incident_id), ["(bytes32,uint8,uint8,uint256)"],
                  (incident.severity, incident.status, sum(1 << o for o in incident.resolved_by)),
                  f"incident {incident_id}", lambda got: tuple(got[0][1:]))
        check(lambda: l.deploymentCount(), ["uint256"], (len(m.deployments),), "deploymentCount")
        check(lambda: l.incidentCount(), ["uint256"], (len(m.incidents.by_id),), "incidentCount")
        check(lambda: self.suite.governance.functions.proposalCount(), ["uint256"], (m.proposals,), "proposalCount")

        for (value, view), label, got in zip(expected, what, self.chain.batch_calls(calls)):
            got = view(got)
            assert got == (tuple(value) if isinstance(value, tuple) else value), \
                f"{label}: the model says {value}, the chain {got}"

        # a live deployment is Completed, the active one InProgress, and they differ
        for environment, t in m.targets.items():
            assert t.live == 0 or m.deployments[t.live].status == Status.COMPLETED, environment
            assert t.active == 0 or m.deployments[t.active].status == Status.IN_PROGRESS, environment
            assert t.live == 0 or t.live != t.active
        # ids and percentages only rise, terminal states stay terminal
        counts = (len(m.deployments), len(m.incidents.by_id), m.proposals)
        assert all(a >= b for a, b in zip(counts, self.last_counts))
        self.last_counts = counts
        for d in m.deployments.values():
            assert d.percent >= self.last_percent.get(d.id, 0)
            self.last_percent[d.id] = d.percent
            before = self.last_status.get(d.id, Status.IN_PROGRESS)
            assert d.status == before or (before, d.status) in NEXT_STATUS, (d.id, before, d.status)
            self.last_status[d.id] = d.status

    # ---------------------------------------------------------------- the audit, at teardown

    def check_audit(self):
        """The compliance audit over the chain's whole history must agree with the model: no finding on
        a history the model calls legitimate, and the same counts of what happened."""
        s = self.suite
        endpoint = Endpoint(s.w3.provider.endpoint_uri, s.w3.eth.chain_id, s.registry.address, s.ledger.address, 0,
                            s.governance.address)
        with tempfile.TemporaryDirectory() as tmp:
            index = Index.open(Path(tmp) / "index.sqlite")
            try:
                index.sync(endpoint)
                report = audit(index, endpoint)
            finally:
                index.close()
        assert report.findings == [], report.findings
        origin = type(self).origin
        counts = self.model.counts
        for name in ("starts", "promotions", "completions", "rollbacks", "resolutions"):
            assert report.summary[name] == counts[name], (name, report.summary[name], counts[name])
        assert report.summary["proposals"] == self.model.proposals
        assert report.summary["executions"] == origin["executions"] + counts["executions"]
        assert report.summary["votes"] == counts["votes"]
        self.saw("audit: clean")


# ============================================================================ the test


def model_settings() -> settings:
    """Short and reproducible by default; SHIPLEDGER_MODEL_EXAMPLES (and _STEPS) make a long random campaign."""
    examples = os.environ.get("SHIPLEDGER_MODEL_EXAMPLES")
    return settings(max_examples=int(examples or 15), stateful_step_count=int(os.environ.get("SHIPLEDGER_MODEL_STEPS", 25)),
                    deadline=None, derandomize=examples is None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture
def model_suite(suite):
    """The suite fixture, and afterwards one block mined so that a next-block time the model set but
    did not use is spent before the fixture's revert (other tests keep the node's own clock)."""
    yield suite
    suite.w3.provider.make_request("evm_mine", [])


def prepare(suite) -> None:
    """Sets up the consortium on the fresh suite and gives the machine its starting facts."""
    registry = suite.registry.functions
    assert suite.ledger.functions.deploymentCount().call() == 0 and suite.governance.functions.proposalCount().call() == 0
    policies, registered_at = set_up_consortium(suite)
    assigned = suite.registry.events.ApproverSlotAssigned().get_logs(from_block=0)
    admitted_at = suite.w3.eth.get_block(assigned[0]["blockNumber"]).timestamp  # the bootstrap admitted all four
    assert len(assigned) == 4 and registry.organisationCount().call() == 3
    proposals = suite.governance.functions.proposalCount().call()
    SuiteMachine.suite = suite
    SuiteMachine.origin = {"snapshot": snapshot(suite.w3), "policies": policies, "admitted_at": admitted_at,
                           "proposals": proposals, "executions": proposals, "registered_at": registered_at}


def test_the_contracts_follow_the_reference_model(model_suite):
    suite = model_suite
    prepare(suite)
    SEEN.clear()
    run_state_machine_as_test(SuiteMachine, settings=model_settings())
    print("model campaign:", ", ".join(f"{what} x{n}" for what, n in sorted(SEEN.items())))


def test_a_walk_through_the_issue_scenarios_on_the_model(model_suite):
    """The scenarios of issue 10 as one fixed sequence of the machine's own steps, with the same
    checks after each: a random campaign may or may not reach prod, so this one always does."""
    suite = model_suite
    prepare(suite)
    m = SuiteMachine()
    m.begin()
    model, steps = m.model, []

    def step(name, *args):
        getattr(m, name)(*args)
        m.chain_equals_model()
        steps.append(name)

    staging, prod = ("1.0.0", "staging"), ("1.0.0", "prod")
    a1, a2 = m.account("approver1"), m.account("approver2")
    # a signed approval counts from its signedAt; the same nonce again is skipped as used
    step("sign", "approver1", "1.0.0", "staging", Decision.APPROVE, 0, 0, 3600)
    step("wait", 1)
    assert m.submit_batch([0]) == [] and model.votes.vote_of(staging, a1)[0] == Decision.APPROVE
    step("sign", "approver1", "1.0.1", "staging", Decision.APPROVE, 0, 0, 3600)
    step("wait", 1)
    assert m.submit_batch([0]) == [(0, Skip.NONCE_USED)]
    # staging, then (after the wait) prod: 2 organisations, the sbom, staging first
    step("ship", "1.0.0", "staging", 100)
    assert model.targets["staging"].live == 1
    step("wait", 300)
    step("ship", "1.0.0", "prod", 100)
    assert model.targets["prod"].live == 2 and model.completions[prod] == 1
    # an old signed approval does not override a later veto: it is skipped as stale
    step("register", "1.0.1")
    step("sign_then_veto", "approver2", "1.0.1")
    assert m.submit_batch([0]) == [(0, Skip.STALE)]
    assert model.gate("1.0.1", "prod")[:2] == (Gate.REJECTED_BY, int(a2, 16))
    # a re-admitted approver's old votes do not come back
    step("set_approver", "approver2", False)
    step("set_approver", "approver2", True)
    assert model.votes.vote_of(("1.0.1", "prod"), a2) == (Decision.NONE, 0)
    # every step is re-checked: a freezing incident stops a rollout at 10 %; lifting it takes two
    # organisations' responders
    step("ship", "1.0.1", "staging", 100)
    step("attest", "1.0.1", "sbom")
    step("ship", "1.0.1", "prod", 10)
    rollout = model.deployments[4]
    assert rollout.status == Status.IN_PROGRESS and model.targets["prod"].active == 4
    step("open_incident", "prod", 1)
    step("promote_deployment", rollout, 100)
    assert rollout.percent == 10  # StepDenied: frozen_by_incident
    step("resolve_incident", 1, "responder")
    assert model.incidents.by_id[1].status != IncidentStatus.RESOLVED  # quorum 2: globex alone is not enough
    step("resolve_incident", 1, "registrar")
    assert model.incidents.by_id[1].status == IncidentStatus.RESOLVED
    step("promote_deployment", rollout, 100)
    step("complete_deployment", rollout)
    assert model.targets["prod"].live == 4
    # a rollback never restores a revoked artifact
    step("revoke", "1.0.0")
    step("rollback_deployment", rollout)
    assert model.targets["prod"].live == 4 and rollout.status == Status.COMPLETED  # RestoresRevokedArtifact
    # a governed weakening (a lower freezeSeverity) waits the delay; the audit must agree it was legitimate
    assert m.govern("prod", replace(model.policies["prod"], freeze_severity=1)) is True
    m.chain_equals_model()
    m.teardown()  # the audit of the whole history: no finding, the model's counts


def test_audit_classifies_freeze_severity_as_governance_does():
    """freezeSeverity s freezes incidents of severity 1..s (0 none): a lower number weakens, a higher one
    tightens (Governance._policyWeakens). The model's first run found the audit judging it the other
    way round, so every governed freeze change was reported as misclassified."""
    zero = "0x" + "00" * 32
    base = dict(threshold=1, minOrganisations=0, ttl=0, minWait=0, resolveQuorum=1, priorEnvironment=zero,
                requiredAttestations=[])
    for old, new in ((2, 1), (2, 0), (4, 3), (1, 0)):
        assert policy_weakens(dict(base, freezeSeverity=old), dict(base, freezeSeverity=new)) is True, (old, new)
        assert Policy(freeze_severity=old, version=1).weakened_by(Policy(freeze_severity=new))
    for old, new in ((2, 3), (0, 1), (0, 4), (3, 3)):
        assert policy_weakens(dict(base, freezeSeverity=old), dict(base, freezeSeverity=new)) is False, (old, new)
        assert not Policy(freeze_severity=old, version=1).weakened_by(Policy(freeze_severity=new))

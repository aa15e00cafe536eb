"""The SDK's return types: frozen dataclasses, never web3 AttributeDicts, HexBytes or receipts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from shipledger._internal.gatecall import GateReason  # noqa: F401 (defined beside the gate decoder, public here)


class Decision(IntEnum):
    NONE = 0
    APPROVE = 1
    REJECT = 2


class DeploymentStatus(IntEnum):
    NONE = 0
    IN_PROGRESS = 1
    COMPLETED = 2
    FAILED = 3
    ROLLED_BACK = 4


class Verdict(IntEnum):
    NONE = 0
    PASS = 1
    MARGINAL = 2
    FAIL = 3


class IncidentStatus(IntEnum):
    NONE = 0
    OPEN = 1
    ACKNOWLEDGED = 2
    MITIGATED = 3
    RESOLVED = 4


class ArtifactKind(IntEnum):
    BUILD = 0
    IMAGE = 1
    CONFIG = 2
    INFRASTRUCTURE = 3


class ProposalState(IntEnum):
    NONE = 0
    PENDING = 1
    SCHEDULED = 2
    EXECUTED = 3
    CANCELLED = 4


@dataclass(frozen=True)
class TxReceipt:
    """A mined transaction of ours."""

    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class BatchResult:
    """Where a batch registration stands; each artifact is in exactly one of the five counts."""

    artifacts: int
    registered: int  # recorded by this batch, confirmed
    already: int  # already on the ledger identically: nothing sent, or a no-op on chain
    pending: int  # handed to the node, no receipt yet: the node still mines them
    failed: int  # in a transaction that reverted
    not_sent: int
    transactions: tuple[TxReceipt, ...] = ()  # confirmed
    pending_transactions: tuple[str, ...] = ()  # hashes
    resume_at: str | None = None  # label of the first artifact not confirmed; None when none is left


@dataclass(frozen=True)
class Artifact:
    digest: str  # "sha256:<hex>"
    service: str
    registrant: str
    registered_at: int
    revoked: bool
    kind: str = "build"


@dataclass(frozen=True)
class ArtifactSpec:
    """What a pipeline registers; the digest is "sha256:<64 hex>"."""

    digest: str
    service: str
    version: str
    commit: str = ""  # hex git SHA-1 or SHA-256
    committed_at: int = 0
    provenance: str = ""  # "sha256:<hex>" or ""
    sbom: str = ""
    uri: str = ""
    kind: str = "build"  # build, image, config or infrastructure


@dataclass(frozen=True)
class Policy:
    service: str
    environment: str
    threshold: int
    min_organisations: int
    ttl: int
    min_wait: int
    freeze_severity: int
    version: int
    prior_environment_key: str  # 0x-hex keccak of the prior environment name, "" for none
    resolve_quorum: int = 1
    required_attestation_keys: tuple[str, ...] = ()  # 0x-hex keccak of each required type name

    @classmethod
    def from_call(cls, service: str, environment: str, p) -> "Policy":
        """From getPolicy's decoded struct (threshold, minOrganisations, ttl, minWait, freezeSeverity,
        resolveQuorum, version, priorEnvironment, requiredAttestations)."""
        prior = "" if bytes(p[7]) == b"\0" * 32 else "0x" + bytes(p[7]).hex()
        required = tuple("0x" + bytes(k).hex() for k in p[8])
        return cls(service, environment, p[0], p[1], p[2], p[3], p[4], p[6], prior, p[5], required)


@dataclass(frozen=True)
class GateResult:
    allowed: bool
    reason: str  # GateReason name in lower case, e.g. "not_enough_approvals"
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SignedApproval:
    """An EIP-712 vote signed offline; JSON-serialisable with to_json / from_json."""

    signer: str
    digest: str
    service: str
    environment: str
    decision: int
    nonce: int
    signed_at: int
    deadline: int
    chain_id: int
    registry: str
    signature: str


@dataclass(frozen=True)
class Deployment:
    id: int
    status: str
    percent: int
    previous: int
    started_at: int
    artifact_id: str
    target: str
    canary: str = "none"  # the verdict that decides promote and complete: none, pass, marginal, fail

    @classmethod
    def from_call(cls, deployment_id: int, d) -> "Deployment":
        """From getDeployment's decoded struct."""
        return cls(id=deployment_id, artifact_id="0x" + bytes(d[0]).hex(), target="0x" + bytes(d[1]).hex(), previous=d[2],
                   started_at=d[3], percent=d[4], status=DeploymentStatus(d[5]).name.lower(),
                   canary=Verdict(d[6]).name.lower())


@dataclass(frozen=True)
class TargetState:
    service: str
    environment: str
    live: int
    active: int


@dataclass(frozen=True)
class Incident:
    id: int
    severity: int
    status: str
    target: str
    resolved_by: tuple[int, ...] = ()  # organisations whose responders resolved it so far

    @classmethod
    def from_call(cls, incident_id: int, i) -> "Incident":
        """From getIncident's decoded struct."""
        orgs = tuple(org for org in range(256) if (i[3] >> org) & 1)
        return cls(id=incident_id, target="0x" + bytes(i[0]).hex(), severity=i[1], status=IncidentStatus(i[2]).name.lower(),
                   resolved_by=orgs)


@dataclass(frozen=True)
class Resolution:
    """What one `resolve` did: a freezing incident needs responders of `needed` organisations, so a
    resolve may only add this responder's organisation (`organisations` of `needed` so far)."""

    incident_id: int
    resolved: bool
    organisations: int
    needed: int
    receipt: TxReceipt

    @property
    def waiting_for(self) -> int:
        """How many organisations more must resolve it (0 once resolved)."""
        return 0 if self.resolved else self.needed - self.organisations


@dataclass(frozen=True)
class Bootstrap:
    """The consortium a new suite starts with. After deployment the deploying key holds no role.

    organisations: (name, steward address); members: (address, organisation name, approver?);
    roles: (role name, scope, address) with scope a service (REGISTRAR), an attestation type
    (ATTESTOR) or "" for all; policies: (service, environment, keyword arguments of `set_policy`).
    organisations_needed is K; delay the seconds a weakening change waits."""

    organisations: tuple[tuple[str, str], ...]
    members: tuple[tuple[str, str, bool], ...] = ()
    roles: tuple[tuple[str, str, str], ...] = ()
    policies: tuple[tuple[str, str, dict], ...] = ()
    organisations_needed: int = 1
    delay: int = 0


@dataclass(frozen=True)
class Proposal:
    """A governance proposal and where it stands."""

    id: int
    kind: str  # policy-set, org-add, steward-set, role-grant, role-revoke, member-remove, settings
    state: str  # pending, scheduled, executed, cancelled
    approvals: int
    needed: int
    organisations: tuple[int, ...]
    weakening: bool | None  # None until K organisations approved
    executable_at: int  # 0 until scheduled
    created_at: int
    target: str
    data: str  # 0x-hex call data
    summary: dict = field(default_factory=dict)  # the decoded change

    @property
    def executed(self) -> bool:
        return self.state == "executed"

    def to_json(self) -> dict:
        return {"proposal_id": self.id, "kind": self.kind, "state": self.state, "approvals": self.approvals,
                "needed": self.needed, "organisations": list(self.organisations), "weakening": self.weakening,
                "executable_at": self.executable_at, "executed": self.executed, "change": self.summary}


@dataclass(frozen=True)
class Vote:
    approver: str
    organisation: int
    decision: str
    cast_at: int


@dataclass(frozen=True)
class HistoryEvent:
    """One event of the ledger, decoded; `fields` holds its arguments as JSON-friendly values."""

    kind: str
    block_number: int
    tx_hash: str
    log_index: int
    timestamp: int
    service: str
    environment: str
    fields: dict


# The kind of each event of the suite, as history, the index and exports name it.
EVENT_KINDS = {
    "OrganisationAdded": "organisation-added",
    "StewardSet": "steward-set",
    "ScopedRoleGranted": "scoped-role-granted",
    "ScopedRoleRevoked": "scoped-role-revoked",
    "ApproverSlotFreed": "approver-slot-freed",
    "AttestationRecorded": "attested",
    "SignedVoteSkipped": "vote-skipped",
    "NonceInvalidated": "nonce-invalidated",
    "IncidentResolveApproved": "incident-resolve-approved",
    "PostmortemAttached": "postmortem",
    "ProposalCreated": "proposal-created",
    "ProposalApproved": "proposal-approved",
    "ProposalScheduled": "proposal-scheduled",
    "ProposalExecuted": "proposal-executed",
    "ProposalCancelled": "proposal-cancelled",
    "SettingsChanged": "governance-settings",
    "MemberAdded": "member-added",
    "MemberRemoved": "member-removed",
    "ApproverSlotAssigned": "approver-slot",
    "RoleGranted": "role-granted",
    "RoleRevoked": "role-revoked",
    "ArtifactRegistered": "registered",
    "ArtifactRevoked": "revoked",
    "PolicySet": "policy-set",
    "ArtifactApproved": "approved",
    "ArtifactRejected": "rejected",
    "VoteWithdrawn": "withdrawn",
    "DeploymentStarted": "deployed",
    "DeploymentPromoted": "promoted",
    "CanaryAnalysisRecorded": "canary-verdict",
    "DeploymentCompleted": "completed",
    "DeploymentFailed": "failed",
    "DeploymentRolledBack": "rolled-back",
    "IncidentOpened": "incident-opened",
    "IncidentAcknowledged": "incident-acknowledged",
    "IncidentMitigated": "incident-mitigated",
    "IncidentResolved": "incident-resolved",
}

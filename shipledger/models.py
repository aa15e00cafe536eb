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

    @classmethod
    def from_call(cls, service: str, environment: str, p) -> "Policy":
        """From getPolicy's decoded struct."""
        prior = "" if bytes(p[6]) == b"\0" * 32 else "0x" + bytes(p[6]).hex()
        return cls(service, environment, p[0], p[1], p[2], p[3], p[4], p[5], prior)


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

    @classmethod
    def from_call(cls, deployment_id: int, d) -> "Deployment":
        """From getDeployment's decoded struct."""
        return cls(id=deployment_id, artifact_id="0x" + bytes(d[0]).hex(), target="0x" + bytes(d[1]).hex(), previous=d[2],
                   started_at=d[3], percent=d[4], status=DeploymentStatus(d[5]).name.lower())


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

    @classmethod
    def from_call(cls, incident_id: int, i) -> "Incident":
        """From getIncident's decoded struct."""
        return cls(id=incident_id, target="0x" + bytes(i[0]).hex(), severity=i[1], status=IncidentStatus(i[2]).name.lower())


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

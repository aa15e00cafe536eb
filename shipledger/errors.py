"""One exception root; contract reverts decoded into typed errors with a sentence a person reads.

Exit codes (the CLI's contract): 0 ok, 1 operational error, 2 usage or bad input, 3 denied.
"""

from __future__ import annotations


class ShipledgerError(Exception):
    """Root of every error the SDK raises on purpose."""

    exit_code = 1


class UsageError(ShipledgerError):
    """Bad input: a malformed digest, a missing file, a name that is too long."""

    exit_code = 2


class PathError(UsageError):
    """A file or directory the user named cannot be read or written (missing, a directory, no permission,
    a read-only filesystem, not text)."""


def path_error(path, exc: BaseException, doing: str = "read") -> PathError:
    """PathError naming the path, from the OSError or UnicodeDecodeError met while using it."""
    if isinstance(exc, UnicodeDecodeError):
        why = f"it is not UTF-8 text (byte {exc.start})"
    else:
        why = (getattr(exc, "strerror", None) or str(exc)).lower()
    return PathError(f"cannot {doing} {path}: {why}")


class ConnectionFailed(ShipledgerError):
    """The JSON-RPC node cannot be reached or answered garbage."""


class ChainStalled(ConnectionFailed):
    """The newest block is older than the address book's max_block_age: the chain has stopped, and any
    answer read from it is stale (the gate fails closed: exit 1, never allowed)."""


class AddressBookError(ShipledgerError):
    """The deployment address book is missing, malformed, for another chain, or points at no code."""


class TransactionTimeout(ShipledgerError):
    """A transaction was sent but no receipt arrived in time; it may still be mined."""


class NoSigner(UsageError):
    """A command that sends a transaction was given no key."""


class NothingRecorded(ShipledgerError):
    """A transaction was mined but recorded nothing: the registry skipped every signed vote in it."""

    exit_code = 3


class ContractRevert(ShipledgerError):
    """A call or transaction reverted with one of the suite's custom errors."""

    exit_code = 3
    error_name = ""

    def __init__(self, arguments: dict, sentence: str):
        super().__init__(sentence)
        self.arguments = arguments
        self.sentence = sentence


class Denied(ContractRevert):
    """The ledger said no: missing role, gate denied, a rule of the policy or a lifecycle."""


class InvalidInput(ContractRevert):
    """The contract rejected an argument as malformed."""

    exit_code = 2


class UnknownRevert(ShipledgerError):
    """A revert the SDK could not decode (not one of the suite's errors)."""

    exit_code = 3


_INPUT_ERRORS = {
    "InvalidName", "InvalidDigest", "InvalidPercent", "InvalidScore", "InvalidSeverity", "InvalidPolicy",
    "EmptyTitle", "EmptyBatch", "InvalidDecision", "InvalidVerdict", "ZeroAddress",
    "InvalidBootstrap", "InvalidSettings", "InvalidRole",
    "UnknownDeployment", "UnknownIncident", "UnknownProposal",  # an unknown id is bad input (exit 2), like a malformed one
}

GATE_SENTENCES = {  # in the order of the contracts' GateReason codes (models.GateReason; tests/test_layout.py checks)
    "allowed": "the gate allows it",
    "unknown_artifact": "the artifact is not registered for this service",
    "artifact_revoked": "the artifact has been revoked (quarantined)",
    "no_policy": "no approval policy exists for this service and environment, so everything is denied",
    "rejected_by": "approver {approver} rejected it",
    "waiting_period": "the waiting period after registration has not passed (ready at {ready_at}, now {now})",
    "not_enough_approvals": "not enough approvals: {have} of {need}",
    "approvals_expired": "approvals have expired: {have} still valid of {need} needed",
    "not_enough_organisations": "approvals come from too few organisations: {have} of {need}",
    "missing_prior_environment": "it has not completed a deployment to the required prior environment ({environment})",
    "frozen_by_incident": "deployments are frozen by {incidents} open incident(s) at or above the policy's freeze "
                          "severity (the most severe is severity {severity})",
    "rollout_in_progress": "deployment {deployment} is still rolling out in this environment",
    "missing_attestation": "the policy requires a {attestation_type} attestation, and the artifact has none",
}

_SENTENCES = {
    "AccessControlUnauthorizedAccount": "account {account} does not hold the role {neededRole}",
    "AccessControlBadConfirmation": "a role can only be renounced by its holder",
    "InvalidName": "name {name!r} must be 1 to 64 bytes",
    "OrganisationUnknown": "organisation {org} does not exist",
    "TooManyOrganisations": "the consortium already has the maximum of 255 organisations",
    "AlreadyMember": "{account} is already a member of organisation {org}",
    "NotMember": "{account} is not a member of any organisation (every role holder must be)",
    "NotSteward": "{account} is not the steward of any organisation",
    "StewardOfOtherOrganisation": "steward {steward} of organisation {stewardOrg} cannot manage a member of organisation {memberOrg}",
    "AlreadySteward": "{account} is already the steward of organisation {org}",
    "NotGovernance": "only governance may do this ({caller} is not it): propose it with `shipledger governance propose`",
    "InvalidRole": "{role} cannot be granted with scope {scope!r}",
    "RoleAlreadyHeld": "{account} already holds {role}{scoped}",
    "RoleNotHeld": "{account} does not hold {role}{scoped}",
    "InvalidBootstrap": "invalid bootstrap: {why}",
    "NotRegistrarOf": "{account} is not a REGISTRAR of {service}",
    "NotAttestorOf": "{account} is not an ATTESTOR of {attestationType} attestations",
    "NotApprover": "{account} does not hold the APPROVER role",
    "UnknownProposal": "proposal {id} does not exist",
    "ProposalStateInvalid": "proposal {id} is {state}, which does not allow this",
    "AlreadyApproved": "organisation {org} has already approved proposal {id}",
    "NotEnoughOrganisations": "proposal {id} has the approval of {approvals} of the {needed} organisations it needs",
    "DelayNotPassed": "proposal {id} weakens the rules and may execute only after its delay, at {executableAt} (now {timestamp})",
    "UnsupportedChange": "governance cannot make this change (function {selector} of {target})",
    "InvalidSettings": "invalid governance settings: {why}",
    "OnlySelf": "only a governance proposal may change the settings ({caller} is not governance)",
    "TooManyApprovers": "the consortium already has the maximum of 256 approvers",
    "ZeroAddress": "the zero address is not allowed",
    "InvalidDigest": "the digest must not be zero",
    "ArtifactAlreadyRegistered": "artifact {digest} is already registered for {service} under another version",
    "VersionAlreadyRegistered": "{service} {version} is already registered with a different record (record hash {existingRecordHash})",
    "ArtifactNotFound": "artifact {digest} is not registered for {service}",
    "ArtifactIsRevoked": "artifact {digest} of {service} is revoked",
    "EmptyBatch": "the batch is empty",
    "InvalidPolicy": "invalid policy: {why}",
    "PolicyNotFound": "no policy for {service} in {environment}",
    "RegistrantCannotApprove": "{approver} registered artifact {digest} and so cannot approve it (separation of duties)",
    "VoteAlreadyCast": "{approver} already cast this vote on {digest} for {environment}",
    "NoVoteToWithdraw": "{approver} has no vote on {digest} for {environment} to withdraw",
    "InvalidDecision": "decision {decision} is neither approve nor reject",
    "GateDenied": "the gate denies the deployment: {gate}",
    "UnknownDeployment": "deployment {id} does not exist",
    "DeploymentStateInvalid": "deployment {id} is {actual}, but this needs it {expected}",
    "InvalidPercent": "rollout percentage {percent} must be 1 to 100",
    "PercentNotIncreasing": "deployment {id} is at {current}%; a promotion must go above that, not to {requested}%",
    "RolloutIncomplete": "deployment {id} is at {percent}%; only a rollout at 100% can complete",
    "RolloutInProgress": "deployment {activeId} is still rolling out in this environment",
    "NotLiveDeployment": "deployment {id} is not the live one (live is {liveId})",
    "StepDenied": "deployment {id} cannot take this step: {gate}",
    "CanaryBlocks": "deployment {id} cannot take this step: its canary verdict is {verdict}"
                    " (fail blocks for good, marginal until a later pass)",
    "RestoresRevokedArtifact": "rolling back deployment {id} would make deployment {restoredId} live again, whose artifact"
                               " {artifactId} is revoked; fail the rollout instead, or deploy another version",
    "AlreadyResolvedBy": "a responder of organisation {org} has already resolved incident {incidentId}",
    "ResponderWithoutOrganisation": "responder {responder} is not a member of any organisation",
    "TimelockUnexpectedOperationState": "the governance timelock refused operation {operationId} in its current state",
    "InvalidScore": "score {scoreBasisPoints} must be 0 to 10000 basis points",
    "InvalidVerdict": "verdict {verdict} must be pass, marginal or fail",
    "UnknownIncident": "incident {id} does not exist",
    "IncidentStateInvalid": "incident {id} is {actual}, but this needs it {expected}",
    "InvalidSeverity": "severity {severity} must be 1 (most severe) to 4",
    "EmptyTitle": "an incident needs a title",
    "RollbackNotFound": "deployment {rollbackId} named for incident {incidentId} was not rolled back",
}

_ROLE_NAMES = {}  # filled lazily: keccak(role name) -> name
_ENUMS = {
    "DeploymentStateInvalid": ("deployment", ["none", "in progress", "completed", "failed", "rolled back"]),
    "IncidentStateInvalid": ("incident", ["none", "open", "acknowledged", "mitigated", "resolved"]),
}
_PROPOSAL_STATES = ["unknown", "pending", "scheduled", "executed", "cancelled"]
_VERDICTS = ["none", "pass", "marginal", "fail"]
_ERROR_CLASSES: dict[str, type[ContractRevert]] = {}


_DIGEST_ARGUMENTS = {"digest", "existingDigest"}  # artifact digests: shown as users type them


def _display(name: str, value):
    if isinstance(value, bytes):
        if name in _DIGEST_ARGUMENTS and len(value) == 32:
            return "sha256:" + value.hex()  # one digest form in every message
        return "0x" + value.hex()
    return value


def gate_details(reason: str, detail_a: int, detail_b: int) -> dict:
    """The two numbers of a gate answer, named."""
    return {
        "rejected_by": lambda: {"approver": "0x" + f"{detail_a:040x}"[-40:]},  # the address in a uint256
        "waiting_period": lambda: {"ready_at": detail_a, "now": detail_b},
        "not_enough_approvals": lambda: {"have": detail_a, "need": detail_b},
        "approvals_expired": lambda: {"have": detail_a, "need": detail_b},
        "not_enough_organisations": lambda: {"have": detail_a, "need": detail_b},
        # the answer holds only the name's hash; callers that can read the policy's events put the name
        # in "environment" (shipledger._internal.gatecall.prior_environment_name)
        "missing_prior_environment": lambda: {"environment": f"0x{detail_a:064x}", "environment_key": f"0x{detail_a:064x}"},
        "frozen_by_incident": lambda: {"incidents": detail_a, "severity": detail_b},
        "rollout_in_progress": lambda: {"deployment": detail_a},
        # the hash of the type's name; callers that read the policy's events put the name in "attestation_type"
        "missing_attestation": lambda: {"attestation_type": f"0x{detail_a:064x}", "attestation_key": f"0x{detail_a:064x}"},
    }.get(reason, dict)()


def gate_sentence(reason: str, details: dict) -> str:
    return GATE_SENTENCES[reason].format(**details)


def error_class(name: str) -> type[ContractRevert]:
    """The typed exception class of a contract error, e.g. error_class("GateDenied")."""
    if name not in _ERROR_CLASSES:
        base = InvalidInput if name in _INPUT_ERRORS else Denied
        _ERROR_CLASSES[name] = type(name, (base,), {"error_name": name, "__module__": __name__})
    return _ERROR_CLASSES[name]


def revert_error(name: str, arguments: dict, prior_environment: str | None = None,
                 attestation_type: str | None = None) -> ContractRevert:
    """Build the typed exception for a decoded custom error. prior_environment / attestation_type:
    the name a GateDenied or StepDenied for a missing prior environment or attestation names by
    hash, when known."""
    values = {k: _display(k, v) for k, v in arguments.items()}
    if name in _ENUMS:
        _, states = _ENUMS[name]
        values["expected"] = states[arguments["expected"]]
        values["actual"] = states[arguments["actual"]]
    if name == "AccessControlUnauthorizedAccount":
        values["neededRole"] = role_name(arguments["neededRole"])
    if name in ("InvalidRole", "RoleAlreadyHeld", "RoleNotHeld"):
        values["role"] = role_name(arguments["role"])
        values["scoped"] = f" for {arguments['scope']}" if arguments.get("scope") else " everywhere"
    if name == "ProposalStateInvalid":
        values["state"] = _PROPOSAL_STATES[arguments["state"]] if arguments["state"] < len(_PROPOSAL_STATES) else arguments["state"]
    if name == "CanaryBlocks":
        values["verdict"] = _VERDICTS[arguments["verdict"]] if arguments["verdict"] < len(_VERDICTS) else arguments["verdict"]
    if name == "UnsupportedChange":
        values["selector"] = "0x" + bytes(arguments["selector"]).hex()
    if name in ("GateDenied", "StepDenied"):
        reason = list(GATE_SENTENCES)[arguments["reason"]]
        details = gate_details(reason, arguments["detailA"], arguments["detailB"])
        if prior_environment and "environment_key" in details:
            details["environment"] = prior_environment
        if attestation_type and "attestation_key" in details:
            details["attestation_type"] = attestation_type
        values["gate"] = gate_sentence(reason, details)
        arguments = {**arguments, "reason_name": reason, "details": details}
    sentence = _SENTENCES.get(name, name + " {arguments}").format(**values, arguments=values)
    return error_class(name)(arguments, sentence)


def role_name(role: bytes) -> str:
    if not _ROLE_NAMES:
        from eth_utils import keccak

        _ROLE_NAMES[b"\0" * 32] = "ADMIN"
        for r in ("REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER", "ATTESTOR"):
            _ROLE_NAMES[keccak(text=f"{r}_ROLE")] = r
    return _ROLE_NAMES.get(bytes(role), "0x" + bytes(role).hex())

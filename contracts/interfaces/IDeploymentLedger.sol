// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {GateReason} from "./IReleaseRegistry.sol";

/// @title The shipledger deployment ledger
/// @notice Answers the gate ("may this artifact go to this environment now?"), records every rollout
/// step, canary verdict and rollback, keeps the live deployment of each (service, environment), and
/// holds incidents, whose open ones can freeze deployments. Roles are read from the registry.
/// @dev Deployment ids and incident ids are sequential from 1. Deployment lifecycle:
///   InProgress --promote/recordAnalysis--> InProgress --complete--> Completed
///   InProgress --fail--> Failed;  InProgress or live Completed --rollback--> RolledBack
/// `start`, `promote` and `complete` each pass the gate at that moment (a rollout's own progress
/// aside), and `promote` and `complete` also need its canary: a Fail verdict blocks them for good, a
/// Marginal one until a later Pass. A rollback never returns to a revoked artifact.
/// Events after `DeploymentStarted` and `IncidentOpened` are indexed by id and by
/// target = keccak256(abi.encode(keccak256(service), keccak256(environment))).
/// Incident lifecycle: Open --acknowledge--> Acknowledged --mitigate--> Mitigated, and `resolve` from
/// any of them. Resolving an incident that freezes its target's policy needs responders of
/// `resolveQuorum` distinct organisations. Every state change folds its events into `historyHead`.
interface IDeploymentLedger {
    enum DeploymentStatus {
        None,
        InProgress,
        Completed,
        Failed,
        RolledBack
    }

    enum Verdict {
        None,
        Pass,
        Marginal,
        Fail
    }

    enum IncidentStatus {
        None,
        Open,
        Acknowledged,
        Mitigated,
        Resolved
    }

    /// @notice What storage keeps of a deployment; names and digest are in `DeploymentStarted`.
    struct Deployment {
        bytes32 artifactId;
        bytes32 target;
        uint64 previous; // the live deployment when this one started, 0 for none
        uint40 startedAt;
        uint8 percent;
        DeploymentStatus status;
        Verdict canary; // Fail stays Fail; Marginal until a later Pass
    }

    /// @notice The live (last completed) and the in-progress deployment of a (service, environment).
    struct TargetState {
        uint64 live;
        uint64 active;
    }

    struct Incident {
        bytes32 target;
        uint8 severity;
        IncidentStatus status;
        uint256 resolvedBy; // bitmask of the organisations whose responders resolved it so far
    }

    struct IncidentInput {
        string service;
        string environment;
        uint8 severity; // 1 (most severe) .. 4
        uint256[] suspects; // deployment ids suspected of causing it
        string title;
        bytes32 detailsDigest;
        string detailsUri;
    }

    // ------------------------------------------------------------------ events
    event DeploymentStarted(
        uint256 indexed id,
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 environmentKey,
        string service,
        string environment,
        uint8 percent,
        uint256 previous,
        address deployer
    );
    event DeploymentPromoted(
        uint256 indexed id,
        bytes32 indexed target,
        uint8 fromPercent,
        uint8 toPercent,
        address deployer
    );
    event CanaryAnalysisRecorded(
        uint256 indexed id,
        bytes32 indexed target,
        uint8 percent,
        uint16 scoreBasisPoints,
        Verdict verdict,
        bytes32 reportDigest,
        string reportUri,
        string judge,
        address recorder
    );
    event DeploymentCompleted(
        uint256 indexed id, bytes32 indexed target, uint256 replaced, address deployer
    );
    event DeploymentFailed(
        uint256 indexed id, bytes32 indexed target, string reason, address deployer
    );
    event DeploymentRolledBack(
        uint256 indexed id,
        bytes32 indexed target,
        uint256 restored,
        DeploymentStatus fromStatus,
        string reason,
        address deployer
    );

    event IncidentOpened(
        uint256 indexed id,
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        string service,
        string environment,
        uint8 severity,
        uint256[] suspects,
        string title,
        bytes32 detailsDigest,
        string detailsUri,
        address responder
    );
    event IncidentAcknowledged(uint256 indexed id, bytes32 indexed target, address responder);
    event IncidentMitigated(
        uint256 indexed id, bytes32 indexed target, uint256 rollbackId, address responder
    );
    /// @notice A responder of organisation `org` resolved the incident; it is resolved once
    /// `organisations` reaches `needed` (1 unless the incident freezes its target).
    event IncidentResolveApproved(
        uint256 indexed id, bytes32 indexed target, address responder, uint8 org, uint8 organisations, uint8 needed
    );
    event IncidentResolved(
        uint256 indexed id,
        bytes32 indexed target,
        bytes32 postmortemDigest,
        string postmortemUri,
        address responder
    );
    event PostmortemAttached(uint256 indexed id, bytes32 indexed target, bytes32 digest, string uri, address responder);

    // ------------------------------------------------------------------ errors
    error GateDenied(GateReason reason, uint256 detailA, uint256 detailB);
    error UnknownDeployment(uint256 id);
    error DeploymentStateInvalid(uint256 id, DeploymentStatus expected, DeploymentStatus actual);
    error InvalidPercent(uint8 percent);
    error PercentNotIncreasing(uint256 id, uint8 current, uint8 requested);
    error RolloutIncomplete(uint256 id, uint8 percent);
    error RolloutInProgress(bytes32 target, uint256 activeId);
    error NotLiveDeployment(uint256 id, uint256 liveId);
    /// @notice `promote` or `complete` refused: the gate no longer allows the rollout.
    error StepDenied(uint256 id, GateReason reason, uint256 detailA, uint256 detailB);
    /// @notice `promote` or `complete` refused: the canary's verdict is Fail, or Marginal without a later Pass.
    error CanaryBlocks(uint256 id, Verdict verdict);
    /// @notice `rollback` refused: it would return to deployment `restoredId`, whose artifact is revoked.
    error RestoresRevokedArtifact(uint256 id, uint256 restoredId, bytes32 artifactId);
    error AlreadyResolvedBy(uint256 incidentId, uint8 org);
    error InvalidScore(uint16 scoreBasisPoints);
    error InvalidVerdict(Verdict verdict);
    error UnknownIncident(uint256 id);
    error IncidentStateInvalid(uint256 id, IncidentStatus expected, IncidentStatus actual);
    error InvalidSeverity(uint8 severity);
    error EmptyTitle();
    error RollbackNotFound(uint256 incidentId, uint256 rollbackId);
    error ResponderWithoutOrganisation(address responder);

    // ------------------------------------------------------------------ gate
    /// @notice May `digest` of `service` be deployed to `environment` at this block? Returns the first
    /// reason it may not (see GateReason for the order and the meaning of the two numbers).
    function gate(bytes32 digest, string calldata service, string calldata environment)
        external
        view
        returns (GateReason reason, uint256 detailA, uint256 detailB);

    // ------------------------------------------------------------------ deployments (DEPLOYER)
    /// @notice Starts a rollout at `percent` (1..100) if the gate allows it at this block.
    function start(bytes32 digest, string calldata service, string calldata environment, uint8 percent)
        external
        returns (uint256 id);

    /// @notice Raises the rollout of an in-progress deployment to `percent`.
    function promote(uint256 id, uint8 percent) external;

    /// @notice Records a canary judge's verdict on an in-progress deployment. The report behind
    /// `reportDigest` holds the config and the samples, so anyone can recompute the verdict.
    function recordAnalysis(
        uint256 id,
        uint16 scoreBasisPoints,
        Verdict verdict,
        bytes32 reportDigest,
        string calldata reportUri,
        string calldata judge
    ) external;

    /// @notice Marks a deployment at 100% as completed; it becomes the live one.
    function complete(uint256 id) external;

    /// @notice Marks an in-progress deployment as failed; the live deployment stays.
    function fail(uint256 id, string calldata reason) external;

    /// @notice Rolls back an in-progress deployment, or the live one to the deployment it replaced.
    function rollback(uint256 id, string calldata reason) external;

    function getDeployment(uint256 id) external view returns (Deployment memory);
    function targetState(string calldata service, string calldata environment)
        external
        view
        returns (TargetState memory);
    function deploymentCount() external view returns (uint256);

    // ------------------------------------------------------------------ incidents (RESPONDER)
    function openIncident(IncidentInput calldata input) external returns (uint256 id);
    function acknowledge(uint256 id) external;
    /// @notice Marks an incident mitigated, optionally naming the rollback that mitigated it.
    function mitigate(uint256 id, uint256 rollbackId) external;
    function resolve(uint256 id, bytes32 postmortemDigest, string calldata postmortemUri) external;
    /// @notice Attaches (or replaces) the postmortem of an incident, at any time. Only RESPONDER.
    function attachPostmortem(uint256 id, bytes32 digest, string calldata uri) external;

    function getIncident(uint256 id) external view returns (Incident memory);
    /// @notice How many incidents of each severity (index 0: severity 1) are open (not resolved).
    function openIncidentCounts(string calldata service, string calldata environment)
        external
        view
        returns (uint64[4] memory);
    /// @notice How many standing completions (not rolled back) the artifact has in the target.
    function completions(bytes32 artifactId, bytes32 target) external view returns (uint256);
    /// @notice The running hash of every record this contract emitted, and their count (History.sol).
    function historyHead() external view returns (bytes32 head, uint64 count);
    function incidentCount() external view returns (uint256);
}

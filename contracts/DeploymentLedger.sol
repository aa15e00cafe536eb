// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";

import {IDeploymentLedger} from "./interfaces/IDeploymentLedger.sol";
import {IReleaseRegistry, GateReason} from "./interfaces/IReleaseRegistry.sol";
import {Keys, Roles} from "./libraries/Keys.sol";

/// @title DeploymentLedger
/// @notice The gate, rollouts and incidents. See IDeploymentLedger.
contract DeploymentLedger is IDeploymentLedger {
    using EnumerableSet for EnumerableSet.UintSet;

    uint16 private constant MAX_SCORE = 10_000; // basis points: 100.00

    /// @notice Where artifacts, policies, votes and roles live.
    IReleaseRegistry public immutable registry;

    uint64 private _deploymentCount;
    uint64 private _incidentCount;
    mapping(uint256 id => Deployment) private _deployments;
    mapping(bytes32 target => TargetState) private _targets;
    mapping(bytes32 releaseKey => bool) private _completed; // artifact completed a rollout in target
    mapping(uint256 id => Incident) private _incidents;
    mapping(bytes32 target => EnumerableSet.UintSet) private _openIncidents; // not yet resolved

    modifier onlyRole(bytes32 role) {
        if (!IAccessControl(address(registry)).hasRole(role, msg.sender)) {
            revert IAccessControl.AccessControlUnauthorizedAccount(msg.sender, role);
        }
        _;
    }

    constructor(IReleaseRegistry registry_) {
        registry = registry_;
    }

    // ================================================================== gate

    /// @inheritdoc IDeploymentLedger
    function gate(bytes32 digest, string calldata service, string calldata environment)
        external
        view
        returns (GateReason reason, uint256 detailA, uint256 detailB)
    {
        bytes32 serviceKey = Keys.name(service);
        return _gate(Keys.artifactId(serviceKey, digest), serviceKey, Keys.target(serviceKey, Keys.name(environment)));
    }

    /// @dev Registry checks first (artifact, policy, votes, waiting period), then the prior
    /// environment, then incident freezes.
    function _gate(bytes32 artifactId, bytes32 serviceKey, bytes32 target)
        private
        view
        returns (GateReason, uint256, uint256)
    {
        IReleaseRegistry.ReleaseCheck memory check = registry.checkRelease(artifactId, target);
        if (check.reason != GateReason.Allowed) return (check.reason, check.detailA, check.detailB);
        if (check.priorEnvironment != 0) {
            bytes32 priorTarget = Keys.target(serviceKey, check.priorEnvironment);
            if (!_completed[Keys.release(artifactId, priorTarget)]) {
                return (GateReason.MissingPriorEnvironment, uint256(check.priorEnvironment), 0);
            }
        }
        if (check.freezeSeverity != 0) {
            EnumerableSet.UintSet storage open = _openIncidents[target];
            uint256 count = open.length();
            for (uint256 i; i < count; ++i) {
                uint256 incidentId = open.at(i);
                uint8 severity = _incidents[incidentId].severity;
                if (severity <= check.freezeSeverity) return (GateReason.FrozenByIncident, incidentId, severity);
            }
        }
        return (GateReason.Allowed, 0, 0);
    }

    // ================================================================== deployments

    /// @inheritdoc IDeploymentLedger
    function start(bytes32 digest, string calldata service, string calldata environment, uint8 percent)
        external
        onlyRole(Roles.DEPLOYER)
        returns (uint256 id)
    {
        bytes32 serviceKey = Keys.name(service);
        bytes32 environmentKey = Keys.name(environment);
        if (percent == 0 || percent > 100) revert InvalidPercent(percent);
        bytes32 target = Keys.target(serviceKey, environmentKey);
        TargetState storage state = _targets[target];
        if (state.active != 0) revert RolloutInProgress(target, state.active);
        bytes32 artifactId = Keys.artifactId(serviceKey, digest);
        (GateReason reason, uint256 detailA, uint256 detailB) = _gate(artifactId, serviceKey, target);
        if (reason != GateReason.Allowed) revert GateDenied(reason, detailA, detailB);

        id = ++_deploymentCount;
        uint64 previous = state.live;
        state.active = uint64(id);
        _deployments[id] = Deployment({
            artifactId: artifactId,
            target: target,
            previous: previous,
            startedAt: uint40(block.timestamp),
            percent: percent,
            status: DeploymentStatus.InProgress
        });
        emit DeploymentStarted(
            id, digest, serviceKey, environmentKey, service, environment, percent, previous, msg.sender
        );
    }

    /// @inheritdoc IDeploymentLedger
    function promote(uint256 id, uint8 percent) external onlyRole(Roles.DEPLOYER) {
        Deployment storage deployment = _inProgress(id);
        if (percent > 100) revert InvalidPercent(percent);
        uint8 current = deployment.percent;
        if (percent <= current) revert PercentNotIncreasing(id, current, percent);
        deployment.percent = percent;
        emit DeploymentPromoted(id, deployment.target, current, percent, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function recordAnalysis(
        uint256 id,
        uint16 scoreBasisPoints,
        Verdict verdict,
        bytes32 reportDigest,
        string calldata reportUri,
        string calldata judge
    ) external onlyRole(Roles.DEPLOYER) {
        Deployment storage deployment = _inProgress(id);
        if (scoreBasisPoints > MAX_SCORE) revert InvalidScore(scoreBasisPoints);
        if (verdict == Verdict.None) revert InvalidVerdict(verdict);
        emit CanaryAnalysisRecorded(
            id,
            deployment.target,
            deployment.percent,
            scoreBasisPoints,
            verdict,
            reportDigest,
            reportUri,
            judge,
            msg.sender
        );
    }

    /// @inheritdoc IDeploymentLedger
    function complete(uint256 id) external onlyRole(Roles.DEPLOYER) {
        Deployment storage deployment = _inProgress(id);
        if (deployment.percent != 100) revert RolloutIncomplete(id, deployment.percent);
        if (registry.isRevoked(deployment.artifactId)) revert ArtifactRevokedDuringRollout(id);
        TargetState storage state = _targets[deployment.target];
        uint256 replaced = state.live;
        state.live = uint64(id);
        state.active = 0;
        deployment.status = DeploymentStatus.Completed;
        _completed[Keys.release(deployment.artifactId, deployment.target)] = true;
        emit DeploymentCompleted(id, deployment.target, replaced, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function fail(uint256 id, string calldata reason) external onlyRole(Roles.DEPLOYER) {
        Deployment storage deployment = _inProgress(id);
        deployment.status = DeploymentStatus.Failed;
        _targets[deployment.target].active = 0;
        emit DeploymentFailed(id, deployment.target, reason, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function rollback(uint256 id, string calldata reason) external onlyRole(Roles.DEPLOYER) {
        Deployment storage deployment = _existingDeployment(id);
        DeploymentStatus from = deployment.status;
        TargetState storage state = _targets[deployment.target];
        uint256 restored;
        if (from == DeploymentStatus.InProgress) {
            state.active = 0;
            restored = state.live;
        } else if (from == DeploymentStatus.Completed) {
            if (state.live != id) revert NotLiveDeployment(id, state.live);
            if (state.active != 0) revert RolloutInProgress(deployment.target, state.active);
            restored = deployment.previous;
            state.live = uint64(restored);
            // The artifact no longer counts as done here, unless the restored deployment is the same
            // artifact (a redeploy being undone), which is still live in this target.
            if (restored == 0 || _deployments[restored].artifactId != deployment.artifactId) {
                _completed[Keys.release(deployment.artifactId, deployment.target)] = false;
            }
        } else {
            revert DeploymentStateInvalid(id, DeploymentStatus.InProgress, from);
        }
        deployment.status = DeploymentStatus.RolledBack;
        emit DeploymentRolledBack(id, deployment.target, restored, from, reason, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function getDeployment(uint256 id) external view returns (Deployment memory) {
        return _existingDeployment(id);
    }

    /// @inheritdoc IDeploymentLedger
    function targetState(string calldata service, string calldata environment)
        external
        view
        returns (TargetState memory)
    {
        return _targets[Keys.target(Keys.name(service), Keys.name(environment))];
    }

    /// @inheritdoc IDeploymentLedger
    function deploymentCount() external view returns (uint256) {
        return _deploymentCount;
    }

    function _existingDeployment(uint256 id) private view returns (Deployment storage deployment) {
        deployment = _deployments[id];
        if (deployment.status == DeploymentStatus.None) revert UnknownDeployment(id);
    }

    function _inProgress(uint256 id) private view returns (Deployment storage deployment) {
        deployment = _existingDeployment(id);
        if (deployment.status != DeploymentStatus.InProgress) {
            revert DeploymentStateInvalid(id, DeploymentStatus.InProgress, deployment.status);
        }
    }

    // ================================================================== incidents

    /// @inheritdoc IDeploymentLedger
    function openIncident(IncidentInput calldata input) external onlyRole(Roles.RESPONDER) returns (uint256 id) {
        bytes32 serviceKey = Keys.name(input.service);
        bytes32 environmentKey = Keys.name(input.environment);
        if (input.severity == 0 || input.severity > 4) revert InvalidSeverity(input.severity);
        if (bytes(input.title).length == 0) revert EmptyTitle();
        for (uint256 i; i < input.suspects.length; ++i) {
            _existingDeployment(input.suspects[i]);
        }
        bytes32 target = Keys.target(serviceKey, environmentKey);
        id = ++_incidentCount;
        _incidents[id] = Incident({target: target, severity: input.severity, status: IncidentStatus.Open});
        _openIncidents[target].add(id);
        emit IncidentOpened(
            id,
            serviceKey,
            environmentKey,
            input.service,
            input.environment,
            input.severity,
            input.suspects,
            input.title,
            input.detailsDigest,
            input.detailsUri,
            msg.sender
        );
    }

    /// @inheritdoc IDeploymentLedger
    function acknowledge(uint256 id) external onlyRole(Roles.RESPONDER) {
        Incident storage incident = _advanceIncident(id, IncidentStatus.Open, IncidentStatus.Acknowledged);
        emit IncidentAcknowledged(id, incident.target, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function mitigate(uint256 id, uint256 rollbackId) external onlyRole(Roles.RESPONDER) {
        if (rollbackId != 0 && _deployments[rollbackId].status != DeploymentStatus.RolledBack) {
            revert RollbackNotFound(id, rollbackId);
        }
        Incident storage incident = _advanceIncident(id, IncidentStatus.Acknowledged, IncidentStatus.Mitigated);
        emit IncidentMitigated(id, incident.target, rollbackId, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function resolve(uint256 id, bytes32 postmortemDigest, string calldata postmortemUri)
        external
        onlyRole(Roles.RESPONDER)
    {
        Incident storage incident = _advanceIncident(id, IncidentStatus.Mitigated, IncidentStatus.Resolved);
        _openIncidents[incident.target].remove(id);
        emit IncidentResolved(id, incident.target, postmortemDigest, postmortemUri, msg.sender);
    }

    /// @inheritdoc IDeploymentLedger
    function getIncident(uint256 id) external view returns (Incident memory incident) {
        incident = _incidents[id];
        if (incident.status == IncidentStatus.None) revert UnknownIncident(id);
    }

    /// @inheritdoc IDeploymentLedger
    function openIncidents(string calldata service, string calldata environment)
        external
        view
        returns (uint256[] memory)
    {
        return _openIncidents[Keys.target(Keys.name(service), Keys.name(environment))].values();
    }

    /// @inheritdoc IDeploymentLedger
    function incidentCount() external view returns (uint256) {
        return _incidentCount;
    }

    function _advanceIncident(uint256 id, IncidentStatus expected, IncidentStatus next)
        private
        returns (Incident storage incident)
    {
        incident = _incidents[id];
        if (incident.status == IncidentStatus.None) revert UnknownIncident(id);
        if (incident.status != expected) revert IncidentStateInvalid(id, expected, incident.status);
        incident.status = next;
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";

import {IDeploymentLedger} from "./interfaces/IDeploymentLedger.sol";
import {IReleaseRegistry, GateReason} from "./interfaces/IReleaseRegistry.sol";
import {History} from "./libraries/History.sol";
import {Keys, OrgSet, Roles} from "./libraries/Keys.sol";

/// @title DeploymentLedger
/// @notice The gate, rollouts and incidents. See IDeploymentLedger.
/// @dev The freeze check is O(1): each target keeps how many incidents of each severity are open, in
/// four 32-bit lanes, so the gas of `start` and the gate does not grow with incidents.
/// Storage is laid out so that `start` writes one fresh word per rollout besides the artifact id:
/// a target's live and active rollouts, its open incident counts and its index share one word, and a
/// deployment refers to its target by that index (the target's keys are written once, by its first
/// rollout). Ids and indexes are kept in 40 bits: 2^40 rollouts cannot happen (each is a transaction).
contract DeploymentLedger is IDeploymentLedger {
    using History for History.Head;

    uint16 private constant MAX_SCORE = 10_000; // basis points: 100.00
    uint256 private constant LANE_BITS = 32;
    uint256 private constant LANE_MASK = type(uint32).max;

    /// @dev A Deployment as stored: `target` is `_targetKeys[targetIndex].target`.
    struct DeploymentRecord {
        bytes32 artifactId;
        uint40 previous;
        uint40 startedAt;
        uint8 percent;
        DeploymentStatus status;
        Verdict canary;
        uint40 targetIndex;
    }

    /// @dev A TargetState as stored, with the target's open incident counts (lane s-1: severity s)
    /// and its index (0 until its first rollout).
    struct TargetRecord {
        uint40 live;
        uint40 active;
        uint40 index;
        uint128 openBySeverity;
    }

    /// @dev Set by a target's first rollout.
    struct TargetKeys {
        bytes32 target;
        bytes32 serviceKey;
    }

    /// @notice Where artifacts, policies, votes and roles live.
    IReleaseRegistry public immutable registry;

    History.Head private _history;
    uint40 private _deploymentCount;
    uint64 private _incidentCount;
    uint40 private _targetCount; // targets that have had a rollout
    mapping(uint256 id => DeploymentRecord) private _deployments;
    mapping(bytes32 target => TargetRecord) private _targets;
    mapping(uint256 index => TargetKeys) private _targetKeys;
    mapping(bytes32 releaseKey => uint256) private _completions; // standing (not rolled back) completions
    mapping(uint256 id => Incident) private _incidents;

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
        return _gate(Keys.artifactId(serviceKey, digest), serviceKey, Keys.target(serviceKey, Keys.name(environment)), 0);
    }

    /// @dev Registry checks first (artifact, policy, votes, waiting period, attestations), then the
    /// prior environment, then incident freezes, then another rollout in progress (other than `self`).
    function _gate(bytes32 artifactId, bytes32 serviceKey, bytes32 target, uint256 self)
        private
        view
        returns (GateReason, uint256, uint256)
    {
        IReleaseRegistry.ReleaseCheck memory check = registry.checkRelease(artifactId, target);
        if (check.reason != GateReason.Allowed) return (check.reason, check.detailA, check.detailB);
        if (check.priorEnvironment != 0) {
            bytes32 priorTarget = Keys.target(serviceKey, check.priorEnvironment);
            if (_completions[Keys.release(artifactId, priorTarget)] == 0) {
                return (GateReason.MissingPriorEnvironment, uint256(check.priorEnvironment), 0);
            }
        }
        TargetRecord storage state = _targets[target];
        if (check.freezeSeverity != 0) {
            uint256 lanes = state.openBySeverity;
            uint256 freezing;
            uint256 mostSevere;
            for (uint256 severity = check.freezeSeverity; severity >= 1; --severity) {
                uint256 count = (lanes >> ((severity - 1) * LANE_BITS)) & LANE_MASK;
                if (count != 0) {
                    freezing += count;
                    mostSevere = severity;
                }
            }
            if (freezing != 0) return (GateReason.FrozenByIncident, freezing, mostSevere);
        }
        uint256 active = state.active;
        if (active != 0 && active != self) return (GateReason.RolloutInProgress, active, 0);
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
        bytes32 artifactId = Keys.artifactId(serviceKey, digest);
        (GateReason reason, uint256 detailA, uint256 detailB) = _gate(artifactId, serviceKey, target, 0);
        if (reason != GateReason.Allowed) revert GateDenied(reason, detailA, detailB);

        TargetRecord storage state = _targets[target];
        uint40 index = state.index;
        if (index == 0) {
            index = ++_targetCount;
            state.index = index;
            _targetKeys[index] = TargetKeys({target: target, serviceKey: serviceKey});
        }
        id = ++_deploymentCount;
        uint40 previous = state.live;
        state.active = uint40(id);
        _deployments[id] = DeploymentRecord({
            artifactId: artifactId,
            previous: previous,
            startedAt: uint40(block.timestamp),
            percent: percent,
            status: DeploymentStatus.InProgress,
            canary: Verdict.None,
            targetIndex: index
        });
        _history.record4(
            DeploymentStarted.selector,
            History.topic(id),
            digest,
            serviceKey,
            abi.encode(environmentKey, service, environment, percent, previous, msg.sender)
        );
    }

    /// @inheritdoc IDeploymentLedger
    function promote(uint256 id, uint8 percent) external onlyRole(Roles.DEPLOYER) {
        DeploymentRecord storage deployment = _inProgress(id);
        if (percent > 100) revert InvalidPercent(percent);
        uint8 current = deployment.percent;
        if (percent <= current) revert PercentNotIncreasing(id, current, percent);
        _recheck(id, deployment);
        deployment.percent = percent;
        _history.record3(
            DeploymentPromoted.selector, History.topic(id), _targetOf(deployment), abi.encode(current, percent, msg.sender)
        );
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
        DeploymentRecord storage deployment = _inProgress(id);
        if (scoreBasisPoints > MAX_SCORE) revert InvalidScore(scoreBasisPoints);
        if (verdict == Verdict.None) revert InvalidVerdict(verdict);
        if (deployment.canary != Verdict.Fail) deployment.canary = verdict; // a Fail is never undone
        _history.record3(
            CanaryAnalysisRecorded.selector,
            History.topic(id),
            _targetOf(deployment),
            abi.encode(deployment.percent, scoreBasisPoints, verdict, reportDigest, reportUri, judge, msg.sender)
        );
    }

    /// @inheritdoc IDeploymentLedger
    function complete(uint256 id) external onlyRole(Roles.DEPLOYER) {
        DeploymentRecord storage deployment = _inProgress(id);
        if (deployment.percent != 100) revert RolloutIncomplete(id, deployment.percent);
        bytes32 target = _recheck(id, deployment);
        TargetRecord storage state = _targets[target];
        uint256 replaced = state.live;
        state.live = uint40(id);
        state.active = 0;
        deployment.status = DeploymentStatus.Completed;
        ++_completions[Keys.release(deployment.artifactId, target)];
        _history.record3(
            DeploymentCompleted.selector, History.topic(id), target, abi.encode(replaced, msg.sender)
        );
    }

    /// @inheritdoc IDeploymentLedger
    function fail(uint256 id, string calldata reason) external onlyRole(Roles.DEPLOYER) {
        DeploymentRecord storage deployment = _inProgress(id);
        deployment.status = DeploymentStatus.Failed;
        bytes32 target = _targetOf(deployment);
        _targets[target].active = 0;
        _history.record3(DeploymentFailed.selector, History.topic(id), target, abi.encode(reason, msg.sender));
    }

    /// @inheritdoc IDeploymentLedger
    function rollback(uint256 id, string calldata reason) external onlyRole(Roles.DEPLOYER) {
        DeploymentRecord storage deployment = _existingDeployment(id);
        DeploymentStatus from = deployment.status;
        bytes32 target = _targetOf(deployment);
        TargetRecord storage state = _targets[target];
        uint256 restored;
        if (from == DeploymentStatus.InProgress) {
            restored = state.live;
            _refuseRevoked(id, restored);
            state.active = 0;
        } else if (from == DeploymentStatus.Completed) {
            if (state.live != id) revert NotLiveDeployment(id, state.live);
            if (state.active != 0) revert RolloutInProgress(target, state.active);
            restored = deployment.previous;
            _refuseRevoked(id, restored);
            state.live = uint40(restored);
            --_completions[Keys.release(deployment.artifactId, target)];
        } else {
            revert DeploymentStateInvalid(id, DeploymentStatus.InProgress, from);
        }
        deployment.status = DeploymentStatus.RolledBack;
        _history.record3(
            DeploymentRolledBack.selector,
            History.topic(id),
            target,
            abi.encode(restored, from, reason, msg.sender)
        );
    }

    /// @dev `promote` and `complete` pass only while the gate still allows this rollout and its canary
    /// has not failed. Returns the deployment's target.
    function _recheck(uint256 id, DeploymentRecord storage deployment) private view returns (bytes32 target) {
        Verdict canary = deployment.canary;
        if (canary == Verdict.Fail || canary == Verdict.Marginal) revert CanaryBlocks(id, canary);
        TargetKeys storage keys = _targetKeys[deployment.targetIndex];
        target = keys.target;
        (GateReason reason, uint256 detailA, uint256 detailB) = _gate(deployment.artifactId, keys.serviceKey, target, id);
        if (reason != GateReason.Allowed) revert StepDenied(id, reason, detailA, detailB);
    }

    function _targetOf(DeploymentRecord storage deployment) private view returns (bytes32) {
        return _targetKeys[deployment.targetIndex].target;
    }

    function _refuseRevoked(uint256 id, uint256 restored) private view {
        if (restored == 0) return;
        bytes32 artifactId = _deployments[restored].artifactId;
        if (registry.isRevoked(artifactId)) revert RestoresRevokedArtifact(id, restored, artifactId);
    }

    /// @inheritdoc IDeploymentLedger
    function getDeployment(uint256 id) external view returns (Deployment memory) {
        DeploymentRecord storage deployment = _existingDeployment(id);
        return Deployment({
            artifactId: deployment.artifactId,
            target: _targetOf(deployment),
            previous: deployment.previous,
            startedAt: deployment.startedAt,
            percent: deployment.percent,
            status: deployment.status,
            canary: deployment.canary
        });
    }

    /// @inheritdoc IDeploymentLedger
    function targetState(string calldata service, string calldata environment)
        external
        view
        returns (TargetState memory)
    {
        TargetRecord storage state = _targets[Keys.target(Keys.name(service), Keys.name(environment))];
        return TargetState({live: state.live, active: state.active});
    }

    /// @inheritdoc IDeploymentLedger
    function deploymentCount() external view returns (uint256) {
        return _deploymentCount;
    }

    /// @inheritdoc IDeploymentLedger
    function completions(bytes32 artifactId, bytes32 target) external view returns (uint256) {
        return _completions[Keys.release(artifactId, target)];
    }

    function _existingDeployment(uint256 id) private view returns (DeploymentRecord storage deployment) {
        deployment = _deployments[id];
        if (deployment.status == DeploymentStatus.None) revert UnknownDeployment(id);
    }

    function _inProgress(uint256 id) private view returns (DeploymentRecord storage deployment) {
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
        _incidents[id] = Incident({target: target, severity: input.severity, status: IncidentStatus.Open, resolvedBy: 0});
        _countOpen(target, input.severity, true);
        _history.record4(
            IncidentOpened.selector,
            History.topic(id),
            serviceKey,
            environmentKey,
            abi.encode(
                input.service,
                input.environment,
                input.severity,
                input.suspects,
                input.title,
                input.detailsDigest,
                input.detailsUri,
                msg.sender
            )
        );
    }

    /// @inheritdoc IDeploymentLedger
    function acknowledge(uint256 id) external onlyRole(Roles.RESPONDER) {
        Incident storage incident = _existingIncident(id);
        if (incident.status != IncidentStatus.Open) revert IncidentStateInvalid(id, IncidentStatus.Open, incident.status);
        incident.status = IncidentStatus.Acknowledged;
        _history.record3(IncidentAcknowledged.selector, History.topic(id), incident.target, abi.encode(msg.sender));
    }

    /// @inheritdoc IDeploymentLedger
    function mitigate(uint256 id, uint256 rollbackId) external onlyRole(Roles.RESPONDER) {
        Incident storage incident = _existingIncident(id);
        IncidentStatus status = incident.status;
        if (status != IncidentStatus.Open && status != IncidentStatus.Acknowledged) {
            revert IncidentStateInvalid(id, IncidentStatus.Acknowledged, status);
        }
        if (rollbackId != 0) {
            DeploymentRecord storage rolledBack = _deployments[rollbackId];
            if (rolledBack.status != DeploymentStatus.RolledBack || _targetOf(rolledBack) != incident.target) {
                revert RollbackNotFound(id, rollbackId);
            }
        }
        incident.status = IncidentStatus.Mitigated;
        _history.record3(
            IncidentMitigated.selector, History.topic(id), incident.target, abi.encode(rollbackId, msg.sender)
        );
    }

    /// @inheritdoc IDeploymentLedger
    function resolve(uint256 id, bytes32 postmortemDigest, string calldata postmortemUri)
        external
        onlyRole(Roles.RESPONDER)
    {
        Incident storage incident = _existingIncident(id);
        if (incident.status == IncidentStatus.Resolved) {
            revert IncidentStateInvalid(id, IncidentStatus.Mitigated, IncidentStatus.Resolved);
        }
        bytes32 target = incident.target;
        uint8 org = registry.organisationOf(msg.sender);
        if (org == 0) revert ResponderWithoutOrganisation(msg.sender);
        uint8 needed = _resolveQuorum(target, incident.severity);
        uint256 bit = uint256(1) << org;
        if (incident.resolvedBy & bit != 0) revert AlreadyResolvedBy(id, org);
        uint256 resolvedBy = incident.resolvedBy | bit;
        incident.resolvedBy = resolvedBy;
        uint8 organisations = OrgSet.count(resolvedBy);
        _history.record3(
            IncidentResolveApproved.selector,
            History.topic(id),
            target,
            abi.encode(msg.sender, org, organisations, needed)
        );
        if (organisations < needed) return;

        incident.status = IncidentStatus.Resolved;
        _countOpen(target, incident.severity, false);
        _history.record3(
            IncidentResolved.selector, History.topic(id), target, abi.encode(postmortemDigest, postmortemUri, msg.sender)
        );
    }

    /// @dev Lifting a freeze takes responders of the policy's `resolveQuorum` organisations; an
    /// incident that freezes nothing is resolved by one.
    function _resolveQuorum(bytes32 target, uint8 severity) private view returns (uint8) {
        IReleaseRegistry.Policy memory policy = registry.policyAt(target);
        if (policy.version == 0 || policy.freezeSeverity == 0 || severity > policy.freezeSeverity) return 1;
        return policy.resolveQuorum;
    }

    /// @inheritdoc IDeploymentLedger
    function attachPostmortem(uint256 id, bytes32 digest, string calldata uri) external onlyRole(Roles.RESPONDER) {
        Incident storage incident = _existingIncident(id);
        _history.record3(
            PostmortemAttached.selector, History.topic(id), incident.target, abi.encode(digest, uri, msg.sender)
        );
    }

    /// @inheritdoc IDeploymentLedger
    function getIncident(uint256 id) external view returns (Incident memory) {
        return _existingIncident(id);
    }

    /// @inheritdoc IDeploymentLedger
    function openIncidentCounts(string calldata service, string calldata environment)
        external
        view
        returns (uint64[4] memory counts)
    {
        uint256 lanes = _targets[Keys.target(Keys.name(service), Keys.name(environment))].openBySeverity;
        for (uint256 i; i < 4; ++i) {
            counts[i] = uint64((lanes >> (i * LANE_BITS)) & LANE_MASK);
        }
    }

    /// @inheritdoc IDeploymentLedger
    function incidentCount() external view returns (uint256) {
        return _incidentCount;
    }

    /// @inheritdoc IDeploymentLedger
    function historyHead() external view returns (bytes32 head, uint64 count) {
        History.Head memory h = _history;
        return (bytes32(h.head), h.count);
    }

    /// @dev One more (or one fewer) open incident of `severity` on `target`. The lane is counted in
    /// checked 32-bit arithmetic, so it can neither wrap nor carry into the next severity's lane.
    function _countOpen(bytes32 target, uint8 severity, bool opened) private {
        TargetRecord storage state = _targets[target];
        uint256 shift = (severity - 1) * LANE_BITS;
        uint128 lanes = state.openBySeverity;
        uint32 count = uint32(lanes >> shift);
        count = opened ? count + 1 : count - 1;
        state.openBySeverity = uint128((lanes & ~(LANE_MASK << shift)) | (uint256(count) << shift)); // < 2^128: shift <= 96
    }

    function _existingIncident(uint256 id) private view returns (Incident storage incident) {
        incident = _incidents[id];
        if (incident.status == IncidentStatus.None) revert UnknownIncident(id);
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";

import {IReleaseRegistry, GateReason, Decision, ArtifactKind, SkipReason} from "./interfaces/IReleaseRegistry.sol";
import {History} from "./libraries/History.sol";
import {Keys, OrgSet, Roles} from "./libraries/Keys.sol";

/// @title ReleaseRegistry
/// @notice Consortium membership, artifacts, attestations, approval policies and votes. See IReleaseRegistry.
/// @dev Votes are packed so that the gate reads few storage slots. Every approver holds a vote slot
/// `index` (0..255), and each release key holds 64-bit entries, four per storage word, at that index:
///   decision (2 bits) | org (8) | epoch (16) | signedAt (38)
/// A slot's epoch rises each time the slot is given to an approver, and an entry counts only while
/// its epoch is the slot's and the slot's bit is set in `_activeApprovers`: so a removed approver's
/// votes stop counting, and a re-admitted one (or the next holder of the slot) starts with none.
/// The entry's time is also the signer's last action on the release ("latest action wins").
contract ReleaseRegistry is IReleaseRegistry, AccessControl, EIP712 {
    using BitMaps for BitMaps.BitMap;
    using EnumerableSet for EnumerableSet.Bytes32Set;
    using History for History.Head;

    bytes32 public constant REGISTRAR_ROLE = Roles.REGISTRAR;
    bytes32 public constant APPROVER_ROLE = Roles.APPROVER;
    bytes32 public constant DEPLOYER_ROLE = Roles.DEPLOYER;
    bytes32 public constant RESPONDER_ROLE = Roles.RESPONDER;
    bytes32 public constant ATTESTOR_ROLE = Roles.ATTESTOR;

    bytes32 public constant VOTE_TYPEHASH = keccak256(
        "Vote(address signer,bytes32 digest,string service,string environment,uint8 decision,uint256 nonce,uint64 signedAt,uint64 deadline)"
    );

    /// @dev A signature's deadline may be at most the policy ttl after its signing, or this when the
    /// ttl is 0 (approvals never expire): a signature handed out must not stay usable for ever.
    uint64 public constant MAX_SIGNATURE_VALIDITY = 30 days;
    uint256 private constant MAX_APPROVERS = 256;
    uint256 private constant MAX_REQUIRED_ATTESTATIONS = 8;
    uint256 private constant MAX_PRIOR_CHAIN = 16;
    uint256 private constant ENTRY_BITS = 64;
    uint256 private constant ENTRY_MASK = type(uint64).max;

    struct Member {
        uint8 org; // 0: not a member
        bool approver;
        uint8 slot; // the vote slot, while `approver`
        uint40 admittedAt; // when it became an approver: signatures made before do not count
    }

    struct Tally {
        uint256 valid;
        uint256 expired;
        uint256 organisations; // bitmask of organisation ids among valid approvals
        address rejector;
    }

    /// @inheritdoc IReleaseRegistry
    address public immutable governance;

    History.Head private _history;
    uint8 private _organisationCount;
    uint16 private _slotCount; // slots ever created
    uint256 private _activeApprovers; // bit i: vote slot i is held by an approver now
    uint8[] private _freeSlots;
    uint16[MAX_APPROVERS] private _slotEpoch;
    address[MAX_APPROVERS] private _slotAccount;
    mapping(uint8 org => address) private _stewards;
    mapping(address steward => uint8 org) private _stewardOrg;
    mapping(address account => Member) private _members;
    mapping(address account => EnumerableSet.Bytes32Set) private _heldRoles; // role ids besides APPROVER

    mapping(bytes32 artifactId => Artifact) private _artifacts;
    mapping(bytes32 serviceVersionKey => bytes32 recordHash) private _recordByVersion;
    mapping(bytes32 artifactId => mapping(bytes32 typeKey => bytes32 documentDigest)) private _attestations;
    mapping(bytes32 target => Policy) private _policies;
    mapping(bytes32 releaseKey => mapping(uint256 word => uint256 entries)) private _votes;
    mapping(address signer => BitMaps.BitMap) private _usedNonces;

    modifier onlyGovernance() {
        if (msg.sender != governance) revert NotGovernance(msg.sender);
        _;
    }

    /// @dev Sets up the consortium; the deploying key keeps no role. `governance_` is the address the
    /// Governance contract is deployed at next (its constructor checks that this registry names it).
    constructor(address governance_, Bootstrap memory b) EIP712("shipledger", "2") {
        if (b.organisations.length != b.stewards.length) revert InvalidBootstrap("one steward per organisation");
        if (b.members.length != b.memberOrgs.length || b.members.length != b.memberApprovers.length) {
            revert InvalidBootstrap("members, memberOrgs and memberApprovers differ in length");
        }
        if (b.roles.length != b.roleScopes.length || b.roles.length != b.roleAccounts.length) {
            revert InvalidBootstrap("roles, roleScopes and roleAccounts differ in length");
        }
        if (b.policies.length != b.policyServices.length || b.policies.length != b.policyEnvironments.length) {
            revert InvalidBootstrap("policies, policyServices and policyEnvironments differ in length");
        }
        if (governance_ == address(0)) revert ZeroAddress();
        governance = governance_;
        for (uint256 i; i < b.organisations.length; ++i) {
            _addOrganisation(b.organisations[i], b.stewards[i]);
        }
        for (uint256 i; i < b.members.length; ++i) {
            _addMember(b.members[i], b.memberOrgs[i]);
            if (b.memberApprovers[i]) _setApprover(b.members[i], true);
        }
        for (uint256 i; i < b.roles.length; ++i) {
            _grantScoped(b.roles[i], b.roleScopes[i], b.roleAccounts[i]);
        }
        for (uint256 i; i < b.policies.length; ++i) {
            _setPolicy(b.policyServices[i], b.policyEnvironments[i], b.policies[i]);
        }
    }

    // ================================================================== consortium (governance)

    /// @inheritdoc IReleaseRegistry
    function addOrganisation(string calldata name, address steward) external onlyGovernance returns (uint8) {
        return _addOrganisation(name, steward);
    }

    /// @inheritdoc IReleaseRegistry
    function setSteward(uint8 org, address steward) external onlyGovernance {
        _existingOrganisation(org);
        _claimSteward(steward, org);
        address old = _stewards[org];
        delete _stewardOrg[old];
        _stewards[org] = steward;
        _history.record2(StewardSet.selector, History.topic(org), abi.encode(old, steward));
    }

    /// @inheritdoc IReleaseRegistry
    function grantScopedRole(bytes32 role, string calldata scope, address account) external onlyGovernance {
        _grantScoped(role, scope, account);
    }

    /// @inheritdoc IReleaseRegistry
    function revokeScopedRole(bytes32 role, string calldata scope, address account) external onlyGovernance {
        bytes32 scopeKey = _checkScope(role, scope);
        if (!_revokeRole(Roles.id(role, scopeKey), account)) revert RoleNotHeld(role, scope, account);
        _history.record4(
            ScopedRoleRevoked.selector, role, scopeKey, History.topic(account), abi.encode(scope, msg.sender)
        );
    }

    /// @inheritdoc IReleaseRegistry
    function setPolicy(string calldata service, string calldata environment, PolicyInput calldata input)
        external
        onlyGovernance
    {
        _setPolicy(service, environment, input);
    }

    function _addOrganisation(string memory name, address steward) private returns (uint8 org) {
        Keys.name(name);
        if (_organisationCount == type(uint8).max) revert TooManyOrganisations();
        org = ++_organisationCount;
        _claimSteward(steward, org);
        _stewards[org] = steward;
        _history.record2(OrganisationAdded.selector, History.topic(org), abi.encode(name, steward));
    }

    /// @dev A steward speaks for one organisation only.
    function _claimSteward(address steward, uint8 org) private {
        if (steward == address(0)) revert ZeroAddress();
        uint8 current = _stewardOrg[steward];
        if (current != 0) revert AlreadySteward(steward, current);
        _stewardOrg[steward] = org;
    }

    function _existingOrganisation(uint8 org) private view {
        if (org == 0 || org > _organisationCount) revert OrganisationUnknown(org);
    }

    /// @dev Which scopes a role takes: REGISTRAR a service, ATTESTOR an attestation type, "" for all;
    /// DEPLOYER and RESPONDER only "". APPROVER is not granted here: stewards manage it.
    function _checkScope(bytes32 role, string memory scope) private pure returns (bytes32 scopeKey) {
        scopeKey = Keys.scope(scope);
        bool scoped = role == Roles.REGISTRAR || role == Roles.ATTESTOR;
        bool unscoped = role == Roles.DEPLOYER || role == Roles.RESPONDER;
        if (!(scoped || (unscoped && scopeKey == 0))) revert InvalidRole(role, scope);
    }

    function _grantScoped(bytes32 role, string memory scope, address account) private {
        bytes32 scopeKey = _checkScope(role, scope);
        if (_members[account].org == 0) revert NotMember(account);
        if (!_grantRole(Roles.id(role, scopeKey), account)) revert RoleAlreadyHeld(role, scope, account);
        _history.record4(
            ScopedRoleGranted.selector, role, scopeKey, History.topic(account), abi.encode(scope, msg.sender)
        );
    }

    /// @dev Every role change goes through here: AccessControl's event is folded into the history,
    /// and the roles an account holds are tracked so that removing a member revokes all of them.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (granted) {
            if (role != Roles.APPROVER) _heldRoles[account].add(role);
            _foldRoleEvent(IAccessControl.RoleGranted.selector, role, account);
        }
    }

    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        revoked = super._revokeRole(role, account);
        if (revoked) {
            // Folded before anything else is recorded: the history follows log order, and
            // OpenZeppelin has already emitted RoleRevoked (ApproverSlotFreed comes after it).
            _foldRoleEvent(IAccessControl.RoleRevoked.selector, role, account);
            if (role == Roles.APPROVER) _freeSlot(account);
            else _heldRoles[account].remove(role);
        }
    }

    /// @dev OpenZeppelin emitted the event `(role, account, sender)`, all three indexed, no data.
    function _foldRoleEvent(bytes32 topic0, bytes32 role, address account) private {
        _history.fold(keccak256(abi.encodePacked(topic0, role, History.topic(account), History.topic(msg.sender))));
    }

    // ================================================================== members (stewards)

    /// @inheritdoc IReleaseRegistry
    function addMember(address account, bool approver) external {
        uint8 org = _stewardOrg[msg.sender];
        if (org == 0) revert NotSteward(msg.sender);
        _addMember(account, org);
        if (approver) _setApprover(account, true);
    }

    /// @inheritdoc IReleaseRegistry
    function removeMember(address account) external {
        uint8 org = _members[account].org;
        if (org == 0) revert NotMember(account);
        if (msg.sender != governance) _onlyStewardOf(org);
        if (_members[account].approver) _setApprover(account, false);
        bytes32[] memory held = _heldRoles[account].values();
        for (uint256 i; i < held.length; ++i) {
            _revokeRole(held[i], account);
        }
        delete _members[account];
        _history.record3(MemberRemoved.selector, History.topic(account), History.topic(org), abi.encode(msg.sender));
    }

    /// @inheritdoc IReleaseRegistry
    function setApprover(address account, bool approver) external {
        uint8 org = _members[account].org;
        if (org == 0) revert NotMember(account);
        _onlyStewardOf(org);
        _setApprover(account, approver);
    }

    function _onlyStewardOf(uint8 org) private view {
        uint8 stewardOrg = _stewardOrg[msg.sender];
        if (stewardOrg == 0) revert NotSteward(msg.sender);
        if (stewardOrg != org) revert StewardOfOtherOrganisation(msg.sender, stewardOrg, org);
    }

    function _addMember(address account, uint8 org) private {
        if (account == address(0)) revert ZeroAddress();
        _existingOrganisation(org);
        Member storage member = _members[account];
        if (member.org != 0) revert AlreadyMember(account, member.org);
        member.org = org;
        _history.record3(MemberAdded.selector, History.topic(account), History.topic(org), abi.encode(msg.sender));
    }

    /// @dev An approver takes a free vote slot (or a new one) in a new epoch of that slot.
    function _setApprover(address account, bool approver) private {
        Member storage member = _members[account];
        if (approver == member.approver) {
            if (approver) revert RoleAlreadyHeld(Roles.APPROVER, "", account);
            revert RoleNotHeld(Roles.APPROVER, "", account);
        }
        if (!approver) {
            _revokeRole(Roles.APPROVER, account); // frees the slot
            return;
        }
        uint8 slot;
        if (_freeSlots.length != 0) {
            slot = _freeSlots[_freeSlots.length - 1];
            _freeSlots.pop();
        } else {
            if (_slotCount == MAX_APPROVERS) revert TooManyApprovers();
            slot = uint8(_slotCount++);
        }
        uint16 epoch = ++_slotEpoch[slot];
        _slotAccount[slot] = account;
        _activeApprovers |= 1 << slot;
        member.approver = true;
        member.slot = slot;
        member.admittedAt = uint40(block.timestamp);
        _grantRole(Roles.APPROVER, account);
        _history.record4(
            ApproverSlotAssigned.selector,
            History.topic(account),
            History.topic(slot),
            History.topic(member.org),
            abi.encode(epoch)
        );
    }

    /// @dev Called when APPROVER is revoked or renounced; a slot whose epoch is exhausted is retired.
    function _freeSlot(address account) private {
        Member storage member = _members[account];
        if (!member.approver) return;
        uint8 slot = member.slot;
        member.approver = false;
        _activeApprovers &= ~(uint256(1) << slot);
        uint16 epoch = _slotEpoch[slot];
        if (epoch != type(uint16).max) _freeSlots.push(slot);
        _history.record3(ApproverSlotFreed.selector, History.topic(account), History.topic(slot), abi.encode(epoch));
    }

    /// @inheritdoc IReleaseRegistry
    function organisationOf(address account) external view returns (uint8) {
        return _members[account].org;
    }

    /// @inheritdoc IReleaseRegistry
    function organisationCount() external view returns (uint8) {
        return _organisationCount;
    }

    /// @inheritdoc IReleaseRegistry
    function stewardOrganisation(address account) external view returns (uint8) {
        return _stewardOrg[account];
    }

    /// @inheritdoc IReleaseRegistry
    function stewardOf(uint8 org) external view returns (address) {
        return _stewards[org];
    }

    /// @inheritdoc IReleaseRegistry
    function hasScopedRole(bytes32 role, bytes32 scopeKey, address account) public view returns (bool) {
        return hasRole(Roles.id(role, scopeKey), account) || (scopeKey != 0 && hasRole(role, account));
    }

    // ================================================================== artifacts

    /// @inheritdoc IReleaseRegistry
    function register(ArtifactInput calldata input) external returns (bool) {
        _onlyRegistrarOf(Keys.name(input.service), input.service);
        return _register(input);
    }

    /// @inheritdoc IReleaseRegistry
    function registerBatch(ArtifactInput[] calldata inputs) external returns (uint256 registered) {
        if (inputs.length == 0) revert EmptyBatch();
        bytes32 allowedService; // batches are usually one service: check the role once per run
        for (uint256 i; i < inputs.length; ++i) {
            bytes32 serviceKey = Keys.name(inputs[i].service);
            if (serviceKey != allowedService) {
                _onlyRegistrarOf(serviceKey, inputs[i].service);
                allowedService = serviceKey;
            }
            if (_register(inputs[i])) ++registered;
        }
    }

    function _onlyRegistrarOf(bytes32 serviceKey, string calldata service) private view {
        if (!hasScopedRole(Roles.REGISTRAR, serviceKey, msg.sender)) revert NotRegistrarOf(msg.sender, service);
    }

    /// @inheritdoc IReleaseRegistry
    function recordHash(ArtifactInput calldata input) public pure returns (bytes32) {
        return keccak256(abi.encode(input));
    }

    function _register(ArtifactInput calldata input) private returns (bool) {
        if (input.digest == 0) revert InvalidDigest();
        bytes32 serviceKey = Keys.name(input.service);
        bytes32 versionKey = Keys.name(input.version);
        bytes32 versionSlot = keccak256(abi.encode(serviceKey, versionKey));
        bytes32 record = recordHash(input);
        bytes32 existing = _recordByVersion[versionSlot];
        if (existing == record) return false; // the identical whole record: nothing to do
        if (existing != 0) revert VersionAlreadyRegistered(input.service, input.version, existing);
        bytes32 id = Keys.artifactId(serviceKey, input.digest);
        if (_artifacts[id].registeredAt != 0) revert ArtifactAlreadyRegistered(input.digest, input.service);

        _artifacts[id] = Artifact({
            registrant: msg.sender, registeredAt: uint40(block.timestamp), revoked: false, kind: input.kind
        });
        _recordByVersion[versionSlot] = record;
        _history.record4(
            ArtifactRegistered.selector,
            input.digest,
            serviceKey,
            versionKey,
            abi.encode(
                input.service,
                input.version,
                input.kind,
                input.commit,
                input.committedAt,
                input.provenance,
                input.sbom,
                input.uri,
                msg.sender,
                record
            )
        );
        return true;
    }

    /// @inheritdoc IReleaseRegistry
    function revoke(bytes32 digest, string calldata service, string calldata reason) external {
        bytes32 serviceKey = Keys.name(service);
        _onlyRegistrarOf(serviceKey, service);
        Artifact storage artifact = _existingArtifact(Keys.artifactId(serviceKey, digest), digest, service);
        if (artifact.revoked) revert ArtifactIsRevoked(digest, service);
        artifact.revoked = true;
        _history.record3(ArtifactRevoked.selector, digest, serviceKey, abi.encode(service, reason, msg.sender));
    }

    /// @inheritdoc IReleaseRegistry
    function attest(
        bytes32 digest,
        string calldata service,
        string calldata attestationType,
        bytes32 documentDigest,
        string calldata uri
    ) external {
        bytes32 typeKey = Keys.name(attestationType);
        if (!hasScopedRole(Roles.ATTESTOR, typeKey, msg.sender)) revert NotAttestorOf(msg.sender, attestationType);
        if (documentDigest == 0) revert InvalidDigest();
        bytes32 serviceKey = Keys.name(service);
        bytes32 id = Keys.artifactId(serviceKey, digest);
        _existingArtifact(id, digest, service);
        _attestations[id][typeKey] = documentDigest;
        _history.record4(
            AttestationRecorded.selector,
            digest,
            serviceKey,
            typeKey,
            abi.encode(service, attestationType, documentDigest, uri, msg.sender)
        );
    }

    /// @inheritdoc IReleaseRegistry
    function getArtifact(bytes32 digest, string calldata service) external view returns (Artifact memory) {
        return _existingArtifact(Keys.artifactId(Keys.name(service), digest), digest, service);
    }

    /// @inheritdoc IReleaseRegistry
    function recordOf(string calldata service, string calldata version) external view returns (bytes32) {
        return _recordByVersion[keccak256(abi.encode(Keys.name(service), Keys.name(version)))];
    }

    /// @inheritdoc IReleaseRegistry
    function attestationOf(bytes32 digest, string calldata service, string calldata attestationType)
        external
        view
        returns (bytes32)
    {
        return _attestations[Keys.artifactId(Keys.name(service), digest)][Keys.name(attestationType)];
    }

    /// @inheritdoc IReleaseRegistry
    function isRevoked(bytes32 artifactId) external view returns (bool) {
        return _artifacts[artifactId].revoked;
    }

    function _existingArtifact(bytes32 id, bytes32 digest, string calldata service)
        private
        view
        returns (Artifact storage artifact)
    {
        artifact = _artifacts[id];
        if (artifact.registeredAt == 0) revert ArtifactNotFound(digest, service);
    }

    // ================================================================== policies

    function _setPolicy(string memory service, string memory environment, PolicyInput memory input) private {
        bytes32 serviceKey = Keys.name(service);
        bytes32 environmentKey = Keys.name(environment);
        uint8 organisations = _organisationCount;
        if (input.threshold == 0) revert InvalidPolicy("threshold must be at least 1");
        if (input.minOrganisations > input.threshold) revert InvalidPolicy("minOrganisations cannot exceed threshold");
        if (input.minOrganisations > organisations) {
            revert InvalidPolicy("minOrganisations cannot exceed the number of organisations");
        }
        if (input.freezeSeverity > 4) revert InvalidPolicy("freezeSeverity must be 0 (off) or 1..4");
        if (input.resolveQuorum == 0 || input.resolveQuorum > organisations) {
            revert InvalidPolicy("resolveQuorum must be 1..the number of organisations");
        }
        bytes32 prior;
        if (bytes(input.priorEnvironment).length != 0) {
            prior = Keys.name(input.priorEnvironment);
            _checkPriorChain(serviceKey, environmentKey, prior);
        }
        uint256 required = input.requiredAttestations.length;
        if (required > MAX_REQUIRED_ATTESTATIONS) revert InvalidPolicy("at most 8 required attestations");
        bytes32[] memory types = new bytes32[](required);
        for (uint256 i; i < required; ++i) {
            types[i] = Keys.name(input.requiredAttestations[i]);
            for (uint256 j; j < i; ++j) {
                if (types[j] == types[i]) revert InvalidPolicy("a required attestation is listed twice");
            }
        }

        Policy storage stored = _policies[Keys.target(serviceKey, environmentKey)];
        Policy memory old = stored;
        Policy memory updated = Policy({
            threshold: input.threshold,
            minOrganisations: input.minOrganisations,
            ttl: input.ttl,
            minWait: input.minWait,
            freezeSeverity: input.freezeSeverity,
            resolveQuorum: input.resolveQuorum,
            version: old.version + 1,
            priorEnvironment: prior,
            requiredAttestations: types
        });
        _policies[Keys.target(serviceKey, environmentKey)] = updated;
        _history.record3(
            PolicySet.selector,
            serviceKey,
            environmentKey,
            abi.encode(service, environment, old, updated, input.priorEnvironment, input.requiredAttestations)
        );
    }

    /// @dev The prior environments of a service must not form a cycle (nothing could ever ship).
    function _checkPriorChain(bytes32 serviceKey, bytes32 environmentKey, bytes32 prior) private view {
        for (uint256 depth; depth < MAX_PRIOR_CHAIN; ++depth) {
            if (prior == environmentKey) revert InvalidPolicy("prior environments would form a cycle");
            prior = _policies[Keys.target(serviceKey, prior)].priorEnvironment;
            if (prior == 0) return;
        }
        revert InvalidPolicy("the chain of prior environments is longer than 16");
    }

    /// @inheritdoc IReleaseRegistry
    function getPolicy(string calldata service, string calldata environment) external view returns (Policy memory) {
        Policy memory policy = _policies[Keys.target(Keys.name(service), Keys.name(environment))];
        if (policy.version == 0) revert PolicyNotFound(service, environment);
        return policy;
    }

    /// @inheritdoc IReleaseRegistry
    function policyAt(bytes32 target) external view returns (Policy memory) {
        return _policies[target];
    }

    // ================================================================== votes

    /// @inheritdoc IReleaseRegistry
    function approve(bytes32 digest, string calldata service, string calldata environment, string calldata comment)
        external
    {
        _voteByTransaction(digest, service, environment, Decision.Approve, comment);
    }

    /// @inheritdoc IReleaseRegistry
    function reject(bytes32 digest, string calldata service, string calldata environment, string calldata reason)
        external
    {
        _voteByTransaction(digest, service, environment, Decision.Reject, reason);
    }

    /// @inheritdoc IReleaseRegistry
    function withdraw(bytes32 digest, string calldata service, string calldata environment) external {
        Member memory member = _approver(msg.sender);
        bytes32 serviceKey = Keys.name(service);
        bytes32 environmentKey = Keys.name(environment);
        bytes32 release = Keys.release(Keys.artifactId(serviceKey, digest), Keys.target(serviceKey, environmentKey));
        (uint256 entry, uint256 word, uint256 shift) = _entry(release, member.slot);
        Decision previous = _counting(entry, member.slot) ? Decision(entry & 3) : Decision.None;
        if (previous == Decision.None) revert NoVoteToWithdraw(digest, environment, msg.sender);
        // Keep the time of this action: a signature made before the withdrawal stays stale.
        uint256 withdrawn = _packEntry(Decision.None, member.org, _slotEpoch[member.slot], block.timestamp);
        _votes[release][member.slot >> 2] = (word & ~(ENTRY_MASK << shift)) | (withdrawn << shift);
        _history.record4(
            VoteWithdrawn.selector, digest, serviceKey, environmentKey, abi.encode(msg.sender, previous, service, environment)
        );
    }

    /// @inheritdoc IReleaseRegistry
    function voteBySig(SignedVote[] calldata votes) external returns (uint256 recorded) {
        // Open to anyone on purpose: each signature is the authorisation, checked against APPROVER.
        // A vote that cannot count is skipped, not reverted, so no one can grief a batch by
        // front-running one of its votes.
        for (uint256 i; i < votes.length; ++i) {
            SignedVote calldata v = votes[i];
            SkipReason skip = _checkSignedVote(v);
            if (skip == SkipReason.None) {
                _usedNonces[v.signer].set(v.nonce);
                ++recorded;
            } else {
                _history.record3(
                    SignedVoteSkipped.selector, History.topic(v.signer), v.digest, abi.encode(v.nonce, i, skip, msg.sender)
                );
            }
        }
    }

    /// @dev Records the vote when it can count; otherwise says why not (without reverting).
    function _checkSignedVote(SignedVote calldata v) private returns (SkipReason) {
        bytes32 hash = voteHash(v.signer, v.digest, v.service, v.environment, v.decision, v.nonce, v.signedAt, v.deadline);
        if (!SignatureChecker.isValidSignatureNow(v.signer, hash, v.signature)) return SkipReason.BadSignature;
        if (!_members[v.signer].approver) return SkipReason.NotApprover;
        if (_usedNonces[v.signer].get(v.nonce)) return SkipReason.NonceUsed;
        if (v.signedAt > block.timestamp) return SkipReason.SignedInFuture;
        if (block.timestamp > v.deadline) return SkipReason.Expired;
        (bool recorded, SkipReason skip) = _vote(
            VoteRequest({
                approver: v.signer,
                digest: v.digest,
                service: v.service,
                environment: v.environment,
                decision: v.decision,
                signedAt: v.signedAt,
                nonce: v.nonce,
                deadline: v.deadline,
                bySignature: true
            }),
            ""
        );
        return recorded ? SkipReason.None : skip;
    }

    struct VoteRequest {
        address approver;
        bytes32 digest;
        string service;
        string environment;
        Decision decision;
        uint64 signedAt;
        uint256 nonce;
        uint64 deadline;
        bool bySignature;
    }

    function _voteByTransaction(
        bytes32 digest,
        string calldata service,
        string calldata environment,
        Decision decision,
        string calldata note
    ) private {
        _approver(msg.sender);
        VoteRequest memory request = VoteRequest({
            approver: msg.sender,
            digest: digest,
            service: service,
            environment: environment,
            decision: decision,
            signedAt: uint64(block.timestamp),
            nonce: 0,
            deadline: 0,
            bySignature: false
        });
        _vote(request, note);
    }

    /// @dev Records a vote. By transaction every refusal reverts with its error; by signature the
    /// refusals a signer cannot prevent others from causing return (false, reason) instead.
    function _vote(VoteRequest memory r, string memory note) private returns (bool, SkipReason) {
        if (r.decision != Decision.Approve && r.decision != Decision.Reject) {
            if (r.bySignature) return (false, SkipReason.Refused);
            revert InvalidDecision(r.decision);
        }
        bytes32 serviceKey = Keys.name(r.service);
        bytes32 environmentKey = Keys.name(r.environment);
        bytes32 id = Keys.artifactId(serviceKey, r.digest);
        Artifact memory artifact = _artifacts[id];
        bytes32 target = Keys.target(serviceKey, environmentKey);
        Policy storage policy = _policies[target];
        uint32 policyVersion = policy.version;
        if (r.bySignature) {
            if (artifact.registeredAt == 0 || artifact.revoked || policyVersion == 0) return (false, SkipReason.Refused);
            if (r.decision == Decision.Approve && artifact.registrant == r.approver) return (false, SkipReason.Refused);
            uint64 ttl = policy.ttl;
            uint64 validity = ttl == 0 || ttl > MAX_SIGNATURE_VALIDITY ? MAX_SIGNATURE_VALIDITY : ttl;
            if (r.deadline > r.signedAt + validity) return (false, SkipReason.Expired);
        } else {
            if (artifact.registeredAt == 0) revert ArtifactNotFound(r.digest, r.service);
            if (artifact.revoked) revert ArtifactIsRevoked(r.digest, r.service);
            if (policyVersion == 0) revert PolicyNotFound(r.service, r.environment);
            if (r.decision == Decision.Approve && artifact.registrant == r.approver) {
                revert RegistrantCannotApprove(r.digest, r.approver);
            }
        }

        Member memory member = _members[r.approver];
        bytes32 release = Keys.release(id, target);
        (uint256 entry, uint256 word, uint256 shift) = _entry(release, member.slot);
        bool counting = _counting(entry, member.slot);
        if (r.bySignature) {
            // Latest action wins: the signature must be newer than the signer's admission and than
            // its last recorded action on this release.
            uint256 lastAction = counting ? entry >> 26 : 0;
            if (r.signedAt <= member.admittedAt || r.signedAt <= lastAction) return (false, SkipReason.Stale);
        }
        if (counting && Decision(entry & 3) == r.decision) {
            if (r.bySignature) return (false, SkipReason.Refused);
            revert VoteAlreadyCast(r.digest, r.environment, r.approver, r.decision);
        }
        uint256 updated = _packEntry(r.decision, member.org, _slotEpoch[member.slot], r.signedAt);
        _votes[release][member.slot >> 2] = (word & ~(ENTRY_MASK << shift)) | (updated << shift);
        _emitVote(r, serviceKey, environmentKey, member.org, policyVersion, note);
        return (true, SkipReason.None);
    }

    function _emitVote(
        VoteRequest memory r,
        bytes32 serviceKey,
        bytes32 environmentKey,
        uint8 org,
        uint32 policyVersion,
        string memory note
    ) private {
        bytes memory data = abi.encode(
            r.approver,
            org,
            policyVersion,
            r.bySignature,
            r.signedAt,
            r.nonce,
            r.deadline,
            msg.sender,
            r.service,
            r.environment,
            note
        );
        bytes32 topic0 = r.decision == Decision.Approve ? ArtifactApproved.selector : ArtifactRejected.selector;
        _history.record4(topic0, r.digest, serviceKey, environmentKey, data);
    }

    /// @inheritdoc IReleaseRegistry
    function invalidateNonce(uint256 nonce) external {
        // Anyone may burn their own nonces: it can only take signatures out of circulation.
        _usedNonces[msg.sender].set(nonce);
        _history.record2(NonceInvalidated.selector, History.topic(msg.sender), abi.encode(nonce));
    }

    /// @inheritdoc IReleaseRegistry
    function nonceUsed(address signer, uint256 nonce) external view returns (bool) {
        return _usedNonces[signer].get(nonce);
    }

    /// @inheritdoc IReleaseRegistry
    function voteHash(
        address signer,
        bytes32 digest,
        string calldata service,
        string calldata environment,
        Decision decision,
        uint256 nonce,
        uint64 signedAt,
        uint64 deadline
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VOTE_TYPEHASH,
                    signer,
                    digest,
                    keccak256(bytes(service)),
                    keccak256(bytes(environment)),
                    decision,
                    nonce,
                    signedAt,
                    deadline
                )
            )
        );
    }

    /// @inheritdoc IReleaseRegistry
    function voteOf(bytes32 digest, string calldata service, string calldata environment, address approver)
        external
        view
        returns (Decision decision, uint256 signedAt)
    {
        Member memory member = _members[approver];
        if (!member.approver) return (Decision.None, 0);
        bytes32 serviceKey = Keys.name(service);
        bytes32 release = Keys.release(Keys.artifactId(serviceKey, digest), Keys.target(serviceKey, Keys.name(environment)));
        (uint256 entry,,) = _entry(release, member.slot);
        if (!_counting(entry, member.slot) || entry & 3 == 0) return (Decision.None, 0);
        return (Decision(entry & 3), entry >> 26);
    }

    function _approver(address account) private view returns (Member memory member) {
        member = _members[account];
        if (!member.approver) revert NotApprover(account);
    }

    function _entry(bytes32 release, uint8 slot) private view returns (uint256 entry, uint256 word, uint256 shift) {
        shift = (slot & 3) * ENTRY_BITS;
        word = _votes[release][slot >> 2];
        entry = (word >> shift) & ENTRY_MASK;
    }

    /// @dev Whether an entry belongs to the slot's current holder (and the slot has one).
    function _counting(uint256 entry, uint8 slot) private view returns (bool) {
        return entry != 0 && (_activeApprovers >> slot) & 1 == 1 && (entry >> 10) & 0xffff == _slotEpoch[slot];
    }

    function _packEntry(Decision decision, uint8 org, uint16 epoch, uint256 time) private pure returns (uint256) {
        return uint256(decision) | (uint256(org) << 2) | (uint256(epoch) << 10) | (time << 26);
    }

    // ================================================================== gate input

    /// @inheritdoc IReleaseRegistry
    function checkRelease(bytes32 artifactId, bytes32 target) external view returns (ReleaseCheck memory check) {
        Artifact memory artifact = _artifacts[artifactId];
        if (artifact.registeredAt == 0) return _deny(GateReason.UnknownArtifact, 0, 0);
        if (artifact.revoked) return _deny(GateReason.ArtifactRevoked, 0, 0);
        Policy storage policy = _policies[target];
        if (policy.version == 0) return _deny(GateReason.NoPolicy, 0, 0);

        Tally memory tally = _tally(Keys.release(artifactId, target), policy.ttl);
        if (tally.rejector != address(0)) return _deny(GateReason.RejectedBy, uint160(tally.rejector), 0);
        uint256 readyAt = uint256(artifact.registeredAt) + policy.minWait;
        if (block.timestamp < readyAt) return _deny(GateReason.WaitingPeriod, readyAt, block.timestamp);
        if (tally.valid < policy.threshold) {
            GateReason reason = tally.valid + tally.expired >= policy.threshold
                ? GateReason.ApprovalsExpired
                : GateReason.NotEnoughApprovals;
            return _deny(reason, tally.valid, policy.threshold);
        }
        uint256 organisations = OrgSet.count(tally.organisations);
        if (organisations < policy.minOrganisations) {
            return _deny(GateReason.NotEnoughOrganisations, organisations, policy.minOrganisations);
        }
        bytes32[] storage required = policy.requiredAttestations;
        for (uint256 i; i < required.length; ++i) {
            if (_attestations[artifactId][required[i]] == 0) {
                return _deny(GateReason.MissingAttestation, uint256(required[i]), 0);
            }
        }
        check.reason = GateReason.Allowed;
        check.freezeSeverity = policy.freezeSeverity;
        check.priorEnvironment = policy.priorEnvironment;
    }

    /// @dev Counts the votes on one release by the current holders of the vote slots.
    function _tally(bytes32 releaseKey, uint32 ttl) private view returns (Tally memory tally) {
        uint256 active = _activeApprovers;
        mapping(uint256 => uint256) storage words = _votes[releaseKey];
        // Only held slots count, so the words past the highest held slot are not read (nor is
        // _slotCount: a word's four slots are below it whenever one of them is held).
        for (uint256 w; active >> (w << 2) != 0; ++w) {
            uint256 word = words[w];
            if (word == 0) continue;
            for (uint256 j; j < 4; ++j) {
                uint256 entry = (word >> (j * ENTRY_BITS)) & ENTRY_MASK;
                uint256 slot = (w << 2) | j;
                if (entry == 0 || (active >> slot) & 1 == 0 || (entry >> 10) & 0xffff != _slotEpoch[slot]) continue;
                Decision decision = Decision(entry & 3);
                if (decision == Decision.Reject) {
                    if (tally.rejector == address(0)) tally.rejector = _slotAccount[slot];
                } else if (decision == Decision.Approve) {
                    if (ttl == 0 || (entry >> 26) + ttl >= block.timestamp) {
                        ++tally.valid;
                        tally.organisations |= 1 << ((entry >> 2) & 0xff);
                    } else {
                        ++tally.expired;
                    }
                }
            }
        }
    }

    function _deny(GateReason reason, uint256 detailA, uint256 detailB) private pure returns (ReleaseCheck memory) {
        return ReleaseCheck({reason: reason, detailA: detailA, detailB: detailB, priorEnvironment: 0, freezeSeverity: 0});
    }


    // ================================================================== history

    /// @inheritdoc IReleaseRegistry
    function historyHead() external view returns (bytes32 head, uint64 count) {
        History.Head memory h = _history;
        return (bytes32(h.head), h.count);
    }
}

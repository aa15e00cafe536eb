// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

import {IReleaseRegistry, GateReason, Decision} from "./interfaces/IReleaseRegistry.sol";
import {Keys, Roles} from "./libraries/Keys.sol";

/// @title ReleaseRegistry
/// @notice Consortium membership, artifacts, approval policies and votes. See IReleaseRegistry.
/// @dev Votes are packed so that the gate reads few storage slots: every approver gets a vote slot
/// `index` (0..255) the first time it is granted APPROVER, and each release key holds 64-bit entries,
/// four per storage word, at that index: `castAt << 2 | decision`. A bitmask of the accounts that
/// hold APPROVER right now makes votes of removed approvers stop counting without touching them.
contract ReleaseRegistry is IReleaseRegistry, AccessControl, EIP712 {
    using BitMaps for BitMaps.BitMap;

    bytes32 public constant ADMIN_ROLE = Roles.ADMIN;
    bytes32 public constant REGISTRAR_ROLE = Roles.REGISTRAR;
    bytes32 public constant APPROVER_ROLE = Roles.APPROVER;
    bytes32 public constant DEPLOYER_ROLE = Roles.DEPLOYER;
    bytes32 public constant RESPONDER_ROLE = Roles.RESPONDER;

    bytes32 public constant VOTE_TYPEHASH = keccak256(
        "Vote(bytes32 digest,string service,string environment,uint8 decision,uint256 nonce,uint256 deadline)"
    );

    uint256 private constant MAX_APPROVERS = 256;
    uint256 private constant ENTRY_BITS = 64;
    uint256 private constant ENTRY_MASK = type(uint64).max;

    struct Member {
        uint8 org; // 0: not a member
        bool hasSlot; // an approver vote slot was assigned once, kept for life
        uint8 slot;
    }

    struct Tally {
        uint256 valid;
        uint256 expired;
        uint256 organisations; // bitmask of organisation ids among valid approvals
        address rejector;
    }

    uint8 private _organisationCount;
    uint16 private _approverSlotCount;
    uint256 private _activeApprovers; // bit i: the account in vote slot i holds APPROVER now
    uint8[MAX_APPROVERS] private _slotOrganisation;
    address[MAX_APPROVERS] private _slotAccount;
    mapping(address account => Member) private _members;

    mapping(bytes32 artifactId => Artifact) private _artifacts;
    mapping(bytes32 serviceVersionKey => bytes32 digest) private _digestByVersion;
    mapping(bytes32 target => Policy) private _policies;
    mapping(bytes32 releaseKey => mapping(uint256 word => uint256 entries)) private _votes;
    mapping(address signer => BitMaps.BitMap) private _usedNonces;

    constructor(address admin) EIP712("shipledger", "1") {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(ADMIN_ROLE, admin);
    }

    // ================================================================== consortium

    /// @inheritdoc IReleaseRegistry
    function addOrganisation(string calldata name) external onlyRole(ADMIN_ROLE) returns (uint8 org) {
        Keys.name(name);
        if (_organisationCount == type(uint8).max) revert TooManyOrganisations();
        org = ++_organisationCount;
        emit OrganisationAdded(org, name);
    }

    /// @inheritdoc IReleaseRegistry
    function addMember(uint8 org, address account) external onlyRole(ADMIN_ROLE) {
        if (account == address(0)) revert ZeroAddress();
        if (org == 0 || org > _organisationCount) revert OrganisationUnknown(org);
        Member storage member = _members[account];
        if (member.org != 0) revert AlreadyMember(account, member.org);
        member.org = org;
        emit MemberAdded(account, org);
    }

    /// @inheritdoc IReleaseRegistry
    function removeMember(address account) external onlyRole(ADMIN_ROLE) {
        uint8 org = _members[account].org;
        if (org == 0) revert NotMember(account);
        _revokeRole(APPROVER_ROLE, account);
        _members[account].org = 0;
        emit MemberRemoved(account, org);
    }

    /// @inheritdoc IReleaseRegistry
    function organisationOf(address account) external view returns (uint8) {
        return _members[account].org;
    }

    /// @inheritdoc IReleaseRegistry
    function organisationCount() external view returns (uint8) {
        return _organisationCount;
    }

    /// @dev APPROVER needs an organisation, and takes a vote slot the first time it is granted.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        if (role == APPROVER_ROLE) {
            Member storage member = _members[account];
            if (member.org == 0) revert NotMember(account);
            if (!member.hasSlot) {
                if (_approverSlotCount == MAX_APPROVERS) revert TooManyApprovers();
                member.hasSlot = true;
                member.slot = uint8(_approverSlotCount++);
                _slotAccount[member.slot] = account;
                emit ApproverSlotAssigned(account, member.slot, member.org);
            }
            _slotOrganisation[member.slot] = member.org;
            _activeApprovers |= 1 << member.slot;
        }
        return super._grantRole(role, account);
    }

    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        if (role == APPROVER_ROLE && _members[account].hasSlot) {
            _activeApprovers &= ~(uint256(1) << _members[account].slot);
        }
        return super._revokeRole(role, account);
    }

    // ================================================================== artifacts

    /// @inheritdoc IReleaseRegistry
    function register(ArtifactInput calldata input) external onlyRole(REGISTRAR_ROLE) returns (bool) {
        return _register(input);
    }

    /// @inheritdoc IReleaseRegistry
    function registerBatch(ArtifactInput[] calldata inputs)
        external
        onlyRole(REGISTRAR_ROLE)
        returns (uint256 registered)
    {
        if (inputs.length == 0) revert EmptyBatch();
        for (uint256 i; i < inputs.length; ++i) {
            if (_register(inputs[i])) ++registered;
        }
    }

    function _register(ArtifactInput calldata input) internal returns (bool) {
        if (input.digest == 0) revert InvalidDigest();
        bytes32 serviceKey = Keys.name(input.service);
        bytes32 versionKey = Keys.name(input.version);
        bytes32 versionSlot = keccak256(abi.encode(serviceKey, versionKey));
        bytes32 existing = _digestByVersion[versionSlot];
        if (existing == input.digest) return false; // the identical record: nothing to do
        if (existing != 0) revert VersionAlreadyRegistered(input.service, input.version, existing);
        bytes32 id = Keys.artifactId(serviceKey, input.digest);
        if (_artifacts[id].registeredAt != 0) revert ArtifactAlreadyRegistered(input.digest, input.service);

        _artifacts[id] = Artifact({registrant: msg.sender, registeredAt: uint40(block.timestamp), revoked: false});
        _digestByVersion[versionSlot] = input.digest;
        emit ArtifactRegistered(
            input.digest,
            serviceKey,
            versionKey,
            input.service,
            input.version,
            input.commit,
            input.committedAt,
            input.provenance,
            input.sbom,
            input.uri,
            msg.sender
        );
        return true;
    }

    /// @inheritdoc IReleaseRegistry
    function revoke(bytes32 digest, string calldata service, string calldata reason)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        bytes32 serviceKey = Keys.name(service);
        Artifact storage artifact = _existingArtifact(Keys.artifactId(serviceKey, digest), digest, service);
        if (artifact.revoked) revert ArtifactIsRevoked(digest, service);
        artifact.revoked = true;
        emit ArtifactRevoked(digest, serviceKey, service, reason, msg.sender);
    }

    /// @inheritdoc IReleaseRegistry
    function getArtifact(bytes32 digest, string calldata service) external view returns (Artifact memory) {
        return _existingArtifact(Keys.artifactId(Keys.name(service), digest), digest, service);
    }

    /// @inheritdoc IReleaseRegistry
    function digestOf(string calldata service, string calldata version) external view returns (bytes32) {
        return _digestByVersion[keccak256(abi.encode(Keys.name(service), Keys.name(version)))];
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

    /// @inheritdoc IReleaseRegistry
    function setPolicy(string calldata service, string calldata environment, PolicyInput calldata input)
        external
        onlyRole(ADMIN_ROLE)
    {
        bytes32 serviceKey = Keys.name(service);
        bytes32 environmentKey = Keys.name(environment);
        if (input.threshold == 0) revert InvalidPolicy("threshold must be at least 1");
        if (input.minOrganisations > input.threshold) {
            revert InvalidPolicy("minOrganisations cannot exceed threshold");
        }
        if (input.freezeSeverity > 4) revert InvalidPolicy("freezeSeverity must be 0 (off) or 1..4");
        bytes32 prior;
        if (bytes(input.priorEnvironment).length != 0) {
            prior = Keys.name(input.priorEnvironment);
            if (prior == environmentKey) revert InvalidPolicy("priorEnvironment must differ from environment");
        }

        Policy storage stored = _policies[Keys.target(serviceKey, environmentKey)];
        Policy memory old = stored;
        Policy memory updated = Policy({
            threshold: input.threshold,
            minOrganisations: input.minOrganisations,
            ttl: input.ttl,
            minWait: input.minWait,
            freezeSeverity: input.freezeSeverity,
            version: old.version + 1,
            priorEnvironment: prior
        });
        _policies[Keys.target(serviceKey, environmentKey)] = updated;
        emit PolicySet(serviceKey, environmentKey, service, environment, old, updated, input.priorEnvironment);
    }

    /// @inheritdoc IReleaseRegistry
    function getPolicy(string calldata service, string calldata environment) external view returns (Policy memory) {
        Policy memory policy = _policies[Keys.target(Keys.name(service), Keys.name(environment))];
        if (policy.version == 0) revert PolicyNotFound(service, environment);
        return policy;
    }

    // ================================================================== votes

    /// @inheritdoc IReleaseRegistry
    function approve(bytes32 digest, string calldata service, string calldata environment, string calldata comment)
        external
        onlyRole(APPROVER_ROLE)
    {
        _vote(msg.sender, digest, service, environment, Decision.Approve, false, comment);
    }

    /// @inheritdoc IReleaseRegistry
    function reject(bytes32 digest, string calldata service, string calldata environment, string calldata reason)
        external
        onlyRole(APPROVER_ROLE)
    {
        _vote(msg.sender, digest, service, environment, Decision.Reject, false, reason);
    }

    /// @inheritdoc IReleaseRegistry
    function withdraw(bytes32 digest, string calldata service, string calldata environment)
        external
        onlyRole(APPROVER_ROLE)
    {
        bytes32 serviceKey = Keys.name(service);
        bytes32 environmentKey = Keys.name(environment);
        bytes32 id = Keys.artifactId(serviceKey, digest);
        uint256 slot = _members[msg.sender].slot; // every APPROVER has a slot
        mapping(uint256 => uint256) storage words = _votes[Keys.release(id, Keys.target(serviceKey, environmentKey))];
        uint256 shift = (slot & 3) * ENTRY_BITS;
        uint256 word = words[slot >> 2];
        uint256 entry = (word >> shift) & ENTRY_MASK;
        if (entry == 0) revert NoVoteToWithdraw(digest, environment, msg.sender);
        words[slot >> 2] = word & ~(ENTRY_MASK << shift);
        emit VoteWithdrawn(
            digest, serviceKey, environmentKey, msg.sender, Decision(entry & 3), service, environment
        );
    }

    /// @inheritdoc IReleaseRegistry
    function voteBySig(SignedVote[] calldata votes) external {
        // Open to anyone on purpose: the signature is the authorisation, checked against APPROVER.
        for (uint256 i; i < votes.length; ++i) {
            SignedVote calldata v = votes[i];
            if (block.timestamp > v.deadline) revert SignatureExpired(v.signer, v.deadline, block.timestamp);
            bytes32 hash = voteHash(v.digest, v.service, v.environment, v.decision, v.nonce, v.deadline);
            if (!SignatureChecker.isValidSignatureNow(v.signer, hash, v.signature)) revert InvalidSignature(v.signer);
            if (!hasRole(APPROVER_ROLE, v.signer)) revert SignerNotApprover(v.signer);
            _useNonce(v.signer, v.nonce);
            _vote(v.signer, v.digest, v.service, v.environment, v.decision, true, "");
        }
    }

    /// @inheritdoc IReleaseRegistry
    function invalidateNonce(uint256 nonce) external onlyRole(APPROVER_ROLE) {
        _useNonce(msg.sender, nonce);
        emit NonceInvalidated(msg.sender, nonce);
    }

    /// @inheritdoc IReleaseRegistry
    function nonceUsed(address signer, uint256 nonce) external view returns (bool) {
        return _usedNonces[signer].get(nonce);
    }

    /// @inheritdoc IReleaseRegistry
    function voteHash(
        bytes32 digest,
        string calldata service,
        string calldata environment,
        Decision decision,
        uint256 nonce,
        uint256 deadline
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VOTE_TYPEHASH,
                    digest,
                    keccak256(bytes(service)),
                    keccak256(bytes(environment)),
                    decision,
                    nonce,
                    deadline
                )
            )
        );
    }

    /// @inheritdoc IReleaseRegistry
    function voteOf(bytes32 digest, string calldata service, string calldata environment, address approver)
        external
        view
        returns (Decision decision, uint256 castAt)
    {
        Member memory member = _members[approver];
        if (!member.hasSlot) return (Decision.None, 0);
        bytes32 serviceKey = Keys.name(service);
        bytes32 release = Keys.release(Keys.artifactId(serviceKey, digest), Keys.target(serviceKey, Keys.name(environment)));
        uint256 entry = (_votes[release][member.slot >> 2] >> ((member.slot & 3) * ENTRY_BITS)) & ENTRY_MASK;
        return (Decision(entry & 3), entry >> 2);
    }

    function _useNonce(address signer, uint256 nonce) private {
        if (_usedNonces[signer].get(nonce)) revert NonceAlreadyUsed(signer, nonce);
        _usedNonces[signer].set(nonce);
    }

    function _vote(
        address approver,
        bytes32 digest,
        string calldata service,
        string calldata environment,
        Decision decision,
        bool bySignature,
        string memory note
    ) private {
        if (decision != Decision.Approve && decision != Decision.Reject) revert InvalidDecision(decision);
        bytes32 serviceKey = Keys.name(service);
        bytes32 environmentKey = Keys.name(environment);
        bytes32 id = Keys.artifactId(serviceKey, digest);
        Artifact memory artifact = _existingArtifact(id, digest, service);
        if (artifact.revoked) revert ArtifactIsRevoked(digest, service);
        if (decision == Decision.Approve && artifact.registrant == approver) {
            revert RegistrantCannotApprove(digest, approver);
        }
        bytes32 target = Keys.target(serviceKey, environmentKey);
        uint32 policyVersion = _policies[target].version;
        if (policyVersion == 0) revert PolicyNotFound(service, environment);

        Member memory member = _members[approver];
        mapping(uint256 => uint256) storage words = _votes[Keys.release(id, target)];
        uint256 shift = (member.slot & 3) * ENTRY_BITS;
        uint256 word = words[member.slot >> 2];
        if (Decision((word >> shift) & 3) == decision) {
            revert VoteAlreadyCast(digest, environment, approver, decision);
        }
        uint256 entry = (block.timestamp << 2) | uint256(decision);
        words[member.slot >> 2] = (word & ~(ENTRY_MASK << shift)) | (entry << shift);

        if (decision == Decision.Approve) {
            emit ArtifactApproved(
                digest, serviceKey, environmentKey, approver, member.org, policyVersion, bySignature, service, environment, note
            );
        } else {
            emit ArtifactRejected(
                digest, serviceKey, environmentKey, approver, member.org, policyVersion, bySignature, service, environment, note
            );
        }
    }

    // ================================================================== gate input

    /// @inheritdoc IReleaseRegistry
    function checkRelease(bytes32 artifactId, bytes32 target) external view returns (ReleaseCheck memory check) {
        Artifact memory artifact = _artifacts[artifactId];
        if (artifact.registeredAt == 0) return _deny(GateReason.UnknownArtifact, 0, 0);
        if (artifact.revoked) return _deny(GateReason.ArtifactRevoked, 0, 0);
        Policy memory policy = _policies[target];
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
        uint256 organisations = _popcount(tally.organisations);
        if (organisations < policy.minOrganisations) {
            return _deny(GateReason.NotEnoughOrganisations, organisations, policy.minOrganisations);
        }
        check.reason = GateReason.Allowed;
        check.freezeSeverity = policy.freezeSeverity;
        check.priorEnvironment = policy.priorEnvironment;
    }

    /// @dev Counts the votes on one release by accounts that hold APPROVER now.
    function _tally(bytes32 releaseKey, uint32 ttl) private view returns (Tally memory tally) {
        uint256 active = _activeApprovers;
        uint256 wordCount = (uint256(_approverSlotCount) + 3) >> 2;
        mapping(uint256 => uint256) storage words = _votes[releaseKey];
        for (uint256 w; w < wordCount; ++w) {
            uint256 word = words[w];
            if (word == 0) continue;
            for (uint256 j; j < 4; ++j) {
                uint256 entry = (word >> (j * ENTRY_BITS)) & ENTRY_MASK;
                uint256 slot = (w << 2) | j;
                if (entry == 0 || (active >> slot) & 1 == 0) continue;
                if (Decision(entry & 3) == Decision.Reject) {
                    if (tally.rejector == address(0)) tally.rejector = _slotAccount[slot];
                } else if (ttl == 0 || (entry >> 2) + ttl >= block.timestamp) {
                    ++tally.valid;
                    tally.organisations |= 1 << _slotOrganisation[slot];
                } else {
                    ++tally.expired;
                }
            }
        }
    }

    function _deny(GateReason reason, uint256 detailA, uint256 detailB) private pure returns (ReleaseCheck memory) {
        return ReleaseCheck({reason: reason, detailA: detailA, detailB: detailB, priorEnvironment: 0, freezeSeverity: 0});
    }

    function _popcount(uint256 x) private pure returns (uint256 count) {
        for (; x != 0; x &= x - 1) ++count;
    }
}

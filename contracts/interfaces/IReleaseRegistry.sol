// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @dev Why the gate denies a release, or `Allowed`. The numbers are part of the interface: SDKs and
/// audits decode them, so new reasons are only ever appended. The gate reports the first reason in
/// this order, each with up to two numbers (`detailA`, `detailB`) named in its comment.
enum GateReason {
    Allowed, //                  -
    UnknownArtifact, //          -
    ArtifactRevoked, //          -
    NoPolicy, //                 -
    RejectedBy, //               approver address, 0
    WaitingPeriod, //            ready at (unix time), now
    NotEnoughApprovals, //       valid approvals, needed
    ApprovalsExpired, //         valid approvals, needed (enough approvals exist but some are too old)
    NotEnoughOrganisations, //   distinct organisations, needed
    MissingPriorEnvironment, //  keccak256 of the prior environment's name, 0
    FrozenByIncident, //         open freezing incidents, the most severe one's severity
    RolloutInProgress, //        the deployment id in progress, 0
    MissingAttestation //        keccak256 of the attestation type, 0
}

/// @dev A vote on one artifact for one environment. The numbers are signed in EIP-712 messages.
enum Decision {
    None,
    Approve,
    Reject
}

/// @dev What an artifact is. Config and infrastructure changes go through the same policies as builds.
enum ArtifactKind {
    Build,
    Image,
    Config,
    Infrastructure
}

/// @dev Why `voteBySig` skipped a signed vote instead of recording it (the batch goes on).
enum SkipReason {
    None,
    BadSignature, //      the signature is not the signer's
    NotApprover, //       the signer does not hold APPROVER now
    NonceUsed, //         the (signer, nonce) was used or burnt
    Expired, //           past the deadline, or the deadline is later than signedAt + the policy ttl
    Stale, //             not newer than the signer's last action on this release (or its admission)
    SignedInFuture, //    signedAt is later than the block
    Refused //            the vote itself is refused (unknown or revoked artifact, no policy, registrant, same vote)
}

/// @title The shipledger release registry
/// @notice Holds the consortium (organisations, stewards, members, roles), the artifacts built by
/// release pipelines and their attestations, the approval policy of each (service, environment), and
/// the approvers' votes. The deployment ledger asks it, through `checkRelease`, whether an artifact may
/// go to an environment.
/// @dev Who may change what:
///   - `governance` (the Governance contract, after K organisations approve and, for a weakening
///     change, a delay) adds organisations, sets stewards, grants and revokes cross-organisation roles
///     and sets policies;
///   - a steward manages its own organisation's members and their APPROVER role, without a vote;
///   - emergency actions that only make things safer are single-party: a REGISTRAR revokes, an
///     approver rejects.
/// Names of services and environments are short strings, hashed with keccak256 for storage keys and
/// emitted in clear. Keys used throughout:
///   artifactId = keccak256(abi.encode(keccak256(service), digest))
///   target     = keccak256(abi.encode(keccak256(service), keccak256(environment)))
///   releaseKey = keccak256(abi.encode(artifactId, target))
///   role id    = role                                  for a role held everywhere (scope 0)
///              = keccak256(abi.encode(role, scopeKey)) for REGISTRAR of one service, ATTESTOR of one type
/// Every state change folds the events it emits into `historyHead` (see History.sol).
interface IReleaseRegistry {
    /// @notice What a release pipeline registers. `digest` is the sha256 of the artifact (for an
    /// image, its manifest digest). `commit` is the source commit (a git SHA-1 left-aligned, or a
    /// SHA-256); `committedAt` its commit time (0 if unknown); `provenance` and `sbom` are sha256
    /// digests of those documents (0 if none). The whole record is hashed for identity: registering
    /// the same (service, version) again is a no-op only when every field is the same.
    struct ArtifactInput {
        bytes32 digest;
        string service;
        string version;
        ArtifactKind kind;
        bytes32 commit;
        uint64 committedAt;
        bytes32 provenance;
        bytes32 sbom;
        string uri;
    }

    /// @notice What storage keeps of an artifact: enough for the gate and separation of duties.
    struct Artifact {
        address registrant;
        uint40 registeredAt;
        bool revoked;
        ArtifactKind kind;
    }

    /// @notice The approval policy of one (service, environment). `ttl` is how long an approval stays
    /// valid from its signing in seconds (0: forever); `minWait` the seconds between registration and
    /// the first allowed deployment; `priorEnvironment` an environment where the same artifact must
    /// have a standing completed deployment first ("" for none); `freezeSeverity` the incident severity
    /// (1 most severe .. 4) at or above which an open incident freezes deployments (0: never);
    /// `resolveQuorum` how many distinct organisations' responders must resolve a freezing incident;
    /// `requiredAttestations` attestation types every artifact needs (at most 8).
    struct PolicyInput {
        uint8 threshold;
        uint8 minOrganisations;
        uint32 ttl;
        uint32 minWait;
        uint8 freezeSeverity;
        uint8 resolveQuorum;
        string priorEnvironment;
        string[] requiredAttestations;
    }

    /// @notice A policy as stored; `version` counts changes and is set by the contract.
    struct Policy {
        uint8 threshold;
        uint8 minOrganisations;
        uint32 ttl;
        uint32 minWait;
        uint8 freezeSeverity;
        uint8 resolveQuorum;
        uint32 version;
        bytes32 priorEnvironment; // keccak256 of the name, 0 for none
        bytes32[] requiredAttestations; // keccak256 of each type name
    }

    /// @notice An approval or rejection signed offline (EIP-712) and submitted by anyone. The signed
    /// message is `Vote(address signer,bytes32 digest,string service,string environment,uint8 decision,
    /// uint256 nonce,uint64 signedAt,uint64 deadline)` under the domain ("shipledger", "2", chain id, this
    /// contract). `signer` may be an EOA or an ERC-1271 contract wallet (e.g. a Safe); it is part of the
    /// message, so one owner's signature never counts for another wallet. Nonces are unordered; the
    /// signer's latest action on a release wins, by `signedAt`.
    struct SignedVote {
        address signer;
        bytes32 digest;
        string service;
        string environment;
        Decision decision;
        uint256 nonce;
        uint64 signedAt;
        uint64 deadline;
        bytes signature;
    }

    /// @notice What `checkRelease` tells the deployment ledger.
    struct ReleaseCheck {
        GateReason reason;
        uint256 detailA;
        uint256 detailB;
        bytes32 priorEnvironment; // keccak256 of the required prior environment's name, 0 for none
        uint8 freezeSeverity;
    }

    /// @notice The consortium the deployment starts with, set in the constructor; afterwards the
    /// deploying key holds no role. `members[i]` joins organisation `memberOrgs[i]` (1-based), as an
    /// approver when `memberApprovers[i]`. `roles[i]` with scope name `roleScopes[i]` goes to
    /// `roleAccounts[i]`, which must be a member. `policies[i]` is the policy of
    /// (`policyServices[i]`, `policyEnvironments[i]`).
    struct Bootstrap {
        string[] organisations;
        address[] stewards;
        address[] members;
        uint8[] memberOrgs;
        bool[] memberApprovers;
        bytes32[] roles;
        string[] roleScopes;
        address[] roleAccounts;
        string[] policyServices;
        string[] policyEnvironments;
        PolicyInput[] policies;
    }

    // ------------------------------------------------------------------ events
    event OrganisationAdded(uint8 indexed org, string name, address steward);
    event StewardSet(uint8 indexed org, address oldSteward, address newSteward);
    event MemberAdded(address indexed account, uint8 indexed org, address by);
    event MemberRemoved(address indexed account, uint8 indexed org, address by);
    /// @notice `account` holds `role` for `scope` ("" everywhere) now.
    event ScopedRoleGranted(bytes32 indexed role, bytes32 indexed scopeKey, address indexed account, string scope, address by);
    event ScopedRoleRevoked(bytes32 indexed role, bytes32 indexed scopeKey, address indexed account, string scope, address by);
    /// @notice An approver got vote slot `index` in `epoch`. Votes carry the epoch they were cast in,
    /// so a slot freed and reused, or an approver re-admitted, starts with no votes.
    event ApproverSlotAssigned(address indexed account, uint8 indexed index, uint8 indexed org, uint16 epoch);
    event ApproverSlotFreed(address indexed account, uint8 indexed index, uint16 epoch);

    event ArtifactRegistered(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed versionKey,
        string service,
        string version,
        ArtifactKind kind,
        bytes32 commit,
        uint64 committedAt,
        bytes32 provenance,
        bytes32 sbom,
        string uri,
        address registrant,
        bytes32 recordHash
    );
    event ArtifactRevoked(bytes32 indexed digest, bytes32 indexed serviceKey, string service, string reason, address revoker);
    event AttestationRecorded(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed typeKey,
        string service,
        string attestationType,
        bytes32 documentDigest,
        string uri,
        address attestor
    );

    event PolicySet(
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        string service,
        string environment,
        Policy oldPolicy,
        Policy newPolicy,
        string priorEnvironment,
        string[] requiredAttestations
    );

    /// @notice A vote was recorded. `signedAt` is when the approver decided (the block time for a
    /// transaction); `nonce` and `deadline` are 0 and `submitter` the approver for a transaction.
    event ArtifactApproved(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        address approver,
        uint8 org,
        uint32 policyVersion,
        bool bySignature,
        uint64 signedAt,
        uint256 nonce,
        uint64 deadline,
        address submitter,
        string service,
        string environment,
        string comment
    );
    event ArtifactRejected(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        address approver,
        uint8 org,
        uint32 policyVersion,
        bool bySignature,
        uint64 signedAt,
        uint256 nonce,
        uint64 deadline,
        address submitter,
        string service,
        string environment,
        string reason
    );
    event VoteWithdrawn(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        address approver,
        Decision previous,
        string service,
        string environment
    );
    /// @notice `voteBySig` did not record the vote at `index` of its batch, for `reason`.
    event SignedVoteSkipped(
        address indexed signer, bytes32 indexed digest, uint256 nonce, uint256 index, SkipReason reason, address submitter
    );
    event NonceInvalidated(address indexed signer, uint256 nonce);

    // ------------------------------------------------------------------ errors
    error InvalidName(string name);
    error OrganisationUnknown(uint8 org);
    error TooManyOrganisations();
    error AlreadyMember(address account, uint8 org);
    error NotMember(address account);
    error NotSteward(address account);
    error StewardOfOtherOrganisation(address steward, uint8 stewardOrg, uint8 memberOrg);
    error AlreadySteward(address account, uint8 org);
    error TooManyApprovers();
    error ZeroAddress();
    error NotGovernance(address caller);
    error InvalidRole(bytes32 role, string scope);
    error RoleAlreadyHeld(bytes32 role, string scope, address account);
    error RoleNotHeld(bytes32 role, string scope, address account);
    error InvalidBootstrap(string why);

    error InvalidDigest();
    error ArtifactAlreadyRegistered(bytes32 digest, string service);
    error VersionAlreadyRegistered(string service, string version, bytes32 existingRecordHash);
    error ArtifactNotFound(bytes32 digest, string service);
    error ArtifactIsRevoked(bytes32 digest, string service);
    error EmptyBatch();
    error NotRegistrarOf(address account, string service);
    error NotAttestorOf(address account, string attestationType);

    error InvalidPolicy(string why);
    error PolicyNotFound(string service, string environment);

    error RegistrantCannotApprove(bytes32 digest, address approver);
    error VoteAlreadyCast(bytes32 digest, string environment, address approver, Decision decision);
    error NoVoteToWithdraw(bytes32 digest, string environment, address approver);
    error InvalidDecision(Decision decision);
    error NotApprover(address account);

    // ------------------------------------------------------------------ consortium (governance)
    /// @notice The Governance contract, the only account that changes the consortium.
    function governance() external view returns (address);

    /// @notice Adds an organisation with its steward; ids are sequential from 1. Only governance.
    function addOrganisation(string calldata name, address steward) external returns (uint8 org);

    /// @notice Replaces an organisation's steward. Only governance.
    function setSteward(uint8 org, address steward) external;

    /// @notice Grants a cross-organisation role (REGISTRAR for `scope` = a service or "" for all,
    /// ATTESTOR for `scope` = an attestation type or "" for all, DEPLOYER and RESPONDER with ""). The
    /// account must be a member. Only governance.
    function grantScopedRole(bytes32 role, string calldata scope, address account) external;

    /// @notice Revokes a cross-organisation role. Only governance.
    function revokeScopedRole(bytes32 role, string calldata scope, address account) external;

    /// @notice Sets the approval policy of (service, environment) and bumps its version. Only governance.
    function setPolicy(string calldata service, string calldata environment, PolicyInput calldata policy)
        external;

    // ------------------------------------------------------------------ members (the steward of their organisation)
    /// @notice Makes `account` a member of the caller's organisation, as an approver if `approver`.
    function addMember(address account, bool approver) external;

    /// @notice Removes a member and revokes every role it holds, so its votes stop counting. Its
    /// organisation's steward, or governance.
    function removeMember(address account) external;

    /// @notice Grants or revokes APPROVER for a member of the caller's organisation.
    function setApprover(address account, bool approver) external;

    function organisationOf(address account) external view returns (uint8);
    function organisationCount() external view returns (uint8);
    /// @notice The organisation `account` is steward of, 0 for none.
    function stewardOrganisation(address account) external view returns (uint8);
    function stewardOf(uint8 org) external view returns (address);
    /// @notice Whether `account` holds `role` for `scopeKey`, directly or everywhere (scope 0).
    function hasScopedRole(bytes32 role, bytes32 scopeKey, address account) external view returns (bool);

    // ------------------------------------------------------------------ artifacts
    /// @notice Registers an artifact. Registering the identical whole record again is a no-op that
    /// returns false. Only REGISTRAR of the service (or of all services).
    function register(ArtifactInput calldata input) external returns (bool registered);

    /// @notice `register` for many artifacts of services the caller may register; returns how many
    /// were new.
    function registerBatch(ArtifactInput[] calldata inputs) external returns (uint256 registered);

    /// @notice Quarantines an artifact: the gate denies it from now on. Only REGISTRAR of the service.
    function revoke(bytes32 digest, string calldata service, string calldata reason) external;

    /// @notice Records that a document of `attestationType` (its sha256 `documentDigest`, at `uri`)
    /// attests the artifact. Only ATTESTOR of that type (or of all types).
    function attest(
        bytes32 digest,
        string calldata service,
        string calldata attestationType,
        bytes32 documentDigest,
        string calldata uri
    ) external;

    function getArtifact(bytes32 digest, string calldata service) external view returns (Artifact memory);
    /// @notice The record hash registered for (service, version), 0 for none.
    function recordOf(string calldata service, string calldata version) external view returns (bytes32);
    /// @notice keccak256(abi.encode(input)): what identifies a registration.
    function recordHash(ArtifactInput calldata input) external pure returns (bytes32);
    /// @notice The document digest of the latest attestation of a type, 0 for none.
    function attestationOf(bytes32 digest, string calldata service, string calldata attestationType)
        external
        view
        returns (bytes32);

    // ------------------------------------------------------------------ policies
    function getPolicy(string calldata service, string calldata environment) external view returns (Policy memory);
    /// @notice The stored policy by target key, version 0 when none (for governance's comparisons).
    function policyAt(bytes32 target) external view returns (Policy memory);

    // ------------------------------------------------------------------ votes
    /// @notice Approves an artifact for an environment. Only APPROVER, never its registrant.
    function approve(bytes32 digest, string calldata service, string calldata environment, string calldata comment)
        external;

    /// @notice Vetoes an artifact for an environment until the approver withdraws. Only APPROVER.
    function reject(bytes32 digest, string calldata service, string calldata environment, string calldata reason)
        external;

    /// @notice Withdraws the caller's approval or rejection. Only APPROVER.
    function withdraw(bytes32 digest, string calldata service, string calldata environment) external;

    /// @notice Records votes signed offline; anyone may submit. A vote that cannot count is skipped
    /// with a `SignedVoteSkipped` event and the batch goes on. Returns how many were recorded.
    function voteBySig(SignedVote[] calldata votes) external returns (uint256 recorded);

    /// @notice Burns one of the caller's unordered nonces so a signature handed out cannot be used.
    function invalidateNonce(uint256 nonce) external;

    function nonceUsed(address signer, uint256 nonce) external view returns (bool);
    /// @notice The approver's counting vote and when it was signed (None, 0 if none counts).
    function voteOf(bytes32 digest, string calldata service, string calldata environment, address approver)
        external
        view
        returns (Decision decision, uint256 signedAt);

    /// @notice The EIP-712 hash an approver signs for a vote.
    function voteHash(
        address signer,
        bytes32 digest,
        string calldata service,
        string calldata environment,
        Decision decision,
        uint256 nonce,
        uint64 signedAt,
        uint64 deadline
    ) external view returns (bytes32);

    // ------------------------------------------------------------------ gate input
    /// @notice Everything the gate needs from the registry, evaluated at this block.
    function checkRelease(bytes32 artifactId, bytes32 target) external view returns (ReleaseCheck memory);

    function isRevoked(bytes32 artifactId) external view returns (bool);

    // ------------------------------------------------------------------ history
    /// @notice The running hash of every record (event) this contract emitted, and their count.
    function historyHead() external view returns (bytes32 head, uint64 count);
}

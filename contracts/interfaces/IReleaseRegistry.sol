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
    FrozenByIncident //          incident id, its severity
}

/// @dev A vote on one artifact for one environment. The numbers are signed in EIP-712 messages.
enum Decision {
    None,
    Approve,
    Reject
}

/// @title The shipledger release registry
/// @notice Holds the consortium (organisations, members, roles), the artifacts built by release
/// pipelines, the approval policy of each (service, environment), and the approvers' votes. The
/// deployment ledger asks it, through `checkRelease`, whether an artifact may go to an environment.
/// @dev Names of services and environments are short strings, hashed with keccak256 for storage keys
/// and emitted in clear. Keys used throughout:
///   artifactId = keccak256(abi.encode(keccak256(service), digest))
///   target     = keccak256(abi.encode(keccak256(service), keccak256(environment)))
///   releaseKey = keccak256(abi.encode(artifactId, target))
interface IReleaseRegistry {
    /// @notice What a release pipeline registers. `digest` is the sha256 of the artifact.
    /// `commit` is the source commit (a git SHA-1 left-aligned, or a SHA-256); `committedAt` its
    /// commit time (0 if unknown); `provenance` and `sbom` are sha256 digests of those documents
    /// (0 if none). Only the digest, service and version reach storage; the rest goes to the event.
    struct ArtifactInput {
        bytes32 digest;
        string service;
        string version;
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
    }

    /// @notice The approval policy of one (service, environment). `version` counts changes and is set
    /// by the contract. `ttl` is how long an approval stays valid in seconds (0: forever); `minWait`
    /// the seconds between registration and the first allowed deployment; `priorEnvironment` an
    /// environment where the same artifact must have completed a deployment first ("" for none);
    /// `freezeSeverity` the incident severity (1 most severe .. 4) at or above which an open incident
    /// freezes deployments (0: incidents never freeze).
    struct PolicyInput {
        uint8 threshold;
        uint8 minOrganisations;
        uint32 ttl;
        uint32 minWait;
        uint8 freezeSeverity;
        string priorEnvironment;
    }

    struct Policy {
        uint8 threshold;
        uint8 minOrganisations;
        uint32 ttl;
        uint32 minWait;
        uint8 freezeSeverity;
        uint32 version;
        bytes32 priorEnvironment; // keccak256 of the name, 0 for none
    }

    /// @notice An approval or rejection signed offline (EIP-712) and submitted by anyone.
    /// The signed message is
    /// `Vote(bytes32 digest,string service,string environment,uint8 decision,uint256 nonce,uint256 deadline)`
    /// under the domain ("shipledger", "1", chain id, this contract). `signer` may be an EOA or an
    /// ERC-1271 contract wallet (e.g. a Safe). Nonces are unordered: any unused number works once.
    struct SignedVote {
        address signer;
        bytes32 digest;
        string service;
        string environment;
        Decision decision;
        uint256 nonce;
        uint256 deadline;
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

    // ------------------------------------------------------------------ events
    event OrganisationAdded(uint8 indexed org, string name);
    event MemberAdded(address indexed account, uint8 indexed org);
    event MemberRemoved(address indexed account, uint8 indexed org);
    /// @notice An account got the APPROVER role and the vote slot `index` (kept for life).
    event ApproverSlotAssigned(address indexed account, uint8 indexed index, uint8 indexed org);

    event ArtifactRegistered(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed versionKey,
        string service,
        string version,
        bytes32 commit,
        uint64 committedAt,
        bytes32 provenance,
        bytes32 sbom,
        string uri,
        address registrant
    );
    event ArtifactRevoked(bytes32 indexed digest, bytes32 indexed serviceKey, string service, string reason, address revoker);

    event PolicySet(
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        string service,
        string environment,
        Policy oldPolicy,
        Policy newPolicy,
        string priorEnvironment
    );

    event ArtifactApproved(
        bytes32 indexed digest,
        bytes32 indexed serviceKey,
        bytes32 indexed environmentKey,
        address approver,
        uint8 org,
        uint32 policyVersion,
        bool bySignature,
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
    event NonceInvalidated(address indexed signer, uint256 nonce);

    // ------------------------------------------------------------------ errors
    error InvalidName(string name);
    error OrganisationUnknown(uint8 org);
    error TooManyOrganisations();
    error AlreadyMember(address account, uint8 org);
    error NotMember(address account);
    error TooManyApprovers();
    error ZeroAddress();

    error InvalidDigest();
    error ArtifactAlreadyRegistered(bytes32 digest, string service);
    error VersionAlreadyRegistered(string service, string version, bytes32 existingDigest);
    error ArtifactNotFound(bytes32 digest, string service);
    error ArtifactIsRevoked(bytes32 digest, string service);
    error EmptyBatch();

    error InvalidPolicy(string why);
    error PolicyNotFound(string service, string environment);

    error RegistrantCannotApprove(bytes32 digest, address approver);
    error VoteAlreadyCast(bytes32 digest, string environment, address approver, Decision decision);
    error NoVoteToWithdraw(bytes32 digest, string environment, address approver);
    error InvalidDecision(Decision decision);
    error SignatureExpired(address signer, uint256 deadline, uint256 timestamp);
    error InvalidSignature(address signer);
    error NonceAlreadyUsed(address signer, uint256 nonce);
    error SignerNotApprover(address signer);

    // ------------------------------------------------------------------ consortium
    /// @notice Adds an organisation; ids are sequential from 1. Only ADMIN.
    function addOrganisation(string calldata name) external returns (uint8 org);

    /// @notice Makes `account` a member of `org`. An account belongs to at most one organisation.
    /// Only ADMIN. APPROVER can only be granted to members.
    function addMember(uint8 org, address account) external;

    /// @notice Removes a member and revokes its APPROVER role, so its votes stop counting. Only ADMIN.
    function removeMember(address account) external;

    function organisationOf(address account) external view returns (uint8);
    function organisationCount() external view returns (uint8);

    // ------------------------------------------------------------------ artifacts
    /// @notice Registers an artifact. Registering the identical (digest, service, version) again is a
    /// no-op that emits nothing and returns false. Only REGISTRAR.
    function register(ArtifactInput calldata input) external returns (bool registered);

    /// @notice `register` for many artifacts in one transaction; returns how many were new.
    function registerBatch(ArtifactInput[] calldata inputs) external returns (uint256 registered);

    /// @notice Quarantines an artifact: the gate denies it from now on. Only REGISTRAR.
    function revoke(bytes32 digest, string calldata service, string calldata reason) external;

    function getArtifact(bytes32 digest, string calldata service) external view returns (Artifact memory);
    function digestOf(string calldata service, string calldata version) external view returns (bytes32);

    // ------------------------------------------------------------------ policies
    /// @notice Sets the approval policy of (service, environment) and bumps its version. Only ADMIN.
    function setPolicy(string calldata service, string calldata environment, PolicyInput calldata policy)
        external;

    function getPolicy(string calldata service, string calldata environment) external view returns (Policy memory);

    // ------------------------------------------------------------------ votes
    /// @notice Approves an artifact for an environment. Only APPROVER, never its registrant.
    function approve(bytes32 digest, string calldata service, string calldata environment, string calldata comment)
        external;

    /// @notice Vetoes an artifact for an environment until the approver withdraws. Only APPROVER.
    function reject(bytes32 digest, string calldata service, string calldata environment, string calldata reason)
        external;

    /// @notice Withdraws the caller's approval or rejection. Only APPROVER.
    function withdraw(bytes32 digest, string calldata service, string calldata environment) external;

    /// @notice Records votes signed offline. Anyone may submit; each signer must hold APPROVER.
    /// The whole batch reverts if any vote is invalid.
    function voteBySig(SignedVote[] calldata votes) external;

    /// @notice Burns one of the caller's unordered nonces so a signature handed out cannot be used.
    /// Only APPROVER.
    function invalidateNonce(uint256 nonce) external;

    function nonceUsed(address signer, uint256 nonce) external view returns (bool);
    function voteOf(bytes32 digest, string calldata service, string calldata environment, address approver)
        external
        view
        returns (Decision decision, uint256 castAt);

    /// @notice The EIP-712 hash an approver signs for a vote.
    function voteHash(
        bytes32 digest,
        string calldata service,
        string calldata environment,
        Decision decision,
        uint256 nonce,
        uint256 deadline
    ) external view returns (bytes32);

    // ------------------------------------------------------------------ gate input
    /// @notice Everything the gate needs from the registry, evaluated at this block.
    function checkRelease(bytes32 artifactId, bytes32 target) external view returns (ReleaseCheck memory);

    function isRevoked(bytes32 artifactId) external view returns (bool);
}

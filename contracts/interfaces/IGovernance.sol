// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title The shipledger consortium governance
/// @notice Every change that could widen who may ship is a proposal: adding an organisation, setting a
/// steward, granting or revoking a cross-organisation role, removing a member, setting a policy, and
/// changing these settings. A proposal executes once the stewards of `organisationsNeeded` (K)
/// distinct organisations approve it. A change that weakens anything then waits `delay` seconds,
/// during which the steward of any one organisation can cancel it; a change that only tightens
/// executes with the K-th approval. Weakening is decided on chain, field by field, when the K-th
/// approval arrives (see `isWeakening`).
/// @dev Built on OpenZeppelin's TimelockController: this contract is its only proposer, executor and
/// canceller, and its own admin, so the delay, the operation states and the execution are OpenZeppelin's.
/// Proposal ids are sequential from 1.
interface IGovernance {
    enum ProposalState {
        None,
        Pending, //    collecting approvals
        Scheduled, //  approved by K organisations, waiting for its delay (0 for a tightening change)
        Executed,
        Cancelled
    }

    struct Proposal {
        address target; // the registry, or this contract for settings
        ProposalState state;
        bool weakening; // decided at the K-th approval
        uint8 proposerOrg;
        uint40 createdAt;
        uint40 executableAt; // 0 until scheduled
        uint256 organisations; // bitmask of the organisations whose stewards approved
        bytes data; // the call to make
    }

    event ProposalCreated(uint256 indexed id, address indexed proposer, uint8 indexed org, address target, bytes data);
    event ProposalApproved(uint256 indexed id, address indexed steward, uint8 indexed org, uint8 approvals, uint8 needed);
    event ProposalScheduled(uint256 indexed id, bool weakening, uint40 executableAt);
    event ProposalExecuted(uint256 indexed id, address executor);
    event ProposalCancelled(uint256 indexed id, address indexed steward, uint8 indexed org);
    event SettingsChanged(uint8 oldOrganisationsNeeded, uint8 newOrganisationsNeeded, uint32 oldDelay, uint32 newDelay);

    error NotSteward(address account);
    error UnknownProposal(uint256 id);
    error ProposalStateInvalid(uint256 id, ProposalState state);
    error AlreadyApproved(uint256 id, uint8 org);
    error NotEnoughOrganisations(uint256 id, uint8 approvals, uint8 needed);
    error DelayNotPassed(uint256 id, uint40 executableAt, uint256 timestamp);
    error UnsupportedChange(address target, bytes4 selector);
    error InvalidSettings(string why);
    error OnlySelf(address caller);

    /// @notice Proposes a change; the proposer's organisation counts as its first approval. Only a steward.
    function propose(address target, bytes calldata data) external returns (uint256 id);

    /// @notice Adds the caller's organisation's approval; the K-th schedules it (and executes it if
    /// it only tightens). Only a steward, once per organisation.
    function approveProposal(uint256 id) external;

    /// @notice Executes a scheduled proposal whose delay has passed. Anyone.
    function executeProposal(uint256 id) external;

    /// @notice Cancels a proposal that has not executed. The steward of any organisation.
    function cancelProposal(uint256 id) external;

    /// @notice Changes K and the delay. Only through a proposal (the call comes from this contract).
    function setSettings(uint8 organisationsNeeded, uint32 delay) external;

    /// @notice Whether the change would weaken anything, judged against the state now.
    function isWeakening(address target, bytes calldata data) external view returns (bool);

    function getProposal(uint256 id) external view returns (Proposal memory);
    function proposalCount() external view returns (uint256);
    function organisationsNeeded() external view returns (uint8);
    function delay() external view returns (uint32);
    function registry() external view returns (address);
    /// @notice The running hash of the proposal records, and their count (see History.sol).
    function historyHead() external view returns (bytes32 head, uint64 count);
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

import {IGovernance} from "./interfaces/IGovernance.sol";
import {IReleaseRegistry} from "./interfaces/IReleaseRegistry.sol";
import {History} from "./libraries/History.sol";
import {OrgSet} from "./libraries/Keys.sol";

/// @title Governance
/// @notice K-of-N organisation approvals in front of OpenZeppelin's TimelockController. See IGovernance.
/// @dev Deployed right after the ReleaseRegistry, which names this address as the only account allowed
/// to change the consortium; the constructor checks it. The timelock's minimum delay is 0: the delay of each operation is chosen
/// here, per proposal, from whether it weakens anything.
contract Governance is IGovernance, TimelockController {
    using History for History.Head;

    /// @inheritdoc IGovernance
    address public immutable registry;
    /// @inheritdoc IGovernance
    uint8 public organisationsNeeded;
    /// @inheritdoc IGovernance
    uint32 public delay;

    History.Head private _history;
    uint256 private _proposalCount;
    mapping(uint256 id => Proposal) private _proposals;

    constructor(IReleaseRegistry registry_, uint8 organisationsNeeded_, uint32 delay_)
        TimelockController(0, new address[](0), new address[](0), address(0))
    {
        if (registry_.governance() != address(this)) revert InvalidSettings("the registry names another governance");
        if (organisationsNeeded_ == 0 || organisationsNeeded_ > registry_.organisationCount()) {
            revert InvalidSettings("organisationsNeeded must be 1..the number of organisations");
        }
        registry = address(registry_);
        organisationsNeeded = organisationsNeeded_;
        delay = delay_;
        // Only this contract proposes, executes and cancels timelock operations; TimelockController
        // made it its own admin, and no other account holds any role.
        _grantRole(PROPOSER_ROLE, address(this));
        _grantRole(EXECUTOR_ROLE, address(this));
        _grantRole(CANCELLER_ROLE, address(this));
        _history.record1(SettingsChanged.selector, abi.encode(uint8(0), organisationsNeeded_, uint32(0), delay_));
    }

    // ================================================================== proposals

    /// @inheritdoc IGovernance
    function propose(address target, bytes calldata data) external returns (uint256 id) {
        uint8 org = _stewardOrg(msg.sender);
        _classify(target, data); // refuses a change that is not one governance makes
        id = ++_proposalCount;
        Proposal storage proposal = _proposals[id];
        proposal.target = target;
        proposal.state = ProposalState.Pending;
        proposal.proposerOrg = org;
        proposal.createdAt = uint40(block.timestamp);
        proposal.data = data;
        _history.record4(
            ProposalCreated.selector, History.topic(id), History.topic(msg.sender), History.topic(org), abi.encode(target, data)
        );
        _approve(id, proposal, org);
    }

    /// @inheritdoc IGovernance
    function approveProposal(uint256 id) external {
        uint8 org = _stewardOrg(msg.sender);
        Proposal storage proposal = _existing(id);
        if (proposal.state != ProposalState.Pending) revert ProposalStateInvalid(id, proposal.state);
        _approve(id, proposal, org);
    }

    /// @inheritdoc IGovernance
    function executeProposal(uint256 id) external {
        Proposal storage proposal = _existing(id);
        if (proposal.state != ProposalState.Scheduled) {
            if (proposal.state == ProposalState.Pending) {
                revert NotEnoughOrganisations(id, OrgSet.count(proposal.organisations), organisationsNeeded);
            }
            revert ProposalStateInvalid(id, proposal.state);
        }
        if (block.timestamp < proposal.executableAt) revert DelayNotPassed(id, proposal.executableAt, block.timestamp);
        _run(id, proposal);
    }

    /// @inheritdoc IGovernance
    function cancelProposal(uint256 id) external {
        uint8 org = _stewardOrg(msg.sender);
        Proposal storage proposal = _existing(id);
        ProposalState state = proposal.state;
        if (state != ProposalState.Pending && state != ProposalState.Scheduled) revert ProposalStateInvalid(id, state);
        if (state == ProposalState.Scheduled) this.cancel(_operation(id, proposal));
        proposal.state = ProposalState.Cancelled;
        _history.record4(
            ProposalCancelled.selector, History.topic(id), History.topic(msg.sender), History.topic(org), ""
        );
    }

    /// @inheritdoc IGovernance
    function setSettings(uint8 organisationsNeeded_, uint32 delay_) external {
        if (msg.sender != address(this)) revert OnlySelf(msg.sender);
        uint8 organisations = IReleaseRegistry(registry).organisationCount();
        if (organisationsNeeded_ == 0 || organisationsNeeded_ > organisations) {
            revert InvalidSettings("organisationsNeeded must be 1..the number of organisations");
        }
        _history.record1(SettingsChanged.selector, abi.encode(organisationsNeeded, organisationsNeeded_, delay, delay_));
        organisationsNeeded = organisationsNeeded_;
        delay = delay_;
    }

    function _approve(uint256 id, Proposal storage proposal, uint8 org) private {
        uint256 bit = uint256(1) << org;
        if (proposal.organisations & bit != 0) revert AlreadyApproved(id, org);
        proposal.organisations |= bit;
        uint8 approvals = OrgSet.count(proposal.organisations);
        uint8 needed = organisationsNeeded;
        _history.record4(
            ProposalApproved.selector,
            History.topic(id),
            History.topic(msg.sender),
            History.topic(org),
            abi.encode(approvals, needed)
        );
        if (approvals < needed) return;

        // Judged now, against the state the change will apply to: a tightening change runs in this
        // transaction, and a weakening one is weakening whatever happens before it runs.
        bool weakening = this.isWeakening(proposal.target, proposal.data); // external: the check reads calldata
        uint256 wait = weakening ? delay : 0;
        this.schedule(proposal.target, 0, proposal.data, bytes32(0), bytes32(id), wait);
        proposal.state = ProposalState.Scheduled;
        proposal.weakening = weakening;
        proposal.executableAt = uint40(block.timestamp + wait);
        _history.record2(ProposalScheduled.selector, History.topic(id), abi.encode(weakening, proposal.executableAt));
        if (!weakening) _run(id, proposal);
    }

    function _run(uint256 id, Proposal storage proposal) private {
        proposal.state = ProposalState.Executed;
        this.execute(proposal.target, 0, proposal.data, bytes32(0), bytes32(id));
        _history.record2(ProposalExecuted.selector, History.topic(id), abi.encode(msg.sender));
    }

    function _operation(uint256 id, Proposal storage proposal) private view returns (bytes32) {
        return this.hashOperation(proposal.target, 0, proposal.data, bytes32(0), bytes32(id));
    }

    // ================================================================== weakening, field by field

    /// @inheritdoc IGovernance
    function isWeakening(address target, bytes calldata data) external view returns (bool) {
        return _classify(target, data);
    }

    /// @dev Returns whether a change weakens anything; reverts for a change governance does not make.
    function _classify(address target, bytes calldata data) private view returns (bool) {
        if (data.length < 4) revert UnsupportedChange(target, bytes4(0));
        bytes4 selector = bytes4(data[:4]);
        if (target == address(this)) {
            if (selector != this.setSettings.selector) revert UnsupportedChange(target, selector);
            (uint8 needed, uint32 wait) = abi.decode(data[4:], (uint8, uint32));
            return needed < organisationsNeeded || wait < delay;
        }
        if (target != registry) revert UnsupportedChange(target, selector);
        // Anything that adds a party, a steward or a role widens who may act.
        if (
            selector == IReleaseRegistry.addOrganisation.selector || selector == IReleaseRegistry.setSteward.selector
                || selector == IReleaseRegistry.grantScopedRole.selector
        ) return true;
        if (selector == IReleaseRegistry.revokeScopedRole.selector || selector == IReleaseRegistry.removeMember.selector) {
            return false;
        }
        if (selector != IReleaseRegistry.setPolicy.selector) revert UnsupportedChange(target, selector);
        (string memory service, string memory environment, IReleaseRegistry.PolicyInput memory next) =
            abi.decode(data[4:], (string, string, IReleaseRegistry.PolicyInput));
        bytes32 policyTarget = keccak256(abi.encode(keccak256(bytes(service)), keccak256(bytes(environment))));
        return _policyWeakens(IReleaseRegistry(registry).policyAt(policyTarget), next);
    }

    /// @dev A policy weakens when any one field lets more through than before.
    function _policyWeakens(IReleaseRegistry.Policy memory old, IReleaseRegistry.PolicyInput memory next)
        private
        pure
        returns (bool)
    {
        if (old.version == 0) return true; // a policy where there was none lets releases through
        if (next.threshold < old.threshold || next.minOrganisations < old.minOrganisations) return true;
        // ttl 0 means approvals never expire: the longest ttl of all.
        if (old.ttl != 0 && (next.ttl == 0 || next.ttl > old.ttl)) return true;
        if (next.minWait < old.minWait) return true;
        // freezeSeverity s freezes incidents of severity 1..s and 0 freezes none, so a lower number
        // (0 lowest) freezes fewer: that weakens.
        if (next.freezeSeverity < old.freezeSeverity) return true;
        if (next.resolveQuorum < old.resolveQuorum) return true;
        bytes32 nextPrior =
            bytes(next.priorEnvironment).length == 0 ? bytes32(0) : keccak256(bytes(next.priorEnvironment));
        if (old.priorEnvironment != 0 && nextPrior != old.priorEnvironment) return true;
        for (uint256 i; i < old.requiredAttestations.length; ++i) {
            if (!_listed(old.requiredAttestations[i], next.requiredAttestations)) return true;
        }
        return false;
    }

    function _listed(bytes32 typeKey, string[] memory names) private pure returns (bool) {
        for (uint256 i; i < names.length; ++i) {
            if (keccak256(bytes(names[i])) == typeKey) return true;
        }
        return false;
    }

    // ================================================================== views

    /// @inheritdoc IGovernance
    function getProposal(uint256 id) external view returns (Proposal memory) {
        return _existing(id);
    }

    /// @inheritdoc IGovernance
    function proposalCount() external view returns (uint256) {
        return _proposalCount;
    }

    /// @inheritdoc IGovernance
    function historyHead() external view returns (bytes32 head, uint64 count) {
        History.Head memory h = _history;
        return (bytes32(h.head), h.count);
    }

    function _existing(uint256 id) private view returns (Proposal storage proposal) {
        proposal = _proposals[id];
        if (proposal.state == ProposalState.None) revert UnknownProposal(id);
    }

    function _stewardOrg(address account) private view returns (uint8 org) {
        org = IReleaseRegistry(registry).stewardOrganisation(account);
        if (org == 0) revert NotSteward(account);
    }
}

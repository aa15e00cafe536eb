// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {GateReason} from "../../contracts/interfaces/IReleaseRegistry.sol";
import {SuiteHandler} from "./SuiteHandler.sol";
import {InvariantTest} from "./utils/InvariantTest.sol";
import {vm} from "./utils/Vm.sol";

/// @title The invariants of issue 10 ("Tests and checks"), checked after every call of random sequences
/// @notice Each invariant_NN function is its own forge campaign. The handler (SuiteHandler) takes the
/// steps and keeps the model; each invariant here asks it one check. Invariants 6 (a signer's last
/// action wins) and 12 (state rebuilt from logs equals the getters) need suite v2's signedAt and
/// complete events and are not stated here. Invariants that suite v1 is known to break are listed in
/// test/forge/known-v1-failures.txt with the finding that breaks them; scripts/forge_invariants.py
/// reports them as known instead of failing. The invariants themselves are never weakened for v1.
contract SuiteInvariants is InvariantTest {
    SuiteHandler internal handler;

    function setUp() public {
        handler = new SuiteHandler();
        targetContract(address(handler));
        targetSelector(address(handler), handler.actions());
    }

    /// @dev Checks run at the model's clock (the gate and the tally depend on block.timestamp).
    function _now() internal {
        vm.warp(handler.ghostNow());
        vm.roll(handler.ghostBlock());
    }

    // ------------------------------------------------------------------ invariants (issue 10 numbering)

    /// 1. A live deployment is Completed, the active one is InProgress, and they differ.
    function invariant_01_liveCompletedActiveInProgress() public {
        _now();
        (bool ok, string memory why) = handler.checkLiveAndActive();
        require(ok, why);
    }

    /// 2. A rollback restores exactly the previous Completed deployment.
    function invariant_02_rollbackRestoresPreviousCompleted() public view {
        (bool ok, string memory why) = handler.recorded(2);
        require(ok, why);
    }

    /// 3. Nothing revoked becomes live (by complete, nor by rollback).
    function invariant_03_nothingRevokedBecomesLive() public view {
        (bool ok, string memory why) = handler.recorded(3);
        require(ok, why);
    }

    /// 4. Every promotion and completion (and start) happens while the gate allows.
    function invariant_04_stepsOnlyWhileGateAllows() public view {
        (bool ok, string memory why) = handler.recorded(4);
        require(ok, why);
    }

    /// 4b. (v2's canary rule, part of "every step is re-checked") No promote or complete after a Fail
    /// verdict, nor after a Marginal verdict without a later Pass.
    function invariant_04b_noStepAfterFailOrMarginalVerdict() public view {
        (bool ok, string memory why) = handler.recorded(14);
        require(ok, why);
    }

    /// 5. The tally equals a model built from the votes cast.
    function invariant_05_tallyEqualsModel() public {
        _now();
        (bool ok, string memory why) = handler.checkTally();
        require(ok, why);
    }

    /// 7. Each (signer, nonce) is used once.
    function invariant_07_nonceUsedOnce() public view {
        (bool ok, string memory why) = handler.checkNonces();
        require(ok, why);
    }

    /// 8. The active-approver bits match the roles and organisations.
    function invariant_08_approverBitsMatchRoles() public view {
        (bool ok, string memory why) = handler.checkApproverBits();
        require(ok, why);
    }

    /// 9. The prior-environment check matches the completions.
    function invariant_09_priorEnvironmentMatchesCompletions() public {
        _now();
        (bool ok, string memory why) = handler.checkPriorEnvironment();
        require(ok, why);
    }

    /// 10. The frozen state matches the open incidents.
    function invariant_10_freezeMatchesOpenIncidents() public {
        _now();
        (bool ok, string memory why) = handler.checkFreeze();
        require(ok, why);
    }

    /// 11. The gas of start and of the gate is bounded.
    function invariant_11_gasOfStartAndGateBounded() public view {
        (bool ok, string memory why) = handler.checkGas();
        require(ok, why);
    }

    /// 13. Ids and percentages only rise, and terminal states stay terminal.
    function invariant_13_monotonicAndTerminal() public view {
        (bool ok, string memory why) = handler.checkMonotonic();
        require(ok, why);
    }

    // ------------------------------------------------------------------ the harness itself

    /// @notice Right after bootstrap every check holds, and the storage slots invariant 8 reads are the
    /// ones the layout has (five approvers in slots 0..4: bits 0x1f). A wrong slot constant fails here
    /// rather than making invariant 8 compare zeros.
    function test_bootstrapPassesEveryCheck() public {
        _now();
        require(handler.activeApproverBits() == 0x1f, "active-approver bits not where the handler reads them");
        _checkAll();
    }

    /// @notice A vote signed with vm.sign and submitted by someone else counts: the handler's EIP-712
    /// hashing and signatures are real, so the signed-vote steps of the campaign are not all refused.
    function test_signedVoteCounts() public {
        // artifact 1 was registered at bootstrap by the registrar
        require(handler.gateReason(1, 0) == GateReason.NotEnoughApprovals, "staging must wait for one approval");
        handler.signVote(1, 0, 1, 0, 3, 1); // approver1 approves artifact 1 for staging, nonce 3
        handler.submitSignedVote(0);
        _now();
        require(handler.gateReason(1, 0) == GateReason.Allowed, "the signed approval did not count");
        _checkAll();
    }

    /// @notice One full rollout through every kind of step keeps every check: the checks can pass.
    function test_rolloutKeepsEveryCheck() public {
        handler.approve(1, 0, 1); // approver1 approves artifact 1 for staging
        handler.start(1, 0, 4); // 100% at once (the model says artifact 1 may go, so it is the one)
        handler.complete(0);
        handler.openIncident(0, 3, 0); // severity 4: does not freeze staging (freeze at 2)
        handler.advanceIncident(1, 0); // acknowledged
        handler.advanceIncident(1, 0); // mitigated
        handler.resolveIncident(1);
        handler.warp(3);
        _now();
        _checkAll();
        require(handler.liveOf(0) == 1, "deployment 1 is live");
    }

    function _checkAll() internal view {
        bool ok;
        string memory why;
        (ok, why) = handler.checkLiveAndActive();
        require(ok, why);
        (ok, why) = handler.checkTally();
        require(ok, why);
        (ok, why) = handler.checkNonces();
        require(ok, why);
        (ok, why) = handler.checkApproverBits();
        require(ok, why);
        (ok, why) = handler.checkPriorEnvironment();
        require(ok, why);
        (ok, why) = handler.checkFreeze();
        require(ok, why);
        // not checkGas: gas is invariant 11's campaign, and v1's start is over the issue's bound
        (ok, why) = handler.checkMonotonic();
        require(ok, why);
        for (uint256 i = 1; i <= 14; ++i) { // the violations the handler records while stepping
            (ok, why) = handler.recorded(i);
            require(ok, why);
        }
    }
}

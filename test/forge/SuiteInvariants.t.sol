// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {GateReason, Decision} from "../../contracts/interfaces/IReleaseRegistry.sol";
import {IDeploymentLedger} from "../../contracts/interfaces/IDeploymentLedger.sol";
import {SuiteHandler} from "./SuiteHandler.sol";
import {InvariantTest} from "./utils/InvariantTest.sol";
import {vm} from "./utils/Vm.sol";

/// @title The invariants of issue 10 ("Tests and checks"), checked after every call of random sequences
/// @notice Each invariant_NN function is its own forge campaign. The handler (SuiteHandler) takes the
/// steps and keeps the model; each invariant here asks it one check. All of them must hold on suite v2
/// (scripts/forge_invariants.py fails on any failure).
contract SuiteInvariants is InvariantTest {
    /// @dev ds-test's log event: forge prints it with the test (and in --json's decoded_logs).
    event log_named_uint(string key, uint256 val);

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
        (bool ok, string memory why) = handler.checkNothingRevokedLive();
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

    /// 4c. (v2's governance rule) A change runs only with K organisations' approval, and a weakening
    /// one only after the delay; the classification is the model's, field by field.
    function invariant_04c_changesNeedKOrganisationsAndDelay() public view {
        (bool ok, string memory why) = handler.recorded(15);
        require(ok, why);
    }

    /// 5. The tally equals a model built from the votes cast.
    function invariant_05_tallyEqualsModel() public {
        _now();
        (bool ok, string memory why) = handler.checkTally();
        require(ok, why);
    }

    /// 6. A signer's last action wins (votes by transaction and signature, withdrawals, admissions).
    function invariant_06_lastActionWins() public {
        _now();
        (bool ok, string memory why) = handler.checkLastActionWins();
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

    /// 12. The state rebuilt from the logs equals the getters (historyHead of each contract, and the
    /// gate the model derives from the steps).
    function invariant_12_stateFromLogsEqualsGetters() public {
        _now();
        (bool ok, string memory why) = handler.checkHistory();
        require(ok, why);
    }

    /// 13. Ids and percentages only rise, and terminal states stay terminal.
    function invariant_13_monotonicAndTerminal() public view {
        (bool ok, string memory why) = handler.checkMonotonic();
        require(ok, why);
    }

    // ------------------------------------------------------------------ the harness itself

    /// @notice Right after bootstrap every check holds, and the storage slots invariant 8 reads are the
    /// ones the layout has (five approvers in vote slots 0..4: bits 0x1f, each slot naming its
    /// approver in epoch 1). A wrong slot constant fails here rather than making invariant 8 compare
    /// zeros.
    function test_bootstrapPassesEveryCheck() public {
        _now();
        require(handler.activeApproverBits() == 0x1f, "active-approver bits not where the handler reads them");
        for (uint256 i; i < 5; ++i) {
            require(handler.slotAccount(i) == handler.approverAddress(i), "slot accounts not where the handler reads them");
            require(handler.slotEpoch(i) == 1, "slot epochs not where the handler reads them");
        }
        require(handler.logsFolded() > 0, "no log was recorded at bootstrap");
        _checkAll();
    }

    /// @notice A vote signed with vm.sign and submitted by someone else counts: the handler's EIP-712
    /// hashing and signatures are real, so the signed-vote steps of the campaign are not all skipped;
    /// the same signature again is skipped (nonce used), and so is one older than the signer's last
    /// action.
    function test_signedVoteCounts() public {
        _now();
        require(
            handler.voteTypedDataHash(handler.approverAddress(1), bytes32(uint256(1)), 0, Decision.Approve, 3, 7, 9)
                == handler.registry().voteHash(handler.approverAddress(1), bytes32(uint256(1)), "payments-api", "staging", Decision.Approve, 3, 7, 9),
            "the handler's EIP-712 hash is not the registry's"
        );
        handler.warp(3); // 4 s on, so a signature signed now is newer than the admission
        // artifact 1 was registered at bootstrap by the registrar
        require(handler.gateReason(1, 0) == GateReason.NotEnoughApprovals, "staging must wait for one approval");
        // approver1 approves artifact 1 for staging, nonce 3, signed now, valid for 1 s (timing 4)
        handler.signVote(1, 0, 1, 0, 3, 4);
        handler.submitSignedVote(0);
        _now();
        require(handler.signedVotesRecorded() == 1, "the signed approval was skipped");
        require(handler.gateReason(1, 0) == GateReason.Allowed, "the signed approval did not count");
        handler.submitSignedVote(0); // a replay: skipped, and the model agrees
        require(handler.signedVotesRecorded() == 1, "a replayed signature counted");
        _checkAll();
    }

    /// @notice One full rollout through every kind of step keeps every check: the checks can pass.
    function test_rolloutKeepsEveryCheck() public {
        handler.approve(1, 0, 1); // approver1 approves artifact 1 for staging
        handler.start(1, 0, 4); // 100% at once (the model says artifact 1 may go, so it is the one)
        handler.complete(0);
        handler.openIncident(0, 3, 0); // severity 4: does not freeze staging (freeze at 2)
        handler.advanceIncident(1, 1); // acknowledged
        handler.advanceIncident(1, 2); // mitigated
        handler.resolveIncident(1, 0); // not freezing: one organisation resolves it
        handler.warp(3);
        _now();
        _checkAll();
        require(handler.liveOf(0) == 1, "deployment 1 is live");
    }

    /// @notice Issue 10's v1 findings, as directed sequences, hold on v2: a freezing incident needs two
    /// organisations to resolve (policy variant 0); a weakening policy change waits out the delay; a
    /// rollback after complete A, B, A keeps A's earlier completion (invariant 9).
    function test_directedFindings() public {
        handler.openIncident(0, 0, 0); // severity 1 in staging: freezes it
        handler.resolveIncident(1, 0);
        require(handler.ledger().getIncident(1).status == IDeploymentLedger.IncidentStatus.Open, "one organisation resolved a freezing incident");
        handler.resolveIncident(1, 1);
        require(handler.ledger().getIncident(1).status == IDeploymentLedger.IncidentStatus.Resolved, "two organisations did not resolve it");
        uint256 before = handler.ghostNow();
        handler.setPolicy(0, 2, 0); // variant 2 weakens staging: waits the delay
        require(handler.ghostNow() >= before + 1 hours, "a weakening change did not wait");
        handler.setPolicy(0, 0, 1); // back to variant 0: tightening, at once
        handler.approve(1, 0, 1);
        handler.approve(2, 0, 1);
        handler.start(1, 0, 4);
        handler.complete(0); // A
        handler.start(2, 0, 4);
        handler.complete(0); // B
        handler.start(1, 0, 4);
        handler.complete(0); // A again
        handler.rollback(0, true);
        _now();
        require(handler.liveOf(0) == 2, "the rollback did not restore B");
        _checkAll();
    }

    /// @notice Invariant 11's numbers: start's transaction gas and the gate's gas with no incident and
    /// with many open non-freezing incidents (severity 4; staging freezes at 2). The freeze check is
    /// O(1), so they must not grow. Logged for the report.
    function test_gasWithManyOpenIncidents() public {
        handler.approve(1, 0, 1);
        handler.start(1, 0, 4);
        uint256 firstStart = handler.lastStartTxGas();
        handler.complete(0);
        handler.approve(2, 0, 1);
        handler.start(2, 0, 4);
        uint256 startEmpty = handler.lastStartTxGas();
        handler.measureGate(1, 0);
        uint256 gateEmpty = handler.maxGateGas();
        handler.complete(0);
        for (uint256 i; i < 200; ++i) handler.openIncident(0, 3, 0);
        handler.start(1, 0, 4);
        uint256 startMany = handler.lastStartTxGas();
        handler.measureGate(1, 0);
        emit log_named_uint("start tx gas, the target's first rollout", firstStart);
        emit log_named_uint("start tx gas, 0 open incidents", startEmpty);
        emit log_named_uint("start tx gas, 200 open non-freezing incidents", startMany);
        emit log_named_uint("gate gas, 0 open incidents", gateEmpty);
        emit log_named_uint("gate gas (max), 200 open non-freezing incidents", handler.maxGateGas());
        require(handler.ghostDeploymentCount() == 3, "a start did not happen");
        // O(1): open incidents cost nothing extra (a little slack for warm/cold differences)
        require(startMany <= startEmpty + 1_000, "start grows with open incidents");
        require(handler.maxGateGas() <= gateEmpty + 1_000, "the gate grows with open incidents");
        (bool ok, string memory why) = handler.checkGas();
        require(ok, why);
        _now();
        _checkAll();
    }

    function _checkAll() internal view {
        bool ok;
        string memory why;
        (ok, why) = handler.checkLiveAndActive();
        require(ok, why);
        (ok, why) = handler.checkTally();
        require(ok, why);
        (ok, why) = handler.checkLastActionWins();
        require(ok, why);
        (ok, why) = handler.checkNonces();
        require(ok, why);
        (ok, why) = handler.checkApproverBits();
        require(ok, why);
        (ok, why) = handler.checkPriorEnvironment();
        require(ok, why);
        (ok, why) = handler.checkFreeze();
        require(ok, why);
        (ok, why) = handler.checkHistory();
        require(ok, why);
        (ok, why) = handler.checkGas();
        require(ok, why);
        (ok, why) = handler.checkMonotonic();
        require(ok, why);
        for (uint256 i = 1; i <= 15; ++i) { // the violations the handler records while stepping
            (ok, why) = handler.recorded(i);
            require(ok, why);
        }
    }
}

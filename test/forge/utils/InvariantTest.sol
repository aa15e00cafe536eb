// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice What forge reads from an invariant test contract to decide what to call (the functions
/// forge-std's StdInvariant provides; written here because forge-std cannot be installed). forge calls
/// these views after setUp(): only the targeted contracts and selectors are fuzzed, and the excluded
/// senders are never used as msg.sender.
abstract contract InvariantTest {
    /// @dev Layout fixed by forge: it ABI-decodes `(address,bytes4[])[]`.
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetedContracts;
    FuzzSelector[] private _targetedSelectors;
    address[] private _excludedSenders;

    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function targetSelector(address target, bytes4[] memory selectors) internal {
        FuzzSelector storage entry = _targetedSelectors.push();
        entry.addr = target;
        for (uint256 i; i < selectors.length; ++i) {
            entry.selectors.push(selectors[i]);
        }
    }

    function excludeSender(address sender) internal {
        _excludedSenders.push(sender);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }

    function excludeSenders() public view returns (address[] memory) {
        return _excludedSenders;
    }
}

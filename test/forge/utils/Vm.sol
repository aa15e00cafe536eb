// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice The few forge cheatcodes the invariant suite uses. forge-std is a git dependency and cannot
/// be installed here, so these are declared by hand; each signature must match forge's exactly, since
/// forge dispatches on the selector.
interface Vm {
    /// @dev A log as forge recorded it (vm.recordLogs / vm.getRecordedLogs).
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function warp(uint256 newTimestamp) external;
    function roll(uint256 newHeight) external;
    function prank(address msgSender) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function assume(bool condition) external pure;
    function label(address account, string calldata newLabel) external;
    function addr(uint256 privateKey) external pure returns (address keyAddr);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function load(address target, bytes32 slot) external view returns (bytes32 data);
    /// @dev Marks every storage slot of `target` cold again, so a gas measurement is not flattered by
    /// reads an earlier call in the same transaction made.
    function cool(address target) external;
    /// @dev Deploys a contract from forge's build output ("File.sol:Name") with ABI-encoded arguments.
    function deployCode(string calldata artifactPath, bytes calldata constructorArgs) external returns (address deployed);
    function getNonce(address account) external view returns (uint64 nonce);
    function computeCreateAddress(address deployer, uint256 nonce) external pure returns (address);
    /// @dev Starts recording every log; getRecordedLogs returns (and forgets) those recorded since.
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory logs);
    function toString(uint256 value) external pure returns (string memory);
    function toString(address value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);
}

/// @dev forge answers cheatcodes at this address: address(bytes20(uint160(uint256(keccak256("hevm cheat code"))))).
Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

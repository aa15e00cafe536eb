// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice A running hash over the records (event logs) a contract emits, so that an export can be
/// proven complete: dropping, adding or reordering one record changes the head.
/// @dev Our contracts emit their events through `record*`, which writes the log and folds it in one
/// step, so no record can leave the history. For each log, in order:
///   recordHash = keccak256(abi.encodePacked(topic0, topic1.., data))    (the log's topics and data)
///   head'      = bytes24(keccak256(abi.encodePacked(head, recordHash)))  (head starts at 0)
///   count'     = count + 1
/// Head and count share one storage word, so a transaction pays one cold SLOAD and one SSTORE
/// (about 5k gas) however many records it folds; 192 bits keep second preimages out of reach.
/// The events' declarations stay in the interfaces, which are what ABIs and SDKs read.
library History {
    struct Head {
        bytes24 head;
        uint64 count;
    }

    function record1(Head storage self, bytes32 t0, bytes memory data) internal {
        assembly ("memory-safe") {
            log1(add(data, 32), mload(data), t0)
        }
        fold(self, keccak256(abi.encodePacked(t0, data)));
    }

    function record2(Head storage self, bytes32 t0, bytes32 t1, bytes memory data) internal {
        assembly ("memory-safe") {
            log2(add(data, 32), mload(data), t0, t1)
        }
        fold(self, keccak256(abi.encodePacked(t0, t1, data)));
    }

    function record3(Head storage self, bytes32 t0, bytes32 t1, bytes32 t2, bytes memory data) internal {
        assembly ("memory-safe") {
            log3(add(data, 32), mload(data), t0, t1, t2)
        }
        fold(self, keccak256(abi.encodePacked(t0, t1, t2, data)));
    }

    function record4(Head storage self, bytes32 t0, bytes32 t1, bytes32 t2, bytes32 t3, bytes memory data)
        internal
    {
        assembly ("memory-safe") {
            log4(add(data, 32), mload(data), t0, t1, t2, t3)
        }
        fold(self, keccak256(abi.encodePacked(t0, t1, t2, t3, data)));
    }

    /// @dev Folds a log emitted elsewhere (OpenZeppelin's own events), given its record hash.
    function fold(Head storage self, bytes32 recordHash) internal {
        Head memory current = self;
        self.head = bytes24(keccak256(abi.encodePacked(current.head, recordHash)));
        self.count = current.count + 1;
    }

    function topic(address value) internal pure returns (bytes32) {
        return bytes32(uint256(uint160(value)));
    }

    function topic(uint256 value) internal pure returns (bytes32) {
        return bytes32(value);
    }
}

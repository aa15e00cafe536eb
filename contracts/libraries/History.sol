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
/// (about 5k gas) however many records it folds; 192 bits keep second preimages out of reach. The
/// record hash is taken where the log's data lies in memory, so recording copies nothing.
/// The events' declarations stay in the interfaces, which are what ABIs and SDKs read.
library History {
    struct Head {
        bytes24 head;
        uint64 count;
    }

    function record1(Head storage self, bytes32 t0, bytes memory data) internal {
        bytes32 recordHash;
        assembly ("memory-safe") {
            let body := add(data, 32)
            let length := mload(data)
            log1(body, length, t0)
            // Hash topics ‖ data where the data lies: the word before it (its length) is borrowed
            // for the topic and given back, so nothing is copied and memory does not grow.
            let at := sub(body, 32)
            let saved := mload(at)
            mstore(at, t0)
            recordHash := keccak256(at, add(length, 32))
            mstore(at, saved)
        }
        fold(self, recordHash);
    }

    function record2(Head storage self, bytes32 t0, bytes32 t1, bytes memory data) internal {
        bytes32 recordHash;
        assembly ("memory-safe") {
            let body := add(data, 32)
            let length := mload(data)
            log2(body, length, t0, t1)
            // As in record1; the words borrowed below the data's length word hold whatever was
            // allocated before it (or scratch space) and are restored before anything reads them.
            let at := sub(body, 64)
            let saved0 := mload(at)
            let saved1 := mload(add(at, 32))
            mstore(at, t0)
            mstore(add(at, 32), t1)
            recordHash := keccak256(at, add(length, 64))
            mstore(at, saved0)
            mstore(add(at, 32), saved1)
        }
        fold(self, recordHash);
    }

    function record3(Head storage self, bytes32 t0, bytes32 t1, bytes32 t2, bytes memory data) internal {
        bytes32 recordHash;
        assembly ("memory-safe") {
            let body := add(data, 32)
            let length := mload(data)
            log3(body, length, t0, t1, t2)
            let at := sub(body, 96)
            let saved0 := mload(at)
            let saved1 := mload(add(at, 32))
            let saved2 := mload(add(at, 64))
            mstore(at, t0)
            mstore(add(at, 32), t1)
            mstore(add(at, 64), t2)
            recordHash := keccak256(at, add(length, 96))
            mstore(at, saved0)
            mstore(add(at, 32), saved1)
            mstore(add(at, 64), saved2)
        }
        fold(self, recordHash);
    }

    function record4(Head storage self, bytes32 t0, bytes32 t1, bytes32 t2, bytes32 t3, bytes memory data)
        internal
    {
        bytes32 recordHash;
        assembly ("memory-safe") {
            let body := add(data, 32)
            let length := mload(data)
            log4(body, length, t0, t1, t2, t3)
            let at := sub(body, 128)
            let saved0 := mload(at)
            let saved1 := mload(add(at, 32))
            let saved2 := mload(add(at, 64))
            let saved3 := mload(add(at, 96))
            mstore(at, t0)
            mstore(add(at, 32), t1)
            mstore(add(at, 64), t2)
            mstore(add(at, 96), t3)
            recordHash := keccak256(at, add(length, 128))
            mstore(at, saved0)
            mstore(add(at, 32), saved1)
            mstore(add(at, 64), saved2)
            mstore(add(at, 96), saved3)
        }
        fold(self, recordHash);
    }

    /// @dev Folds a log emitted elsewhere (OpenZeppelin's own events), given its record hash. One
    /// SLOAD and one SSTORE of the shared word; the 56 hashed bytes go through scratch space. In
    /// storage `head` is the word's low 24 bytes and `count` its high 8 (Solidity's packing).
    function fold(Head storage self, bytes32 recordHash) internal {
        assembly ("memory-safe") {
            let word := sload(self.slot)
            mstore(0x00, shl(64, word)) // head, left-aligned, in bytes 0..23 (24..31 are overwritten next)
            mstore(0x18, recordHash) // bytes 24..55
            let head := shr(64, keccak256(0x00, 0x38))
            // 2^64 records cannot happen (each costs a transaction's gas), so the count is not checked.
            sstore(self.slot, or(shl(192, add(shr(192, word), 1)), head))
        }
    }

    function topic(address value) internal pure returns (bytes32) {
        return bytes32(uint256(uint160(value)));
    }

    function topic(uint256 value) internal pure returns (bytes32) {
        return bytes32(value);
    }
}

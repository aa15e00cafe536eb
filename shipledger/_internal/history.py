"""The suite's running hash of its records (contracts/libraries/History.sol), recomputed off chain.

Every contract of the suite folds each of its records (event logs), in log order, into a head:
    recordHash = keccak256(topic0 ‖ topic1.. ‖ data)          the raw log's topics and data
    head'      = first 24 bytes of keccak256(head ‖ recordHash)  (head starts at 24 zero bytes)
and counts them. `historyHead()` returns (head left-aligned in 32 bytes, count). The index, export,
verify-export and audit recompute it from raw logs and compare it with the chain's.

Not every log at a suite address is a record: OpenZeppelin's own events that the contracts do not
fold (TimelockController's, emitted by the Governance address, and AccessControl/EIP-712
bookkeeping events the registry never emits) are skipped by everything that reads the history.
The registry does fold AccessControl's RoleGranted/RoleRevoked.
"""

from __future__ import annotations

from shipledger._internal.abi import keccak  # not eth_utils: `status` imports this, and start-up counts

HEAD_BYTES = 24
ZERO_HEAD = "0x" + "00" * HEAD_BYTES
# Events in the suite's ABIs that are not records of that contract (History.sol folds only ours).
NOT_RECORDS = {
    "ReleaseRegistry": frozenset({"EIP712DomainChanged", "RoleAdminChanged"}),
    "Governance": frozenset({"CallScheduled", "CallExecuted", "CallSalt", "Cancelled", "MinDelayChange",
                             "RoleGranted", "RoleRevoked", "RoleAdminChanged"}),
    "DeploymentLedger": frozenset(),
}
# historyHead() selector, for raw eth_call
HISTORY_HEAD_CALL = "0x" + keccak("historyHead()")[:4].hex()


def is_record(contract: str, event: str) -> bool:
    return event not in NOT_RECORDS.get(contract, frozenset())


def record_hash(topics: list[str], data: str) -> bytes:
    """keccak256 of a raw JSON-RPC log's topics and data, concatenated."""
    raw = b"".join(bytes.fromhex(t[2:]) for t in topics) + bytes.fromhex(data[2:])
    return keccak(raw)


def fold(head: str, record: bytes) -> str:
    """The head after one more record ('0x' + 48 hex)."""
    return "0x" + keccak(bytes.fromhex(head[2:]) + record)[:HEAD_BYTES].hex()


def fold_log(head: str, log: dict) -> str:
    return fold(head, record_hash(log["topics"], log.get("data") or "0x"))


def decode_head(result: str) -> tuple[str, int]:
    """(head '0x' + 48 hex, count) from historyHead()'s raw return data."""
    raw = bytes.fromhex(result[2:])
    if len(raw) != 64:
        raise ValueError(f"historyHead() returned {len(raw)} bytes, not 64")
    return "0x" + raw[:HEAD_BYTES].hex(), int.from_bytes(raw[32:64], "big")


def head_call(address: str, block: int | str) -> tuple[str, list]:
    """The JSON-RPC call of historyHead() on address at a block (a number or a tag)."""
    tag = hex(block) if isinstance(block, int) else block
    return "eth_call", [{"to": address, "data": HISTORY_HEAD_CALL}, tag]

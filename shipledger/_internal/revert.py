"""Decode custom-error revert data of the suite's contracts by selector."""

from __future__ import annotations

from functools import cache

from shipledger._internal import artifacts
from shipledger._internal.abi import checksum_address, decode as abi_decode, keccak


def canonical_type(item: dict) -> str:
    """The canonical ABI type of one input, expanding tuples."""
    kind = item["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(canonical_type(c) for c in item["components"]) + ")" + kind[len("tuple"):]
    return kind


@cache
def error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """selector -> (error name, argument names, argument types) for every error of the suite."""
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in artifacts.SUITE:
        for item in artifacts.abi(name):
            if item["type"] != "error":
                continue
            types = [canonical_type(i) for i in item["inputs"]]
            selector = keccak(f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def decode_revert(data: bytes | str | None) -> tuple[str, dict] | None:
    """(error name, {argument: value}) for revert data of a known custom error, else None."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x"))
    if not data or len(data) < 4:
        return None
    entry = error_table().get(bytes(data[:4]))
    if entry is None:
        return None
    name, arg_names, types = entry
    values = abi_decode(types, bytes(data[4:]))
    values = [checksum_address(v) if t == "address" else v for t, v in zip(types, values)]
    return name, dict(zip(arg_names, values))


def reverted_because(receipt, where: str, replay, transactions_in_block) -> Exception:
    """Why a mined transaction reverted, as the SDK's error; `where` says which transaction and block.

    The node's own answer first: GoQuorum (--revertreason) and Besu (--revert-reason-enabled) put the
    revert data in the receipt's `revertReason`. Without it, a replay of the call says why only when the
    transaction was alone in its block: then the state after that block is the state it ran on (a
    reverted transaction changes nothing the call reads) and the block's timestamp is the one it saw.
    With other transactions in the block, any replay runs on another state, so it says it cannot know.

    receipt: a mapping (web3's or JSON-RPC's); replay(block) -> the error the call raises there, or None
    if it succeeds; transactions_in_block() -> how many transactions the receipt's block holds."""
    from shipledger.errors import UnknownRevert, revert_error

    reason = receipt.get("revertReason")
    if reason:
        decoded = decode_revert(reason)
        return revert_error(*decoded) if decoded else UnknownRevert(f"{where}: the node gives revert data {reason}, not one of the suite's errors")
    if transactions_in_block() != 1:
        return UnknownRevert(f"{where}; cannot know why: the node gives no revert reason (GoQuorum --revertreason, "
                             "Besu --revert-reason-enabled) and other transactions in that block changed the state it ran on")
    block = receipt.get("blockNumber")
    error = replay(int(block, 16) if isinstance(block, str) else block)
    return error or UnknownRevert(f"{where}, yet the same call succeeds on that block: cannot know why")

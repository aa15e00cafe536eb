"""The strict decoder of the suite's logs, for the checks that must not lean on the index's decoder.

The audit and verify-export re-decode what the chain returns with eth_abi, from the committed ABIs,
and compare it with what the index or an export holds. shipledger.compliance.index keeps its own fast decoder on
purpose: a re-check that used it would agree with it by construction.

Values come out in the index's encoding (index-spec, "Value encoding"): addresses checksummed, bytes
'0x' + lowercase hex, integers and enums as ints, structs as objects keyed by component name.
"""

from __future__ import annotations

from functools import cache

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from shipledger._internal import artifacts
from shipledger._internal.revert import canonical_type


class NotASuiteEvent(ValueError):
    """The log's first topic is no event of the suite's contracts (or it has no topics at all)."""


@cache
def event_table() -> dict[bytes, tuple[str, dict]]:
    """topic0 -> (contract name, ABI event item) for every record event of the suite's contracts
    (OpenZeppelin's events they do not fold are not records: see _internal/history.py)."""
    from shipledger._internal.history import is_record

    table = {}
    for contract in artifacts.SUITE:
        for item in artifacts.abi(contract):
            if item["type"] == "event" and not item.get("anonymous") and is_record(contract, item["name"]):
                signature = f"{item['name']}({','.join(canonical_type(i) for i in item['inputs'])})"
                table[keccak(text=signature)] = (contract, item)
    return table


def decode_log(log: dict) -> tuple[str, str, dict]:
    """(contract name, event name, args) of a raw JSON-RPC log, args in ABI order. NotASuiteEvent (a
    ValueError) for a log of no suite event; ValueError or eth_abi's DecodingError for one that
    claims to be a suite event but does not decode as it."""
    topics = [bytes.fromhex(t.removeprefix("0x")) for t in log.get("topics") or []]
    if not topics or topics[0] not in event_table():
        raise NotASuiteEvent("the log is not an event of the suite's contracts")
    contract, item = event_table()[topics[0]]
    indexed = [i for i in item["inputs"] if i.get("indexed")]
    plain = [i for i in item["inputs"] if not i.get("indexed")]
    if len(topics) != len(indexed) + 1 or any(len(t) != 32 for t in topics):
        raise ValueError(f"{item['name']} has {len(indexed)} indexed arguments but the log has {len(topics) - 1} topics")
    values = {i["name"]: _topic_value(i, topic) for i, topic in zip(indexed, topics[1:])}
    data = bytes.fromhex(log.get("data", "0x").removeprefix("0x"))
    for abi_input, value in zip(plain, abi_decode([canonical_type(i) for i in plain], data)):
        values[abi_input["name"]] = _json_value(abi_input, value)
    return contract, item["name"], {i["name"]: values[i["name"]] for i in item["inputs"]}


def _topic_value(item: dict, topic: bytes):
    """An indexed argument from its topic. The suite indexes only 32-byte static types, whose topic is
    their ABI encoding: sliced here directly (eth_abi costs ~40 us a call, 10k-line exports feel it)."""
    kind = item["type"]
    if kind == "bytes32":
        return "0x" + topic.hex()
    if kind == "address" and not any(topic[:12]):
        return _checksum("0x" + topic[12:].hex())
    if kind.startswith("uint") and kind[4:].isdigit() and int.from_bytes(topic, "big") < 2 ** int(kind[4:]):
        return int.from_bytes(topic, "big")
    return _json_value(item, abi_decode([canonical_type(item)], topic)[0])  # anything else, strictly checked


def _json_value(item: dict, value):
    """A decoded ABI value in the index's encoding."""
    kind = item["type"]
    if kind.endswith("]"):
        inner = {**item, "type": kind[: kind.rindex("[")]}
        return [_json_value(inner, v) for v in value]
    if kind == "tuple":
        return {c["name"]: _json_value(c, v) for c, v in zip(item["components"], value)}
    if kind == "address":
        return _checksum(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


@cache
def _checksum(address: str) -> str:
    return to_checksum_address(address)  # a keccak each: approvers and contracts repeat, so remember them

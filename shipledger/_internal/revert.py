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

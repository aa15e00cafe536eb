"""shipledger._internal.abi against eth_abi and eth_utils, the reference implementations: for every
getter output, getter input and custom error of the suite's ABIs, on generated values."""

from __future__ import annotations

import re

import pytest
from eth_abi import decode as ref_decode, encode as ref_encode
from eth_utils import keccak as ref_keccak, to_checksum_address
from hypothesis import given, settings, strategies as st

from shipledger._internal import abi, artifacts
from shipledger._internal.revert import canonical_type


def _suite_types() -> dict[str, set[tuple[str, ...]]]:
    """'outputs' / 'inputs' / 'errors' -> the type lists the suite's ABIs use there."""
    found: dict[str, set] = {"outputs": set(), "inputs": set(), "errors": set()}
    for contract in artifacts.SUITE:
        for item in artifacts.abi(contract):
            if item["type"] == "function" and item.get("stateMutability") in ("view", "pure"):
                found["outputs"].add(tuple(canonical_type(o) for o in item["outputs"]))
                found["inputs"].add(tuple(canonical_type(i) for i in item["inputs"]))
            elif item["type"] == "error":
                found["errors"].add(tuple(canonical_type(i) for i in item["inputs"]))
    return found


SUITE = _suite_types()


def _value(abi_type: str):
    """A hypothesis strategy for values of one type, as eth_abi encodes them."""
    if abi_type.startswith("("):
        return st.tuples(*(_value(t) for t in abi_type[1:-1].split(",")))
    if abi_type.endswith("[]"):
        return st.lists(_value(abi_type[:-2]), max_size=5)
    fixed = re.fullmatch(r"(.+)\[(\d+)\]", abi_type)
    if fixed:
        return st.tuples(*[_value(fixed[1])] * int(fixed[2]))
    if abi_type == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    if abi_type == "bool":
        return st.booleans()
    if abi_type in ("string", "bytes"):
        return st.text(max_size=70) if abi_type == "string" else st.binary(max_size=70)
    match = re.fullmatch(r"(u?)int(\d*)", abi_type)
    if match:
        bits = int(match.group(2) or 256)
        return st.integers(0, (1 << bits) - 1) if match.group(1) else st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    size = int(re.fullmatch(r"bytes(\d+)", abi_type).group(1))
    return st.binary(min_size=size, max_size=size)


def _values(types: tuple[str, ...]):
    return st.tuples(*(_value(t) for t in types))


@pytest.mark.parametrize("types", sorted(SUITE["outputs"] | SUITE["errors"]), ids=",".join)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_decode_agrees_with_eth_abi(types, data):
    values = data.draw(_values(types))
    encoded = ref_encode(list(types), list(values))
    assert abi._decoder(types) is not None, f"{types} falls back to eth_abi: the suite's shapes should not"
    assert abi.decode(types, encoded) == ref_decode(list(types), encoded)


@pytest.mark.parametrize("types", sorted(SUITE["inputs"]), ids=",".join)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_encode_agrees_with_eth_abi(types, data):
    values = data.draw(_values(types))
    assert abi.encode(list(types), list(values)) == ref_encode(list(types), list(values))


@pytest.mark.parametrize("types, data", [
    (("bool",), (2).to_bytes(32, "big")),  # a bool is 0 or 1
    (("uint8",), (256).to_bytes(32, "big")),  # padding of a small integer
    (("address",), b"\1" + bytes(31)),  # padding of an address
    (("bytes4",), bytes(4) + b"\1" + bytes(27)),  # padding of fixed bytes
    (("uint256",), bytes(31)),  # short data
    (("string",), (32).to_bytes(32, "big") + (40).to_bytes(32, "big") + b"x" * 32),  # length past the end
    (("uint256[]",), (32).to_bytes(32, "big") + (3).to_bytes(32, "big") + bytes(64)),  # count past the end
    (("string",), (32).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\xff" + bytes(31)),  # not UTF-8
])
def test_malformed_data_is_refused_by_both(types, data):
    with pytest.raises(Exception):
        ref_decode(list(types), data)
    with pytest.raises(ValueError):
        abi.decode(types, data)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20), upper=st.booleans())
def test_checksum_address_agrees_with_eth_utils(raw, upper):
    text = "0x" + (raw.hex().upper() if upper else raw.hex())
    assert abi.checksum_address(text) == to_checksum_address(text) == abi.checksum_address(raw)


@pytest.mark.parametrize("bad", ["0x123", "0x" + "g" * 40, "", None, 5, b"\0" * 19])
def test_checksum_address_refuses_what_is_no_address(bad):
    with pytest.raises(ValueError):
        abi.checksum_address(bad)


@given(st.binary(max_size=300))
def test_keccak_agrees_with_eth_utils(data):
    assert abi.keccak(data) == ref_keccak(data)
    text = data.decode("latin-1")
    assert abi.keccak(text) == ref_keccak(text=text)

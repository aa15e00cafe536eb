"""keccak256, EIP-55 addresses, and the ABI encoding of the suite's getter calls and custom errors,
with the standard library and pycryptodome.

Why not eth_abi and eth_utils here: `status` and `member list` answer from a synced index plus a few
getters, and importing those two packages costs about half a second of CPU (eth_utils pulls in
pydantic), more than everything else those commands do. The suite's getters and errors use value
types, static structs of value types, string, bytes and arrays of value types, and that is what is
handled here; any other type is passed to eth_abi, imported only then. Values are eth_abi's: int,
bool, bytes, addresses as lower-case hex text, tuples for structs and arrays, so callers can take
either. tests/compliance/test_abi.py compares the two on every getter and error of the suite.
"""

from __future__ import annotations

import re
from functools import lru_cache

# pycryptodome's keccak, which web3's eth-hash uses too; through eth_hash.auto it would also cost
# importlib.metadata (eth_hash reads its own version at import), ~30 ms more.
from Crypto.Hash import keccak as _keccak256

_HEX_ADDRESS = re.compile(r"(0x)?[0-9a-fA-F]{40}")
_INT = re.compile(r"(u?)int(\d*)")
_FIXED_BYTES = re.compile(r"bytes(\d+)")


def keccak(data: bytes | str) -> bytes:
    """keccak256 of bytes, or of text as UTF-8 (what eth_utils.keccak(text=...) gives)."""
    return _keccak256.new(digest_bits=256, data=data.encode() if isinstance(data, str) else bytes(data)).digest()


@lru_cache(maxsize=4096)
def checksum_address(value: str | bytes) -> str:
    """The EIP-55 form of an address given as 20 bytes or 40 hex digits (0x optional, any case), as
    eth_utils.to_checksum_address; ValueError for anything else. It does not check a checksum that
    the input carries (names.parse_address does, for what people type)."""
    if isinstance(value, bytes) and len(value) == 20:
        digits = value.hex()
    elif isinstance(value, str) and _HEX_ADDRESS.fullmatch(value):
        digits = value[-40:].lower()
    else:
        raise ValueError(f"not an address: {value!r}")
    hashed = keccak(digits).hex()
    return "0x" + "".join(c.upper() if h in "89abcdef" else c for c, h in zip(digits, hashed))


# ---------------------------------------------------------------------- encoding

def _word(abi_type: str, value) -> bytes | None:
    """One 32-byte word for a value type; None when abi_type is not one."""
    if abi_type == "address":
        raw = bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value) if isinstance(value, str) else bytes(value)
        if len(raw) != 20:
            raise ValueError(f"not an address: {value!r}")
        return bytes(12) + raw
    if abi_type == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"not a bool: {value!r}")
        return int(value).to_bytes(32, "big")
    match = _INT.fullmatch(abi_type)
    if match:
        bits, signed = int(match.group(2) or 256), match.group(1) == ""
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
            raise ValueError(f"{value!r} does not fit {abi_type}")
        return value.to_bytes(32, "big", signed=signed)
    match = _FIXED_BYTES.fullmatch(abi_type)
    if match:
        raw = bytes(value)
        if len(raw) > int(match.group(1)):
            raise ValueError(f"{len(raw)} bytes do not fit {abi_type}")
        return raw.ljust(32, b"\0")
    return None


def _is_word_type(abi_type: str) -> bool:
    return abi_type in ("address", "bool") or bool(_INT.fullmatch(abi_type) or _FIXED_BYTES.fullmatch(abi_type))


def encode(types: list[str], values: list) -> bytes:
    """ABI-encode arguments of value types, string and bytes (what the suite's getters take)."""
    if not all(_is_word_type(t) or t in ("string", "bytes") for t in types):
        from eth_abi import encode as abi_encode  # a shape not handled here: the reference encoder

        return abi_encode(list(types), list(values))
    heads, tails = [], []
    tail_at = 32 * len(types)
    for abi_type, value in zip(types, values):
        word = _word(abi_type, value)
        if word is not None:
            heads.append(word)
            continue
        raw = value.encode() if abi_type == "string" else bytes(value)
        heads.append(tail_at.to_bytes(32, "big"))
        tail = len(raw).to_bytes(32, "big") + raw + bytes(-len(raw) % 32)
        tails.append(tail)
        tail_at += len(tail)
    return b"".join(heads + tails)


# ---------------------------------------------------------------------- decoding

def _word_decoder(abi_type: str):
    """fn(word: 32 bytes) -> value for a value type, checking what eth_abi's strict decoding checks
    (padding, range); None when abi_type is not a value type."""
    if abi_type == "address":
        def address(word):
            if word[:12] != bytes(12):
                raise ValueError("address with non-zero padding")
            return "0x" + word[12:].hex()
        return address
    if abi_type == "bool":
        def boolean(word):
            value = int.from_bytes(word, "big")
            if value > 1:
                raise ValueError(f"bool word {value}")
            return value == 1
        return boolean
    match = _INT.fullmatch(abi_type)
    if match:
        bits, signed = int(match.group(2) or 256), match.group(1) == ""

        def integer(word):
            value = int.from_bytes(word, "big", signed=signed)
            if not (-(1 << (bits - 1)) <= value < (1 << (bits - 1)) if signed else value < (1 << bits)):
                raise ValueError(f"{value} does not fit {abi_type}")
            return value
        return integer
    match = _FIXED_BYTES.fullmatch(abi_type)
    if match:
        size = int(match.group(1))

        def fixed(word):
            if word[size:] != bytes(32 - size):
                raise ValueError(f"{abi_type} with non-zero padding")
            return word[:size]
        return fixed
    return None


def _static_tuple(abi_type: str) -> list[str] | None:
    """The component types of '(t1,t2,...)' when every one is a value type, else None."""
    if not (abi_type.startswith("(") and abi_type.endswith(")")):
        return None
    parts = abi_type[1:-1].split(",")
    return parts if all(_is_word_type(p) for p in parts) else None


@lru_cache(maxsize=256)
def _decoder(types: tuple[str, ...]):
    """fn(data) -> tuple of values for these types, or None when some type is not handled here."""
    readers = []  # (head words, fn(data, head position) -> value)
    for abi_type in types:
        word = _word_decoder(abi_type)
        components = _static_tuple(abi_type)
        if word is not None:
            readers.append((1, lambda data, at, word=word: word(data[at : at + 32])))
        elif components is not None:
            fields = [_word_decoder(c) for c in components]
            readers.append((len(fields), lambda data, at, fields=fields: tuple(
                f(data[at + 32 * i : at + 32 * i + 32]) for i, f in enumerate(fields))))
        elif abi_type in ("string", "bytes"):
            def dynamic(data, at, as_text=abi_type == "string"):
                offset = int.from_bytes(data[at : at + 32], "big")
                length = int.from_bytes(data[offset : offset + 32], "big") if offset + 32 <= len(data) else -1
                if length < 0 or offset + 32 + length > len(data):
                    raise ValueError("truncated string or bytes")
                raw = data[offset + 32 : offset + 32 + length]
                return raw.decode("utf-8") if as_text else raw
            readers.append((1, dynamic))
        elif (fixed := re.fullmatch(r"(\w+)\[(\d+)\]", abi_type)) and _word_decoder(fixed[1]) is not None:
            # T[k] of a value type: k words in the head, like a static tuple
            element, count = _word_decoder(fixed[1]), int(fixed[2])
            readers.append((count, lambda data, at, element=element, count=count: tuple(
                element(data[at + 32 * i : at + 32 * i + 32]) for i in range(count))))
        elif abi_type.startswith("(") and abi_type.endswith(")") and "(" not in abi_type[1:]:
            # A tuple with a dynamic component (a struct holding a string or an array): its head
            # word is an offset to its own head-and-tail encoding, whose offsets count from there.
            inner = _decoder(tuple(abi_type[1:-1].split(",")))
            if inner is None:
                return None

            def dynamic_tuple(data, at, inner=inner):
                offset = int.from_bytes(data[at : at + 32], "big")
                if offset > len(data):
                    raise ValueError("truncated tuple")
                return inner(data[offset:])
            readers.append((1, dynamic_tuple))
        elif abi_type.endswith("[]") and _word_decoder(abi_type[:-2]) is not None:
            def array(data, at, element=_word_decoder(abi_type[:-2])):
                offset = int.from_bytes(data[at : at + 32], "big")
                count = int.from_bytes(data[offset : offset + 32], "big") if offset + 32 <= len(data) else -1
                if count < 0 or offset + 32 * (count + 1) > len(data):
                    raise ValueError("truncated array")
                return tuple(element(data[offset + 32 * (i + 1) : offset + 32 * (i + 2)]) for i in range(count))
            readers.append((1, array))
        else:
            return None
    head_size = 32 * sum(words for words, _ in readers)

    def decode_all(data: bytes) -> tuple:
        if len(data) < head_size:
            raise ValueError(f"{len(data)} bytes, the head alone is {head_size}")
        values, at = [], 0
        for words, read in readers:
            values.append(read(data, at))
            at += 32 * words
        return tuple(values)

    return decode_all


def decode(types: list[str] | tuple[str, ...], data: bytes) -> tuple:
    """ABI-decode `data` as `types`, strictly (ValueError, or eth_abi's DecodingError for types not
    handled here, on anything that does not decode)."""
    decoder = _decoder(tuple(types))
    if decoder is None:
        from eth_abi import decode as abi_decode  # a shape not handled here: the reference decoder

        return abi_decode(list(types), bytes(data))
    return decoder(bytes(data))

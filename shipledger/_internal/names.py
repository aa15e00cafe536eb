"""Names, digests and keys, with the standard library only (the gate's fast path imports this)."""

from __future__ import annotations

import re

from shipledger.errors import UsageError

MAX_NAME_LENGTH = 64  # Keys.MAX_NAME_LENGTH in the contracts
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/@:-]*$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def check_name(kind: str, value: str) -> str:
    """A service, environment or version name: 1..64 bytes of letters, digits and ._+/@:-"""
    if not value or len(value.encode()) > MAX_NAME_LENGTH or not _NAME.match(value):
        raise UsageError(f"{kind} {value!r} must be 1 to 64 characters of letters, digits and ._+/@:-")
    return value


def parse_digest(value: str) -> bytes:
    """'sha256:<64 lowercase hex>' -> 32 bytes."""
    match = _DIGEST.match(value.strip().lower()) if value else None
    if not match:
        raise UsageError(f"malformed digest {value!r}: expected sha256:<64 hex digits>")
    return bytes.fromhex(match.group(1))


def format_digest(raw: bytes) -> str:
    return "sha256:" + bytes(raw).hex()


def address_from_int(value: int) -> str:
    """The checksummed-free lower-case address held in a uint256 (the gate's RejectedBy detail)."""
    return "0x" + f"{value:040x}"[-40:]

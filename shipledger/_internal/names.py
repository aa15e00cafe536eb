"""Values as people type them: names, digests and durations, parsed in this one place for the CLI, the
SDK and the config files; the standard library only (the gate's fast path imports this)."""

from __future__ import annotations

import math
import re

from shipledger.errors import UsageError

MAX_NAME_LENGTH = 64  # Keys.MAX_NAME_LENGTH in the contracts
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/@:-]*$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


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


def parse_address(value: str, what: str = "address") -> str:
    """An Ethereum address as typed -> its EIP-55 checksummed form. All lower-case or all upper-case
    hex carries no checksum and is taken as it is; mixed case is a checksum and must be the right one
    (a wrong one is a typo, and a typo in an address grants a role to nobody)."""
    text = value.strip() if isinstance(value, str) else ""
    if not _ADDRESS.match(text):
        raise UsageError(f"{what} {value!r} is not an Ethereum address (0x and 40 hex digits)")
    from shipledger._internal.abi import checksum_address  # here, not at the top: the gate's path imports this module

    checksummed = checksum_address(text)
    digits = text[2:]
    if digits != digits.lower() and digits != digits.upper() and text != checksummed:
        # The right checksum is not shown: for a mistyped digit it is the checksum of the typo.
        raise UsageError(f"{what} {value!r} has a wrong EIP-55 checksum: check it for a typo against its source")
    return checksummed


def parse_duration(value, what: str = "duration", *, positive: bool = False) -> float:
    """'500ms', '90', '90s', '15m', '24h', '7d', '1w', or a number (from YAML/JSON) -> seconds.

    positive: more than zero (a wait or a step); otherwise zero is allowed (a ttl of 0 is "forever")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{what} {value!r} is not a duration like 500ms, 90s, 15m, 24h or 7d")
    if isinstance(value, str):
        match = _DURATION.match(value.strip().lower())
        if not match:
            raise UsageError(f"{what} {value!r} is not a duration like 500ms, 90s, 15m, 24h or 7d")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0 or (positive and seconds == 0):
        raise UsageError(f"{what} {value!r} must be {'more than zero' if positive else 'zero or more'}")
    return seconds


_IMAGE = re.compile(r"^(?P<repository>[a-z0-9][a-z0-9._/:-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[^@]+))?$")


def parse_image(value: str) -> tuple[str, str]:
    """'REGISTRY/REPO[:TAG]@sha256:<64 hex>' -> (the repository as Docker names it, 'sha256:<hex>').

    Only the digest says what runs: a tag can move, so an image named by a tag alone is refused. A
    tag beside a digest is allowed (Kubernetes pulls by the digest) and dropped. The repository is
    normalised as Docker does ('nginx' is 'docker.io/library/nginx'), so a map and a pod spec that
    spell it differently still agree."""
    text = value.strip() if isinstance(value, str) else ""
    match = _IMAGE.match(text)
    if not match or not match.group("repository").strip("/"):
        raise UsageError(f"image {value!r} is not an image reference like registry.example/team/app@sha256:<64 hex>")
    if match.group("digest") is None:
        raise UsageError(f"image {value!r} names no digest (a tag, or latest by default), and a tag can move. Name it by its manifest digest,"
                         " REPO@sha256:<64 hex> (skopeo inspect --format '{{.Digest}}' docker://IMAGE prints it)")
    digest = format_digest(parse_digest(match.group("digest")))
    return normalise_repository(match.group("repository")), digest


def normalise_repository(repository: str) -> str:
    """Docker's reading of a repository name: no registry host means docker.io, and a single name on
    docker.io is under library/."""
    first, _, rest = repository.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        repository = "docker.io/" + repository
    host, _, path = repository.partition("/")
    if host == "docker.io" and "/" not in path:
        repository = f"docker.io/library/{path}"
    return repository

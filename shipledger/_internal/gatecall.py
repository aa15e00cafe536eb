"""The gate as one eth_call, encoded and decoded with the standard library.

`shipledger gate` runs in release pipelines before every deployment, so its path imports neither
web3 nor eth-abi (importing web3 alone costs more than half a second). The SDK's Ledger.gate uses
this module too, so there is one encoding of the call.
"""

from __future__ import annotations

from enum import IntEnum

from shipledger.errors import ConnectionFailed, gate_details

GATE_SELECTOR = bytes.fromhex("e2052805")  # keccak256("gate(bytes32,string,string)")[:4]


class GateReason(IntEnum):
    """Mirror of the contracts' GateReason; the numbers are part of the on-chain interface."""

    ALLOWED = 0
    UNKNOWN_ARTIFACT = 1
    ARTIFACT_REVOKED = 2
    NO_POLICY = 3
    REJECTED_BY = 4
    WAITING_PERIOD = 5
    NOT_ENOUGH_APPROVALS = 6
    APPROVALS_EXPIRED = 7
    NOT_ENOUGH_ORGANISATIONS = 8
    MISSING_PRIOR_ENVIRONMENT = 9
    FROZEN_BY_INCIDENT = 10


def _encode_string(value: str) -> bytes:
    raw = value.encode()
    padded = raw + b"\0" * (-len(raw) % 32)
    return len(raw).to_bytes(32, "big") + padded


def encode_gate_call(digest: bytes, service: str, environment: str) -> bytes:
    """ABI-encode gate(bytes32 digest, string service, string environment)."""
    service_part = _encode_string(service)
    head = digest + (3 * 32).to_bytes(32, "big") + (3 * 32 + len(service_part)).to_bytes(32, "big")
    return GATE_SELECTOR + head + service_part + _encode_string(environment)


def decode_gate_answer(data: bytes) -> tuple[bool, str, dict]:
    """Decode (uint8 reason, uint256 detailA, uint256 detailB) into (allowed, reason name, details);
    anything else is an error. Plain values: the CLI's gate prints them without loading models."""
    if len(data) != 96:
        raise ConnectionFailed(f"the gate answered {len(data)} bytes, expected 96: wrong contract address?")
    code, detail_a, detail_b = (int.from_bytes(data[i : i + 32], "big") for i in (0, 32, 64))
    try:
        reason = GateReason(code).name.lower()
    except ValueError:
        raise ConnectionFailed(f"the gate answered an unknown reason code {code}") from None
    return code == 0, reason, gate_details(reason, detail_a, detail_b)


def decode_gate_result(data: bytes):
    """decode_gate_answer as the SDK's GateResult."""
    from shipledger.models import GateResult

    allowed, reason, details = decode_gate_answer(data)
    return GateResult(allowed=allowed, reason=reason, details=details)

"""The gate as one eth_call, encoded and decoded with the standard library.

`shipledger gate` runs in release pipelines before every deployment, so its path imports neither
web3 nor eth-abi (importing web3 alone costs more than half a second). The SDK's Ledger.gate uses
this module too, so there is one encoding of the call.
"""

from __future__ import annotations

from shipledger.errors import ConnectionFailed, gate_details
from shipledger.models import GateReason, GateResult

GATE_SELECTOR = bytes.fromhex("e2052805")  # keccak256("gate(bytes32,string,string)")[:4]


def _encode_string(value: str) -> bytes:
    raw = value.encode()
    padded = raw + b"\0" * (-len(raw) % 32)
    return len(raw).to_bytes(32, "big") + padded


def encode_gate_call(digest: bytes, service: str, environment: str) -> bytes:
    """ABI-encode gate(bytes32 digest, string service, string environment)."""
    service_part = _encode_string(service)
    head = digest + (3 * 32).to_bytes(32, "big") + (3 * 32 + len(service_part)).to_bytes(32, "big")
    return GATE_SELECTOR + head + service_part + _encode_string(environment)


def decode_gate_result(data: bytes) -> GateResult:
    """Decode (uint8 reason, uint256 detailA, uint256 detailB); anything else is an error."""
    if len(data) != 96:
        raise ConnectionFailed(f"the gate answered {len(data)} bytes, expected 96: wrong contract address?")
    code, detail_a, detail_b = (int.from_bytes(data[i : i + 32], "big") for i in (0, 32, 64))
    try:
        reason = GateReason(code).name.lower()
    except ValueError:
        raise ConnectionFailed(f"the gate answered an unknown reason code {code}") from None
    return GateResult(allowed=code == 0, reason=reason, details=gate_details(reason, detail_a, detail_b))

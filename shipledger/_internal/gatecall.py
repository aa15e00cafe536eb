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


# keccak256 of PolicySet(bytes32,bytes32,string,string,Policy,Policy,string) with Policy as its 7-field tuple
POLICY_SET_TOPIC = "0x8e66880ff58196ae45446b812800da6a45f1b1fa6835f659f6c33cf317d298da"
_PRIOR_OFFSET_AT = 16 * 32  # data head: service, environment (offsets), two 7-word policies, priorEnvironment


def prior_environment_name(get_logs, registry: str, from_block: int, service: str, environment: str, key: str) -> str:
    """The name of a required prior environment, whose keccak `key` ('0x' + 64 hex) is all a policy
    and a gate answer hold: the registry emits the name in clear in PolicySet, so the newest such
    event of (service, environment) whose name hashes to `key` gives it. `key` itself when none does.

    get_logs(filter) -> logs, each with "data" (hex text or bytes): the JSON-RPC eth_getLogs of the
    caller's connection. Only a denial or `policy show` pays for this read."""
    from shipledger._internal.abi import keccak  # not at the top: an allowed gate never needs it

    def topic(name: str) -> str:
        return "0x" + keccak(name.encode()).hex()

    logs = get_logs({"address": registry, "fromBlock": hex(from_block), "toBlock": "latest",
                     "topics": [POLICY_SET_TOPIC, topic(service), topic(environment)]})
    for log in reversed(logs):
        data = log["data"]
        raw = bytes.fromhex(data[2:]) if isinstance(data, str) else bytes(data)
        offset = int.from_bytes(raw[_PRIOR_OFFSET_AT : _PRIOR_OFFSET_AT + 32], "big")
        length = int.from_bytes(raw[offset : offset + 32], "big")
        name = raw[offset + 32 : offset + 32 + length].decode("utf-8", "replace")
        if name and topic(name) == key.lower():
            return name
    return key

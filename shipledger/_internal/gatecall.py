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
    ROLLOUT_IN_PROGRESS = 11
    MISSING_ATTESTATION = 12


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


# keccak256 of PolicySet(bytes32,bytes32,string,string,Policy,Policy,string,string[]) with Policy as
# its 9-field tuple (uint8,uint8,uint32,uint32,uint8,uint8,uint32,bytes32,bytes32[])
POLICY_SET_TOPIC = "0x105699cbccfaaecef7d2235fcca8a436e32a7aab76ff98a04dc637f27f08fc99"
# The data head: offsets of service, environment, oldPolicy, newPolicy (both dynamic: they hold an
# array), priorEnvironment, requiredAttestations. Offsets count from the start of the data.
_PRIOR_AT, _REQUIRED_AT = 4 * 32, 5 * 32


def _word(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at : at + 32], "big")


def _string_at(raw: bytes, at: int) -> str:
    length = _word(raw, at)
    return raw[at + 32 : at + 32 + length].decode("utf-8", "replace")


def policy_set_names(data: bytes) -> tuple[str, list[str]]:
    """(priorEnvironment, requiredAttestations) in clear, from a PolicySet log's data."""
    prior = _string_at(data, _word(data, _PRIOR_AT))
    array = _word(data, _REQUIRED_AT)
    count = _word(data, array)
    items = array + 32  # string offsets inside an array count from the word after its length
    return prior, [_string_at(data, items + _word(data, items + 32 * i)) for i in range(count)]


def policy_name_of_key(get_logs, registry: str, from_block: int, service: str, environment: str, key: str,
                       which: str = "prior") -> str:
    """The name whose keccak `key` ('0x' + 64 hex) a policy or a gate answer holds: the required prior
    environment (which="prior") or a required attestation type (which="attestation"). The registry
    emits the names in clear in PolicySet, so the newest such event of (service, environment) that
    names one hashing to `key` gives it. `key` itself when none does.

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
        prior, required = policy_set_names(raw)
        for name in ([prior] if which == "prior" else required):
            if name and topic(name) == key.lower():
                return name
    return key


def prior_environment_name(get_logs, registry: str, from_block: int, service: str, environment: str, key: str) -> str:
    """policy_name_of_key for the required prior environment."""
    return policy_name_of_key(get_logs, registry, from_block, service, environment, key, "prior")

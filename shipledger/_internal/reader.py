"""Read-only calls to the suite's getters in JSON-RPC batches, without web3.

`status` and `member list` read a synced index plus a few O(1) getters; importing web3 costs ~0.8 s
of CPU, more than everything else they do, and eth_abi with eth_utils about half a second. So these
calls are encoded and decoded by _internal/abi.py from the committed ABIs, several to a request.
The SDK's Ledger keeps web3; both build their results with the same models constructors.
"""

from __future__ import annotations

from functools import cache

from shipledger._internal import artifacts
from shipledger._internal.abi import decode as abi_decode, encode as abi_encode, keccak
from shipledger._internal.revert import canonical_type, decode_revert
from shipledger._internal.rpc import Rpc, error_text
from shipledger.errors import AddressBookError, ConnectionFailed, revert_error

ROLES = ("REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER", "ATTESTOR")  # as shipledger.client.ROLES
# The ids of the roles held everywhere (scope ""); nobody holds DEFAULT_ADMIN_ROLE in suite v2.
ROLE_IDS = {role: keccak(f"{role}_ROLE") for role in ROLES}


@cache
def _function(contract: str, name: str) -> tuple[bytes, list[str], list[str]]:
    """(selector, input types, output types) of a function of a suite contract."""
    for item in artifacts.abi(contract):
        if item["type"] == "function" and item["name"] == name:
            inputs = [canonical_type(i) for i in item["inputs"]]
            return keccak(f"{name}({','.join(inputs)})")[:4], inputs, [canonical_type(o) for o in item["outputs"]]
    raise KeyError(f"{contract} has no function {name}")


class Reader:
    """Getters of one suite (an index Endpoint: URL, addresses, timeout), at the latest block."""

    def __init__(self, endpoint):
        self.rpc = Rpc(endpoint.url, timeout=endpoint.timeout)
        self.addresses = {"ReleaseRegistry": endpoint.registry, "DeploymentLedger": endpoint.ledger}
        if getattr(endpoint, "governance", None):
            self.addresses["Governance"] = endpoint.governance

    def raw(self, calls: list[tuple[str, bytes]], none_on: tuple[str, ...] = ()) -> list[bytes | None]:
        """eth_call of [(contract, calldata)] in one request: the returned bytes, or None for a revert
        with a suite error named in none_on (e.g. PolicyNotFound); other reverts raise typed errors."""
        replies = self.rpc.replies([("eth_call", [{"to": self.addresses[c], "data": "0x" + data.hex()}, "latest"])
                                    for c, data in calls])
        results = []
        for (contract, _), reply in zip(calls, replies):
            if "error" not in reply:
                results.append(bytes.fromhex((reply.get("result") or "0x")[2:]))
                continue
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            decoded = decode_revert(error.get("data") if isinstance(error.get("data"), str) else None)
            if decoded and decoded[0] in none_on:
                results.append(None)
            elif decoded:
                raise revert_error(*decoded)
            elif "revert" in error_text(reply).lower():
                # Our getters never revert without one of our errors: the address is not that contract.
                raise AddressBookError(f"a read from {self.addresses[contract]} ({contract}) reverted without a known "
                                       "error: does the address book point at the right contract?")
            else:
                raise ConnectionFailed(f"eth_call failed: {error_text(reply)}")
        return results

    def calls(self, calls: list[tuple[str, str, list]], none_on: tuple[str, ...] = ()) -> list:
        """[(contract, function, args)] in one request: each result decoded (a value, or a tuple when
        the function returns several), None as in raw()."""
        encoded = []
        for contract, name, args in calls:
            selector, inputs, _ = _function(contract, name)
            encoded.append((contract, selector + abi_encode(inputs, args)))
        results = []
        for (contract, name, _), data in zip(calls, self.raw(encoded, none_on)):
            if data is None:
                results.append(None)
                continue
            outputs = _function(contract, name)[2]
            try:
                values = abi_decode(outputs, data)
            except Exception:  # noqa: BLE001 - e.g. no code there any more: an empty answer
                raise AddressBookError(f"{contract}.{name} at {self.addresses[contract]} answered {len(data)} bytes "
                                       "that do not decode: does the address book point at the right contract?") from None
            results.append(values[0] if len(values) == 1 else values)
        return results

"""What a target (service, environment) runs by the ledger's word: its live deployment, its rollout in
progress, and the deployment a rollback would restore, each as (deployment id, artifact id).

Read with plain eth_calls (the standard library and keccak only), so the admission webhook's hot path
loads no web3. `rpc(calls)` sends a JSON-RPC batch and returns the results in order.
"""

from __future__ import annotations

from shipledger._internal.abi import encode, keccak

TARGET_STATE = keccak("targetState(string,string)")[:4]
GET_DEPLOYMENT = keccak("getDeployment(uint256)")[:4]
ROLES = ("live", "active", "rollback")  # in the order a finding or a warning names them


def artifact_id(service: str, digest: bytes) -> str:
    """Keys.artifactId: keccak256(abi.encode(keccak256(service), digest)), as 0x-hex."""
    return "0x" + keccak(keccak(service) + bytes(digest)).hex()


def _words(raw: str, count: int) -> list[bytes]:
    data = bytes.fromhex(raw.removeprefix("0x")) if isinstance(raw, str) else b""
    if len(data) < 32 * count:
        from shipledger.errors import ConnectionFailed

        raise ConnectionFailed(f"the ledger answered {len(data)} bytes where {32 * count} were expected: wrong contract address?")
    return [data[i * 32 : (i + 1) * 32] for i in range(count)]


def _deployments(rpc, ledger: str, block: str, ids: list[int]) -> dict[int, tuple[str, int]]:
    """id -> (artifact id, previous deployment id), for the non-zero ids."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    answers = rpc([("eth_call", [{"to": ledger, "data": "0x" + (GET_DEPLOYMENT + i.to_bytes(32, "big")).hex()}, block])
                   for i in wanted])
    found = {}
    for deployment_id, raw in zip(wanted, answers):
        words = _words(raw, 7)  # artifactId, target, previous, startedAt, percent, status, canary
        found[deployment_id] = ("0x" + words[0].hex(), int.from_bytes(words[2], "big"))
    return found


def target_releases(rpc, ledger: str, service: str, environment: str, block: str = "latest") -> dict[str, tuple[int, str]]:
    """{"live": (id, artifact id), "active": ..., "rollback": ...}, each present when there is one.

    The rollback target is what `rollback` restores: the live deployment while a rollout is in
    progress (already "live"), otherwise the deployment the live one replaced."""
    [raw] = rpc([("eth_call", [{"to": ledger, "data": "0x" + (TARGET_STATE + encode(["string", "string"], [service, environment])).hex()},
                               block])])
    live, active = (int.from_bytes(w, "big") for w in _words(raw, 2))
    known = _deployments(rpc, ledger, block, [live, active])
    found = {role: (i, known[i][0]) for role, i in (("live", live), ("active", active)) if i}
    previous = known[live][1] if live and not active else 0
    if previous:
        found["rollback"] = (previous, _deployments(rpc, ledger, block, [previous])[previous][0])
    return found

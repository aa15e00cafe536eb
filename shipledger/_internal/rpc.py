"""One JSON-RPC client with batches, for the code that reads the chain in bulk: the index sync, the
audit and verify-export. web3 sends one HTTP request per call; these send thousands of calls, so they
go many to a request over one kept-alive session.

The gate path in cli.py and devnet.rpc_call keep their own stdlib-only calls on purpose (start-up
time), and this module imports requests only when a client is made, for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable

from shipledger.errors import ConnectionFailed

TIMEOUT = 60  # seconds per HTTP request


class Rpc:
    """JSON-RPC over one kept-alive HTTP session, with batches.

    `replies` hands back each call's reply as the node gave it, so a caller can act on an error (the
    index shrinks a block range the node refuses); `batch`, `fetch` and `call` raise ConnectionFailed
    on any error reply instead."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        import requests

        self.url = url
        self.timeout = timeout
        self.session = requests.Session()

    def replies(self, calls: list[tuple[str, list]], timeout: float | None = None) -> list[dict]:
        """Replies in call order, each {'result': ...} or {'error': {...}}. Nodes say "too much"
        either by timing out or by a gateway's HTTP error page instead of JSON, so both become error
        replies (for every call of the batch); only a node that cannot be reached raises."""
        import requests

        if not calls:
            return []
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        try:
            response = self.session.post(self.url, json=body, timeout=self.timeout if timeout is None else timeout)
        except requests.exceptions.Timeout:
            return [_error("request timed out")] * len(calls)
        except requests.exceptions.RequestException as exc:
            raise ConnectionFailed(f"cannot reach the JSON-RPC node at {self.url}: {exc.__class__.__name__}") from None
        try:
            replies = response.json()
        except ValueError:
            return [_error(f"HTTP {response.status_code}: {response.text[:200]}")] * len(calls)
        if isinstance(replies, dict) and "error" in replies:  # a node that refuses the whole batch at once
            return [replies] * len(calls)
        if not isinstance(replies, list):
            return [{"error": {"message": "bad batch reply"}}] * len(calls)
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        return [by_id.get(i, {"error": {"message": "no answer"}}) for i in range(len(calls))]

    def batch(self, calls: list[tuple[str, list]]) -> list:
        """Results in call order (None where the node has nothing, e.g. an unknown transaction)."""
        results = []
        for (method, _), reply in zip(calls, self.replies(calls)):
            if "error" in reply:
                raise ConnectionFailed(f"{method} failed: {error_text(reply)}")
            results.append(reply.get("result"))
        return results

    def fetch(self, method: str, params_list: list[list], batch_size: int,
              progress: Callable[[int], None] | None = None) -> list:
        """batch() of one method over many parameter lists, batch_size calls per HTTP request (hosted
        nodes cap batch sizes); progress(n) after each request, n the calls it held."""
        results = []
        for start in range(0, len(params_list), batch_size):
            chunk = params_list[start : start + batch_size]
            results.extend(self.batch([(method, params) for params in chunk]))
            if progress:
                progress(len(chunk))
        return results

    def call(self, method: str, params: list):
        [result] = self.batch([(method, params)])
        return result


def error_text(reply: dict) -> str:
    """The message of an error reply, for people."""
    error = reply.get("error") or {}
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def _error(message: str) -> dict:
    return {"error": {"code": -32000, "message": message}}

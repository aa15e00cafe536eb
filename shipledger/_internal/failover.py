"""A web3 provider over several nodes of one chain: a node that goes away is left for the next one.

Reads go to the first node of `reads` that answers (Ledger.connect puts only nodes in sync there);
eth_sendRawTransaction and the nonce count go to the first of `writes` (the signer's organisation's
node first), so the pending count is read where our transactions wait. A node that cannot be reached,
or times out, is moved behind the others and the same request goes to the next one.

Nothing is sent twice: a signed transaction has one hash whichever node takes it, so a send retried on
another node is at most "already known" there. When the writes move to another node, the transactions
sent to the one that went away and not yet seen mined are handed to the new one first: the old node may
never have passed them on, and a later nonce would wait behind the gap.
"""

from __future__ import annotations

import threading

import requests
from eth_utils import keccak
from web3.providers import HTTPProvider, JSONBaseProvider

_WRITES = {"eth_sendRawTransaction", "eth_getTransactionCount"}
_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)


class FailoverProvider(JSONBaseProvider):
    def __init__(self, urls: list[str], timeout: float):
        super().__init__()
        self._nodes = {u: HTTPProvider(u, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
                       for u in urls}
        self.reads = list(urls)
        self.writes = list(urls)
        self._unmined: dict[str, str] = {}  # tx hash -> raw transaction, sent but not yet seen mined
        self._lock = threading.Lock()

    @property
    def endpoint_uri(self) -> str:
        """The node reads go to now (for code that opens its own JSON-RPC connection)."""
        return self.reads[0]

    def is_connected(self, show_traceback: bool = False) -> bool:
        return any(node.is_connected() for node in self._nodes.values())

    def make_request(self, method, params):
        order = self.writes if method in _WRITES else self.reads
        failures = []
        for url in list(order):
            try:
                if method == "eth_sendRawTransaction" and self._last_write not in (None, url):
                    self._hand_over(url)
                reply = self._nodes[url].make_request(method, params)
            except _UNREACHABLE as exc:
                failures.append(f"{url}: {exc.__class__.__name__}")
                with self._lock:  # behind the others, for this command's later requests too
                    if url in order:
                        order.remove(url)
                        order.append(url)
                continue
            self._note(method, params, reply, url)
            return reply
        raise requests.exceptions.ConnectionError(f"no JSON-RPC node answered {method}: {'; '.join(failures)}")

    _last_write: str | None = None  # the node the last transaction went to

    def _note(self, method, params, reply, url: str) -> None:
        if method == "eth_sendRawTransaction":
            raw = _hex(params[0])
            self._unmined["0x" + keccak(hexstr=raw).hex()] = raw
            self._last_write = url
        elif method == "eth_getTransactionReceipt" and reply.get("result"):
            self._unmined.pop(_hex(params[0]).lower(), None)

    def _hand_over(self, url: str) -> None:
        """Send what the previous write node holds unmined to `url` first, in the order it was sent.
        Its refusals ("already known", "nonce too low": it has or mined them) are expected."""
        for raw in list(self._unmined.values()):
            self._nodes[url].make_request("eth_sendRawTransaction", [raw])  # an error reply is not raised
        self._last_write = url


def _hex(value) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()

"""A loopback JSON-RPC proxy in front of a real node that enforces the limits of a consortium node,
with Besu's error messages, for tests of the code that reads logs and sends batches.

- `max_range`: eth_getLogs over more blocks than this is refused per call, as Besu's
  --rpc-max-logs-range (default 5,000): -32005 "Requested range exceeds maximum RPC range limit".
- `max_batch`: a batch of more calls is refused as a whole, as Besu's --rpc-http-max-batch-size
  (default 1,024): one error object -32005 "Number of requests exceeds max batch size".
- `lag`: the node answering eth_getLogs and eth_getBlockByNumber is `lag` blocks behind the one that
  answered eth_blockNumber (nodes at different heights behind one URL). A log query reaching past
  its head gets `lag_message`; a block past its head is null.
- `block_timestamps=False`: logs without "blockTimestamp", as nodes older than that field send them.

Everything else is passed to the node unchanged. `calls` counts what was asked, by method.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE_REFUSAL = "Requested range exceeds maximum RPC range limit"
BATCH_REFUSAL = "Number of requests exceeds max batch size"


class NodeLimits:
    def __init__(self, upstream: str, *, max_range: int = 5_000, max_batch: int = 1_024, lag: int = 0,
                 lag_message: str = "toBlock greater than latest block", block_timestamps: bool = True):
        self.upstream = upstream
        self.max_range, self.max_batch, self.lag, self.lag_message = max_range, max_batch, lag, lag_message
        self.block_timestamps = block_timestamps
        self.calls: Counter = Counter()
        self.refused: Counter = Counter()  # "range" / "batch" / "lag": how often each limit was hit
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = json.dumps(proxy._answer(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "NodeLimits":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the node's side

    def _upstream(self, body):
        request = urllib.request.Request(self.upstream, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def _count(self, key: str, counter: Counter | None = None) -> None:
        with self._lock:
            (counter if counter is not None else self.calls)[key] += 1

    def _answer(self, body):
        if isinstance(body, list) and len(body) > self.max_batch:
            self._count("batch", self.refused)
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": BATCH_REFUSAL}}
        calls = body if isinstance(body, list) else [body]
        for call in calls:
            self._count(call.get("method", "?"))
        head = int(self._upstream({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []})["result"], 16)
        replies = [self._one(call, head) for call in calls]
        return replies if isinstance(body, list) else replies[0]

    def _one(self, call: dict, head: int) -> dict:
        method, params, ident = call.get("method"), call.get("params") or [], call.get("id")
        lagging_head = head - self.lag

        def error(message: str, code: int = -32005) -> dict:
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}

        if method == "eth_getLogs":
            query = params[0] if params else {}
            low, high = (_block(query.get(k, default), lagging_head) for k, default in (("fromBlock", "earliest"), ("toBlock", "latest")))
            if high > lagging_head:
                self._count("lag", self.refused)
                return error(self.lag_message, -32602)
            if high - low + 1 > self.max_range:
                self._count("range", self.refused)
                return error(RANGE_REFUSAL)
            reply = self._upstream({**call, "params": [{**query, "fromBlock": hex(low), "toBlock": hex(high)}]})
            if not self.block_timestamps and isinstance(reply.get("result"), list):
                for log in reply["result"]:
                    log.pop("blockTimestamp", None)
            return reply
        if method == "eth_getBlockByNumber" and params and _block(params[0], lagging_head) > lagging_head:
            return {"jsonrpc": "2.0", "id": ident, "result": None}
        return self._upstream(call)


def _block(tag, head: int) -> int:
    if tag in ("latest", "pending", "safe", "finalized", None):
        return head
    if tag == "earliest":
        return 0
    return int(tag, 16) if isinstance(tag, str) else int(tag)

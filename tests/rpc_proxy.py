"""A JSON-RPC relay in front of a real node (anvil), for what anvil itself cannot show: the longer
extraData of a PoA chain's headers (Clique: 32 bytes of vanity, the signers, a 65-byte seal), the
`revertReason` receipt field GoQuorum and Besu add, a node that goes away in the middle of a command.

It forwards every request to the node unchanged and hands back its reply, changed only by `edit`:
edit(method, params, result) -> result, per call. `stop()` closes the port (a node gone away).
Faults a node shows and anvil does not: `refuse(method, params)` -> an error message to answer a call
with instead of forwarding it (a node's refusal), or None; `lose_sends` answers a transaction's hash
and forwards nothing (a pool that lost it), and with `go_away_after_send` then stops (a node that went
away before passing it on); `lose_answers` forwards a transaction and drops the connection instead of
answering (the node took it, the answer never came).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eth_utils import keccak

from shipledger.network.devnet import free_port


class RpcProxy:
    def __init__(self, upstream: str, edit=None, refuse=None, before=None):
        self.upstream = upstream
        self.edit = edit or (lambda method, params, result: result)
        self.refuse = refuse or (lambda method, params: None)
        self.before = before or (lambda call: call)  # before(call) -> the call to forward (a node's other reading)
        self.lose_sends = self.go_away_after_send = self.lose_answers = False
        self.calls: list[str] = []  # methods forwarded, in order
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                calls = request if isinstance(request, list) else [request]
                replies = [proxy._answer(call) for call in calls]
                if proxy.lose_answers and any(c["method"] == "eth_sendRawTransaction" for c in calls):
                    self.close_connection = True  # forwarded, and no answer
                    return
                out = json.dumps(replies if isinstance(request, list) else replies[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, call: dict) -> dict:
        call = self.before(call)
        method, params = call["method"], call.get("params", [])
        self.calls.append(method)
        refusal = self.refuse(method, params)
        if refusal:
            return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": refusal}}
        if method == "eth_sendRawTransaction" and self.lose_sends:
            if self.go_away_after_send:
                threading.Thread(target=self.stop, daemon=True).start()
            return {"jsonrpc": "2.0", "id": call["id"], "result": "0x" + keccak(hexstr=params[0]).hex()}
        body = json.dumps(call).encode()
        with urllib.request.urlopen(urllib.request.Request(self.upstream, body, {"Content-Type": "application/json"}),
                                    timeout=30) as answer:
            reply = json.loads(answer.read())
        if "result" in reply:
            reply["result"] = self.edit(method, params, reply["result"])
        return reply

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


POA_EXTRA_DATA = "0x" + "00" * 32 + "f39fd6e51aad88f6f4ce6ab8827279cfffb92266" + "ab" * 65  # Clique: vanity, 1 signer, seal


def poa_headers(method: str, params: list, result):
    """Blocks as a PoA chain gives them: extraData longer than the 32 bytes web3 checks for."""
    if method.startswith("eth_getBlockBy") and isinstance(result, dict):
        result["extraData"] = POA_EXTRA_DATA
    return result

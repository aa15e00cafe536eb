"""A JSON-RPC relay in front of a real node (anvil), for what anvil itself cannot show: the longer
extraData of a PoA chain's headers (Clique: 32 bytes of vanity, the signers, a 65-byte seal), the
`revertReason` receipt field GoQuorum and Besu add, a node that goes away in the middle of a command.

It forwards every request to the node unchanged and hands back its reply, changed only by `edit`:
edit(method, params, result) -> result, per call. `stop()` closes the port (a node gone away).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shipledger.network.devnet import free_port


class RpcProxy:
    def __init__(self, upstream: str, edit=None):
        self.upstream = upstream
        self.edit = edit or (lambda method, params, result: result)
        self.calls: list[str] = []  # methods forwarded, in order
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                with urllib.request.urlopen(urllib.request.Request(
                        proxy.upstream, body, {"Content-Type": "application/json"}), timeout=30) as answer:
                    reply = json.loads(answer.read())
                pairs = zip(request, reply) if isinstance(request, list) else [(request, reply)]
                for call, result in pairs:
                    proxy.calls.append(call["method"])
                    if "result" in result:
                        result["result"] = proxy.edit(call["method"], call.get("params", []), result["result"])
                out = json.dumps(reply).encode()
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

"""One JSON-RPC client with batches, for the code that reads the chain in bulk: the index sync, the
audit and verify-export. web3 sends one HTTP request per call; these send thousands of calls, so they
go many to a request over one kept-alive connection.

`quick_batch` is the other way in: one batch over a plain socket, for the paths whose start-up time
counts (the gate, the devnet's readiness check). urllib and http.client cost ~45 ms of imports
(they pull in the email package); a socket costs ~8.

`Rpc` speaks HTTP/1.1 with http.client rather than requests: `status` and `member list` open one,
and requests (with urllib3, charset_normalizer, idna and ssl) cost them ~0.1 s of CPU on an idle
machine and several times that under load, against ~45 ms for http.client. What that gives up:
requests' HTTP(S)_PROXY settings (these commands talk to the node directly, as the gate always
has) and its certifi CA bundle (the system's is used; SSL_CERT_FILE, or REQUESTS_CA_BUNDLE as for
web3, names another).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

from shipledger.errors import ConnectionFailed

TIMEOUT = 60  # seconds per HTTP request
LOG_RANGE = 5_000  # blocks per eth_getLogs for the SDK's reads: Besu refuses wider ranges by default
# A node refusing a whole batch for its size: Besu "Number of requests exceeds max batch size" (1,024
# by default), geth "batch too large", Nethermind "Batch size limit exceeded", gateways "batch limit".
BATCH_REFUSAL = re.compile(r"batch (size|limit|too large)|exceeds max batch|too many requests in (the )?batch", re.IGNORECASE)


def log_ranges(first: int, last: int, size: int | None = None) -> list[tuple[int, int]]:
    """[first, last] as consecutive block ranges of at most `size` blocks (default LOG_RANGE, read
    when called); none when first > last."""
    size = size or LOG_RANGE
    return [(low, min(low + size - 1, last)) for low in range(first, last + 1, size)]


class Rpc:
    """JSON-RPC over one kept-alive HTTP connection per thread, with batches.

    `replies` hands back each call's reply as the node gave it, so a caller can act on an error (the
    index shrinks a block range the node refuses); `batch`, `fetch` and `call` raise ConnectionFailed
    on any error reply instead. A batch the node refuses for its size is split in halves and sent
    again, and later batches are sent in pieces no bigger than the last size that was accepted, so
    callers never see a node's batch limit."""

    def __init__(self, url: str, timeout: float | None = TIMEOUT):
        self.url = url
        import threading  # here: the gate imports this module for quick_batch, and counts milliseconds

        self.timeout = timeout or TIMEOUT  # seconds per request; None: the default
        self._local = threading.local()  # an http.client connection serves one thread (the index fetches in a worker)
        self.max_batch: int | None = None  # calls per request, once the node refused a bigger batch

    def replies(self, calls: list[tuple[str, list]], timeout: float | None = None) -> list[dict]:
        """Replies in call order, each {'result': ...} or {'error': {...}}. Nodes say "too much"
        either by timing out or by a gateway's HTTP error page instead of JSON, so both become error
        replies (for every call of the batch); only a node that cannot be reached raises."""
        if not calls:
            return []
        if self.max_batch and len(calls) > self.max_batch:
            size = self.max_batch  # a piece may lower max_batch again: the pieces keep this size
            return [reply for start in range(0, len(calls), size) for reply in self.replies(calls[start : start + size], timeout)]
        body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
        timeout = self.timeout if timeout is None else timeout
        try:
            status, payload = self._post(body.encode(), timeout)
        except TimeoutError:
            return [_error(f"request timed out: no answer from {self.url} in {timeout:g} s")] * len(calls)
        except (OSError, ValueError) as exc:  # refused, reset, unknown host, bad URL, a broken HTTP reply
            raise ConnectionFailed(f"cannot reach the JSON-RPC node at {self.url}: {exc.__class__.__name__}") from None
        try:
            replies = json.loads(payload)
        except ValueError:
            return [_error(f"HTTP {status}: {payload[:200].decode('utf-8', 'replace')}")] * len(calls)
        whole = replies if isinstance(replies, dict) and "error" in replies else None  # the batch refused at once
        if not isinstance(replies, list) and whole is None:
            return [{"error": {"message": "bad batch reply"}}] * len(calls)
        by_id = {} if whole else {r.get("id"): r for r in replies if isinstance(r, dict)}
        if len(calls) > 1 and not any(i in by_id for i in range(len(calls))):
            # Too many calls for this node (Besu says so once; others once per call): halve them, and
            # send no bigger batch to it again.
            if any(isinstance(r, dict) and BATCH_REFUSAL.search(error_text(r)) for r in ([whole] if whole else replies)):
                self.max_batch = max(1, len(calls) // 2)
                return self.replies(calls, timeout)
        if whole:
            return [whole] * len(calls)
        return [by_id.get(i, {"error": {"message": "no answer"}}) for i in range(len(calls))]

    def _post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST on this thread's connection: (status, body). A kept-alive connection the node has
        closed since (idle time-out) is seen before sending and replaced, so nothing is sent twice."""
        import http.client

        conn = getattr(self._local, "conn", None)
        if conn is not None and _closed_by_peer(conn):
            conn.close()
            conn = None
        if conn is None:
            conn = self._local.conn = _connection(self.url, timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", conn.shipledger_path, body, conn.shipledger_headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._local.conn = None
            if isinstance(exc, http.client.HTTPException):  # not an OSError: say it as one
                raise ConnectionError(f"{exc.__class__.__name__}: {exc}") from None
            raise
        if response.will_close:
            conn.close()
            self._local.conn = None
        return response.status, payload

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


def _connection(url: str, timeout: float):
    """An http.client connection to url's host, carrying the path and headers of every request."""
    import http.client

    scheme, host, port, path, headers = _target(url)
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.shipledger_path, conn.shipledger_headers = path, {**headers, "Content-Type": "application/json"}
    return conn


def _closed_by_peer(conn) -> bool:
    """True when an idle kept-alive connection was closed by the other end (it reads as ready)."""
    import select

    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _target(url: str) -> tuple[str, str, int, str, dict]:
    """(scheme, host, port, path with query, extra headers) of an http(s) URL; ValueError otherwise.
    Basic auth in the URL becomes a header, as web3 and requests take it."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {}
    if parts.username:
        import base64

        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return parts.scheme, parts.hostname, port, path, headers


def _tls_context():
    """The system's CA store (SSL_CERT_FILE/SSL_CERT_DIR apply), or the bundle REQUESTS_CA_BUNDLE names
    (web3's requests honours it, so one setting serves the SDK and the CLI)."""
    import ssl

    return ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE") or None)


def error_text(reply: dict) -> str:
    """The message of an error reply, for people."""
    error = reply.get("error") or {}
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def _error(message: str) -> dict:
    return {"error": {"code": -32000, "message": message}}


def quick_batch(url: str, calls: list[tuple[str, list]], timeout: float = TIMEOUT) -> list:
    """Results in call order, from one HTTP/1.1 POST on a fresh socket; ConnectionFailed on any error
    reply or when the node cannot be reached or answers with something that is not JSON-RPC."""
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
    try:
        status, payload = _post(url, body.encode(), timeout)
        replies = json.loads(payload)
    except (OSError, ValueError) as exc:
        raise ConnectionFailed(f"cannot reach the JSON-RPC node at {url}: {exc}") from None
    if status != 200 and not isinstance(replies, (list, dict)):
        raise ConnectionFailed(f"the JSON-RPC node at {url} answered HTTP {status}")
    if not isinstance(replies, list):
        replies = [replies]
    by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
    results = []
    for i, (method, _) in enumerate(calls):
        reply = by_id.get(i)
        if reply is None or "error" in reply:
            raise ConnectionFailed(f"{method} failed: {error_text(reply) if reply else 'no answer'}")
        results.append(reply.get("result"))
    return results


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    """POST body as JSON; (status, response body). Handles Content-Length, chunked and
    read-to-close responses, which is all a JSON-RPC node sends."""
    import socket

    scheme, hostname, port, path, headers = _target(url)
    host = hostname if port == (443 if scheme == "https" else 80) else f"{hostname}:{port}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    # An ASCII host goes as bytes: for a str, getaddrinfo runs the idna codec, whose import (stringprep,
    # unicodedata) is ~2 ms of the gate's start-up, to give the same name back.
    address = hostname.encode() if hostname.isascii() else hostname
    with socket.create_connection((address, port), timeout=timeout) as sock:
        if scheme == "https":
            sock = _tls_context().wrap_socket(sock, server_hostname=hostname)
        sock.sendall(head.encode() + b"\r\n" + body)
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    header, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        rest = _unchunk(rest)
    elif "content-length" in fields:
        rest = rest[: int(fields["content-length"])]
    return status, rest


def _unchunk(data: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        end = data.index(b"\r\n", position)
        size = int(data[position:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        position = end + 2 + size + 2

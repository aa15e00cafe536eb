"""`GET /v1/gate` of `shipledger serve` with a warm cache: p50/p99 latency at a steady 200 requests a
second, and the most requests a second one connection gets, from a load generator in another process
on loopback. Peer, measured the same way in the same run: the node itself answering the gate's
eth_call (what a pipeline would ask without the server). Target: p99 <= 5 ms at 200 rps.
Prints the numbers; never fails on time. Bounded: each phase sends a fixed number of requests.

    .venv/bin/python bench/serve_gate.py [--seconds 10] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlencode

from _common import SHIPLEDGER, devnet, free_port, header

TARGET_P99 = 0.005

# The load generator: one kept-alive HTTP/1.1 connection; open loop at `rate` (each request sent at its
# scheduled time, or at once when an answer came late: `late` says by how much at most), or closed loop
# (rate 0: as fast as answers come). Latency runs from sending to the last byte of the answer.
GENERATOR = r"""
import http.client, json, sys, time
host, port, method, path, body, rate, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]), int(sys.argv[7])
conn = http.client.HTTPConnection(host, port, timeout=10)
headers = {"Content-Type": "application/json"} if body else {}
latencies, statuses, late = [], {}, 0.0
start = time.perf_counter()
for i in range(count):
    due = start + i / rate if rate else time.perf_counter()
    while rate and time.perf_counter() < due:
        time.sleep(max(0.0, due - time.perf_counter() - 0.0002))
    sent = time.perf_counter()
    late = max(late, sent - due)
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    response.read()
    latencies.append(time.perf_counter() - sent)
    statuses[response.status] = statuses.get(response.status, 0) + 1
print(json.dumps({"latencies": latencies, "elapsed": time.perf_counter() - start, "statuses": statuses, "late": late}))
"""


def load(host: str, port: int, method: str, path: str, body: str, rate: float, count: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", GENERATOR, host, str(port), method, path, body, str(rate), str(count)],
                          capture_output=True, text=True, timeout=120 + count / max(rate, 1))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def setup_release(state: dict) -> str:
    from shipledger import ArtifactSpec, Ledger

    accounts = state["accounts"]
    digest = "sha256:" + secrets.token_hex(32)
    Ledger.connect(state["rpc_url"], state["book"], signer=accounts["registrar"]["private_key"]).register(
        ArtifactSpec(digest=digest, service="bench", version="1.0.0"))
    # Suite v2: a policy is a governance proposal. acme's steward proposes, globex's approves; a first
    # policy weakens, so it waits out the delay (moved past on the devnet's clock) and then executes.
    from shipledger.network.devnet import rpc_call

    stewards = [Ledger.connect(state["rpc_url"], state["book"], signer=s["private_key"]) for s in accounts["stewards"][:2]]
    proposal = stewards[1].approve_proposal(stewards[0].set_policy("bench", "prod", threshold=1, min_organisations=1).id)
    if proposal.state == "scheduled":
        rpc_call(state["rpc_url"], "evm_increaseTime", [state["governance"]["delay"] + 1])
        rpc_call(state["rpc_url"], "evm_mine", [])
        stewards[0].execute_proposal(proposal.id)
    Ledger.connect(state["rpc_url"], state["book"], signer=accounts["approvers"][0]["private_key"]).approve(digest, "bench", "prod")
    return digest


def report(name: str, result: dict, rate: float) -> tuple[float, float]:
    lat = result["latencies"]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    rps = len(lat) / result["elapsed"]
    print(f"  {name:28} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  max {max(lat) * 1000:6.2f} ms  "
          f"{rps:7.0f} rps{'' if rate else ' (closed loop)'}  {result['statuses']}"
          + (f"  (sent up to {result['late'] * 1000:.1f} ms late)" if rate else ""))
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of the steady-rate phase (default 10)")
    parser.add_argument("--rate", type=float, default=200, help="requests per second in that phase (default 200)")
    args = parser.parse_args()
    count = int(args.seconds * args.rate)
    header("shipledger serve: /v1/gate with a warm cache")
    with devnet() as (workdir, state):
        digest = setup_release(state)
        port = free_port()
        server = subprocess.Popen([SHIPLEDGER, "serve", "--listen", f"127.0.0.1:{port}", "--db", str(workdir / "serve.sqlite")],
                                  cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            path = "/v1/gate?" + urlencode({"digest": digest, "service": "bench", "environment": "prod"})
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                        assert json.loads(answer.read())["allowed"] is True
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("shipledger serve did not come up")
                    time.sleep(0.2)
            load("127.0.0.1", port, "GET", path, "", 0, 500)  # warm: cache filled, code paths hot
            from shipledger._internal.gatecall import encode_gate_call
            from shipledger._internal.names import parse_digest

            book = json.loads(open(state["book"]).read())
            call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [
                {"to": book["contracts"]["DeploymentLedger"]["address"],
                 "data": "0x" + encode_gate_call(parse_digest(digest), "bench", "prod").hex()}, "latest"]})
            node_port = int(state["rpc_url"].rsplit(":", 1)[1])
            print(f"  {count} requests at {args.rate:g} rps each, one kept-alive connection, another process")
            _, p99 = report("serve /v1/gate (cached)", load("127.0.0.1", port, "GET", path, "", args.rate, count), args.rate)
            _, node_p99 = report("node eth_call gate (peer)", load("127.0.0.1", node_port, "POST", "/", call, args.rate, count), args.rate)
            report("serve /v1/gate (cached)", load("127.0.0.1", port, "GET", path, "", 0, 2000), 0)
            report("node eth_call gate (peer)", load("127.0.0.1", node_port, "POST", "/", call, 0, 2000), 0)
            print(f"  p99 at {args.rate:g} rps: {p99 * 1000:.2f} ms (target <= {TARGET_P99 * 1000:.0f} ms: "
                  f"{'met' if p99 <= TARGET_P99 else 'NOT met'}); {p99 / node_p99:.2f}x the node's own p99")
        finally:
            server.terminate()
            server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())

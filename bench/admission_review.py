"""The admission webhook (`serve --admission`, POST /admission/v1/validate over TLS) with a warm cache:
p50/p99 latency of an AdmissionReview for a Pod at a steady 100 requests a second, from a client in
another process on one kept-alive TLS connection that verifies the certificate for SVC.NS.svc, as
kube-apiserver does. Peer, the same way in the same run: GET /v1/gate of the same server on the same
kind of connection (the one question the review asks, without parsing and answering a review).
Target: p99 <= 10 ms warm. Prints the numbers; never fails on time.

    .venv/bin/python bench/admission_review.py [--seconds 10] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from _common import SHIPLEDGER, devnet, free_port, header
from serve_gate import percentile, setup_release

TARGET_P99 = 0.010
SERVER_NAME = "shipledger.shipledger.svc"

GENERATOR = r"""
import http.client, json, socket, ssl, sys, time
port, cafile, name, method, path, body, rate, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7]), int(sys.argv[8])
context = ssl.create_default_context(cafile=cafile)
conn = http.client.HTTPSConnection(name, port, timeout=10, context=context)
raw = socket.create_connection(("127.0.0.1", port), 10)
raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client's own connect() and Go's net/http (the apiserver) do
conn.sock = context.wrap_socket(raw, server_hostname=name)
headers = {"Content-Type": "application/json"} if body else {}
latencies, statuses, late, answers = [], {}, 0.0, {}
start = time.perf_counter()
for i in range(count):
    due = start + i / rate if rate else time.perf_counter()
    while rate and time.perf_counter() < due:
        time.sleep(max(0.0, due - time.perf_counter() - 0.0002))
    sent = time.perf_counter()
    late = max(late, sent - due)
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    latencies.append(time.perf_counter() - sent)
    statuses[response.status] = statuses.get(response.status, 0) + 1
    if i == 0:
        answers = json.loads(data)
print(json.dumps({"latencies": latencies, "elapsed": time.perf_counter() - start, "statuses": statuses, "late": late, "first": answers}))
"""


def load(port: int, cafile: str, method: str, path: str, body: str, rate: float, count: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", GENERATOR, str(port), cafile, SERVER_NAME, method, path, body, str(rate), str(count)],
                          capture_output=True, text=True, timeout=120 + count / max(rate, 1))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


def report(name: str, result: dict, rate: float) -> float:
    lat = result["latencies"]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    print(f"  {name:34} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  max {max(lat) * 1000:6.2f} ms  "
          f"{len(lat) / result['elapsed']:6.0f} rps  {result['statuses']}  (sent up to {result['late'] * 1000:.1f} ms late)")
    return p99


def review(digest: str) -> str:
    pod = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"generateName": "web-", "namespace": "shop", "labels": {"app": "web"},
                        "annotations": {"shipledger.io/service": "bench", "shipledger.io/environment": "prod"}},
           "spec": {"containers": [{"name": "web", "image": f"registry.example/shop/web@{digest}", "resources": {}}],
                    "initContainers": [{"name": "migrate", "image": f"registry.example/shop/web@{digest}", "resources": {}}]}}
    request = {"uid": "0f0e6b6c-bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
               "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop", "operation": "CREATE",
               "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}, "object": pod,
               "oldObject": None, "dryRun": False}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def main() -> int:
    import trustme

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each steady-rate phase (default 10)")
    parser.add_argument("--rate", type=float, default=100, help="requests per second (default 100)")
    args = parser.parse_args()
    count = int(args.seconds * args.rate)
    header("shipledger serve --admission: an AdmissionReview over TLS, warm")
    with devnet() as (workdir, state), tempfile.TemporaryDirectory() as tls:
        digest = setup_release(state)
        ca = trustme.CA()
        cert = ca.issue_cert(SERVER_NAME)
        cafile, certfile, keyfile = (str(Path(tls) / n) for n in ("ca.pem", "tls.crt", "tls.key"))
        ca.cert_pem.write_to_path(cafile)
        cert.cert_chain_pems[0].write_to_path(certfile)
        cert.private_key_pem.write_to_path(keyfile)
        port = free_port()
        server = subprocess.Popen([SHIPLEDGER, "serve", "--listen", f"127.0.0.1:{port}", "--db", str(workdir / "serve.sqlite"),
                                   "--admission", "--tls-cert", certfile, "--tls-key", keyfile],
                                  cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            path = "/admission/v1/validate?timeout=5s"
            body = review(digest)
            deadline = time.monotonic() + 60
            while True:
                try:
                    first = load(port, cafile, "POST", path, body, 0, 1)["first"]
                    if first.get("response", {}).get("allowed") is True:
                        break
                except RuntimeError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("shipledger serve --admission did not come up allowing the release")
                time.sleep(0.3)
            gate = "/v1/gate?" + urlencode({"digest": digest, "service": "bench", "environment": "prod"})
            load(port, cafile, "POST", path, body, 0, 500)  # warm
            load(port, cafile, "GET", gate, "", 0, 500)
            print(f"  {count} requests at {args.rate:g} rps each, one kept-alive TLS connection, another process;"
                  " the review holds a Pod with a container and an init container")
            p99 = report("admission review (allowed)", load(port, cafile, "POST", path, body, args.rate, count), args.rate)
            peer = report("GET /v1/gate, same server (peer)", load(port, cafile, "GET", gate, "", args.rate, count), args.rate)
            print(f"  p99 at {args.rate:g} rps: {p99 * 1000:.2f} ms (target <= {TARGET_P99 * 1000:.0f} ms: "
                  f"{'met' if p99 <= TARGET_P99 else 'NOT met'}); {p99 / peer:.2f}x the gate endpoint's p99")
        finally:
            server.terminate()
            server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())

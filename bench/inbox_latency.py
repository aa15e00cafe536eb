"""The time from a vote being mined to the web app's Inbox showing it, against a real `shipledger
serve` on a devnet. Peer, measured the same way in the same run: `/v1/gate` showing the same vote
(the gate is asked of the chain at the head the server last polled; the Inbox also waits for the
index to sync that block). Prints the numbers; never fails on time. Bounded: --rounds votes.

    .venv/bin/python bench/inbox_latency.py [--rounds 10]
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

from _common import SHIPLEDGER, devnet, free_port, header, median, ms
from serve_gate import percentile


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def until(check, timeout: float = 30) -> float:
    """Seconds until check() holds, asked every 5 ms."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise RuntimeError("never happened")
        time.sleep(0.005)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="votes to time (default 10)")
    args = parser.parse_args()
    header("shipledger serve: from a vote mined to the Inbox showing it")
    from shipledger import ArtifactSpec, Ledger
    from shipledger.network.devnet import rpc_call

    with devnet() as (workdir, state):
        accounts, url, book = state["accounts"], state["rpc_url"], state["book"]
        connect = lambda part: Ledger.connect(url, book, signer=part["private_key"])  # noqa: E731
        stewards = [connect(s) for s in accounts["stewards"][:2]]
        proposal = stewards[1].approve_proposal(stewards[0].set_policy("bench", "prod", threshold=2, min_organisations=1).id)
        if proposal.state == "scheduled":
            rpc_call(url, "evm_increaseTime", [state["governance"]["delay"] + 1])
            rpc_call(url, "evm_mine", [])
            stewards[0].execute_proposal(proposal.id)
        registrar, approver = connect(accounts["registrar"]), connect(accounts["approvers"][0])
        port = free_port()
        server = subprocess.Popen([SHIPLEDGER, "serve", "--listen", f"127.0.0.1:{port}", "--db", str(workdir / "serve.sqlite")],
                                  cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        inbox_times, gate_times = [], []
        try:
            until(lambda: _ok(base + "/readyz"), 60)
            for _ in range(args.rounds):
                digest = "sha256:" + secrets.token_hex(32)
                registrar.register(ArtifactSpec(digest=digest, service="bench", version=secrets.token_hex(4)))
                row = f'data-digest="{digest}"'.encode()
                until(lambda: row in get(base + "/inbox"))  # listed, with no vote yet
                gate = base + "/v1/gate?" + urlencode({"digest": digest, "service": "bench", "environment": "prod"})
                approver.approve(digest, "bench", "prod")  # returns once the receipt is in: mined
                mined = time.perf_counter()
                until(lambda: json.loads(get(gate))["details"].get("have") == 1)
                gate_times.append(time.perf_counter() - mined)
                until(lambda: _shows_vote(get(base + "/inbox"), row))
                inbox_times.append(time.perf_counter() - mined)
        finally:
            server.terminate()
            server.wait(timeout=15)
    for name, values in (("Inbox shows the vote", inbox_times), ("/v1/gate shows it (peer)", gate_times)):
        print(f"  {name:28} median {ms(median(values)):>9}  p90 {ms(percentile(values, 90)):>9}  max {ms(max(values)):>9}"
              f"  ({len(values)} votes)")
    print(f"  Inbox / gate (medians): {median(inbox_times) / median(gate_times):.2f}x")
    return 0


def _ok(url: str) -> bool:
    try:
        get(url)
        return True
    except OSError:
        return False


def _shows_vote(page: bytes, row: bytes) -> bool:
    """The release's row says one approval (the tally comes from the index)."""
    start = page.find(row)
    return start >= 0 and b"1 of 2 approvals" in page[start:page.find(b"</tr>", start)]


if __name__ == "__main__":
    sys.exit(main())

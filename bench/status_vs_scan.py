"""`shipledger status` and `shipledger member list` served from a synced index vs the log scan they
used to do (`Ledger.history(service)` and `Ledger.members()`: every log from the suite's first
block, decoded by web3, one `eth_getBlockByNumber` per block for its time), on the same chain in
the same run.

The chain is bench/index_sync.py's (cached in bench/out/; built on first use). The index is synced
once with `shipledger index sync` (not part of the times). Then:

| question                 | shipledger (wall time of the CLI process, index synced)    | peer (in-process SDK, no process start)
| status SERVICE prod      | `shipledger status svc-00 prod --json` (syncs: nothing new) | Ledger.history(service) -> versions, deployment starts, newest never-started
| member list              | `shipledger member list --json`                             | Ledger.members()

The answers are compared (live and rolling deployment's digest and version, the pending digests;
the member list), so a fast wrong answer stops the run. The peer runs once (minutes on a big chain),
the CLI `--runs` times (median). Target: status <= 1 s.

    .venv/bin/python bench/status_vs_scan.py [--events 100000] [--runs 5] [--service svc-00]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import header, timed_run
from index_sync import chain_with_events

TARGET = 1.0  # seconds, status wall time
PENDING_SHOWN = 5


def peer_status(ledger, service: str, environment: str) -> dict:
    """The old `status` algorithm's history-derived parts, from the full log scan."""
    events = ledger.history(service)
    versions = {e.fields["digest"]: e.fields["version"] for e in events if e.kind == "registered"}
    started = {e.fields["id"]: e.fields["digest"] for e in events if e.kind == "deployed" and e.environment == environment}
    pending = [d for d in reversed(versions) if d not in started.values()][:PENDING_SHOWN]
    return {"versions": versions, "started": started, "pending": pending}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events on the chain (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="CLI runs of each command (median)")
    parser.add_argument("--service", default="svc-00")
    opts = parser.parse_args()

    from shipledger.client import Ledger

    header(f"status and member list: the index vs scanning every log ({opts.events} events)")
    with chain_with_events(opts.events) as (node, book, manifest):
        environment = manifest["environment"]
        workdir = Path(tempfile.mkdtemp(prefix="shipledger-bench-status-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
        cli = [sys.executable, "-m", "shipledger.cli"]
        where = ["--rpc", node.url, "--deployment", str(book), "--db", str(workdir / "index.sqlite")]

        def shipledger(*args) -> tuple[float, dict]:
            seconds, proc = timed_run([*cli, *args, *where, "--json"], cwd=workdir, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"shipledger {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
            return seconds, json.loads(proc.stdout)

        try:
            sync_seconds, synced = shipledger("index", "sync")
            print(f"   index synced: {synced['events']:,} events in {sync_seconds:.1f} s (not part of the times)")
            status_times, members_times = [], []
            for _ in range(opts.runs):
                seconds, status = shipledger("status", opts.service, environment)
                status_times.append(seconds)
                seconds, members = shipledger("member", "list")
                members_times.append(seconds)

            ledger = Ledger.connect(node.url, book)
            started = time.perf_counter()
            peer = peer_status(ledger, opts.service, environment)
            peer_status_seconds = time.perf_counter() - started
            started = time.perf_counter()
            peer_members = ledger.members()
            peer_members_seconds = time.perf_counter() - started
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        for key in ("live", "active"):
            ours = status[key]
            if ours is None:
                continue
            digest = peer["started"].get(ours["id"], "")
            expected = ("sha256:" + digest[2:] if digest else "", peer["versions"].get(digest, ""))
            if (ours["digest"], ours["version"]) != expected:
                raise RuntimeError(f"status {key}: the index says {ours['digest']} {ours['version']}, the logs {expected}")
        if [p["digest"] for p in status["pending_approvals"]] != ["sha256:" + d[2:] for d in peer["pending"]]:
            raise RuntimeError("status pending_approvals: the index and the logs disagree")
        if members["members"] != peer_members:
            raise RuntimeError("member list: the index and the logs disagree")

        print(f"   status {opts.service} {environment}: live #{(status['live'] or {}).get('id')}, "
              f"{len(status['pending_approvals'])} pending; member list: {len(peer_members)} members")
        print(f"   {'question':14} {'shipledger median':>18} {'max':>8} {'log scan':>10} {'ratio':>8}")
        for name, ours, theirs in (("status", status_times, peer_status_seconds),
                                   ("member list", members_times, peer_members_seconds)):
            median = statistics.median(ours)
            print(f"   {name:14} {median:>16.2f} s {max(ours):>6.2f} s {theirs:>8.1f} s {theirs / median:>7.0f}x")
        median = statistics.median(status_times)
        print(f"   target status <= {TARGET:.0f} s: {'met' if median <= TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

    .venv/bin/python bench/status_vs_scan.py [--events 100000] [--runs 5] [--service svc-00] [--no-scan]
        [--inherited-env] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def variants(opts, workdir: Path) -> list[tuple[str, dict]]:
    """(label, environment) to run the CLI in, interleaved. The headline is 'cached bytecode': a private
    PYTHONPYCACHEPREFIX in the temp dir (filled by the warm-up run), as for any installed package.
    'inherited env' is the environment as it is: with PYTHONDONTWRITEBYTECODE=1 and an editable tree
    without __pycache__, shipledger is compiled from source on every run. --baseline-tree DIR runs
    the same commands with DIR first on PYTHONPATH (an older checkout), for before/after in one run."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    trees = [("", base.get("PYTHONPATH"))] + ([("baseline ", opts.baseline_tree)] if opts.baseline_tree else [])
    out = []
    for prefix, tree in trees:
        env = {**base, **({"PYTHONPATH": tree} if tree else {})}
        cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        out.append((f"{prefix}cached bytecode", cached))
        if opts.inherited_env:
            out.append((f"{prefix}inherited env", env))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events on the chain (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="CLI runs of each command (median)")
    parser.add_argument("--service", default="svc-00")
    parser.add_argument("--no-scan", action="store_true",
                        help="time the CLI only: skip the log scan (minutes on a big chain) and the comparison of answers")
    parser.add_argument("--inherited-env", action="store_true",
                        help="also time the CLI in the environment as it is (e.g. PYTHONDONTWRITEBYTECODE=1)")
    parser.add_argument("--baseline-tree", metavar="DIR", help="also time the CLI of another source tree (before/after)")
    opts = parser.parse_args()

    from shipledger.client import Ledger

    header(f"status and member list: the index vs scanning every log ({opts.events} events)")
    with chain_with_events(opts.events) as (node, book, manifest):
        environment = manifest["environment"]
        workdir = Path(tempfile.mkdtemp(prefix="shipledger-bench-status-"))
        cli = [sys.executable, "-m", "shipledger.cli"]
        where = ["--rpc", node.url, "--deployment", str(book), "--db", str(workdir / "index.sqlite")]
        envs = variants(opts, workdir)

        def shipledger(env, *args) -> tuple[float, float, dict]:
            """Wall seconds, CPU seconds (user + system) and the JSON answer of one CLI run."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, proc = timed_run([*cli, *args, *where, "--json"], cwd=workdir, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                raise RuntimeError(f"shipledger {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
            return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, json.loads(proc.stdout)

        commands = {"status": ("status", opts.service, environment), "member list": ("member", "list")}
        try:
            sync_seconds, _, synced = shipledger(envs[0][1], "index", "sync")
            print(f"   index synced: {synced['events']:,} events in {sync_seconds:.1f} s (not part of the times)")
            answers = {}
            for label, env in envs:  # warm-up: bytecode caches, page cache; every variant must agree
                for name, argv in commands.items():
                    answer = shipledger(env, *argv)[2]
                    if answers.setdefault(name, answer) != answer:
                        raise RuntimeError(f"{name}: {label} answers differently from {envs[0][0]}")
            wall = {(label, name): [] for label, _ in envs for name in commands}
            cpu = {key: [] for key in wall}
            for i in range(opts.runs):
                for label, env in envs if i % 2 == 0 else envs[::-1]:
                    for name, argv in commands.items():
                        seconds, used, _ = shipledger(env, *argv)
                        wall[label, name].append(seconds)
                        cpu[label, name].append(used)
            status, members = answers["status"], answers["member list"]

            if not opts.no_scan:
                ledger = Ledger.connect(node.url, book)
                started = time.perf_counter()
                peer = peer_status(ledger, opts.service, environment)
                peer_status_seconds = time.perf_counter() - started
                started = time.perf_counter()
                peer_members = ledger.members()
                peer_members_seconds = time.perf_counter() - started
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        print(f"   status {opts.service} {environment}: live #{(status['live'] or {}).get('id')}, "
              f"{len(status['pending_approvals'])} pending; member list: {len(members['members'])} members")
        print(f"   {opts.runs} runs of each, interleaved")
        print(f"   {'variant':28} {'question':12} {'median':>8} {'min':>7} {'max':>7} {'CPU median':>11}")
        for label, _ in envs:
            for name in commands:
                times = wall[label, name]
                print(f"   {label:28} {name:12} {statistics.median(times):>6.2f} s {min(times):>5.2f} s {max(times):>5.2f} s"
                      f" {statistics.median(cpu[label, name]):>9.2f} s")
        if opts.no_scan:
            print("   (--no-scan: no log scan, the answers were not compared with the logs)")
        else:
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
            for name, theirs in (("status", peer_status_seconds), ("member list", peer_members_seconds)):
                median = statistics.median(wall[envs[0][0], name])
                print(f"   log scan, {name}: {theirs:.1f} s in-process; ratio to {envs[0][0]}: {theirs / median:.0f}x")
        for label, _ in envs:
            median = statistics.median(wall[label, "status"])
            print(f"   target status <= {TARGET:.0f} s, {label}: {'met' if median <= TARGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

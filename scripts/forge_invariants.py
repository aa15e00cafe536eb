#!/usr/bin/env python3
"""Run the forge invariant suite (test/forge) and fail on any failure.

    python scripts/forge_invariants.py                     the short campaign `make test` runs
    python scripts/forge_invariants.py --runs 256 --depth 100 --random-seed   `make invariants`

Every test in test/forge must pass: suite v2 fixed every finding of issue 10 that broke an invariant
on v1, so there is no list of allowed failures any more. Exit status: 0 when every test passed, 1
otherwise (including forge not running or no test found). A failing invariant prints its reason and
the sequence of calls forge shrank it to; the harness tests' logs (the gas numbers) are printed too.

Each campaign runs fresh: failures forge persisted from an earlier run are not replayed, so the counts
printed are this campaign's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORGE = ROOT / "node_modules" / ".bin" / "forge"
# The short campaign's seed is fixed, so `make test` is reproducible; `make invariants` draws one.
SHORT_SEED = "0x5eed"


def run_forge(runs: int, depth: int, seed: str | None, match: str | None, threads: int) -> tuple[dict, float]:
    """forge test --json; returns (the parsed results, wall seconds)."""
    with tempfile.TemporaryDirectory(prefix="forge-invariant-failures-") as persist:
        env = dict(os.environ)
        env.update(
            FOUNDRY_INVARIANT_RUNS=str(runs),
            FOUNDRY_INVARIANT_DEPTH=str(depth),
            FOUNDRY_INVARIANT_FAILURE_PERSIST_DIR=persist,
            FOUNDRY_FUZZ_FAILURE_PERSIST_DIR=persist,
        )
        # -vv: forge's JSON then carries the tests' logs (decoded_logs)
        cmd = [str(FORGE), "test", "--json", "-vv", "--threads", str(threads)]
        if seed:
            cmd += ["--fuzz-seed", seed]
        if match:
            cmd += ["--match-test", match]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - started
    # forge --json prints one JSON document on stdout (its exit status is 0 even when tests fail);
    # a compile error or a crash leaves no document.
    try:
        return json.loads(proc.stdout), elapsed
    except json.JSONDecodeError:
        sys.stderr.write(proc.stderr[-4000:] + proc.stdout[-4000:])
        sys.exit(f"forge_invariants: forge produced no results (exit {proc.returncode})")


def sequence_text(counterexample) -> list[str]:
    """The calls of an invariant counterexample, one line each."""
    if not isinstance(counterexample, dict) or "Sequence" not in counterexample:
        return []
    calls = counterexample["Sequence"][1]
    return [f"{c.get('func_name')}({c.get('raw_args', '')})" for c in calls]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="runs per invariant (default 24)")
    parser.add_argument("--depth", type=int, default=60, help="calls per run (default 60)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", default=SHORT_SEED, help=f"fuzz seed (default {SHORT_SEED})")
    seeds.add_argument("--random-seed", action="store_true", help="let forge draw the seed")
    parser.add_argument("--match", help="only tests matching this regex (forge --match-test)")
    parser.add_argument("--threads", type=int, default=2, help="forge threads (default 2: the machine's cores)")
    parser.add_argument("--summary", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    seed = None if args.random_seed else args.seed
    results, elapsed = run_forge(args.runs, args.depth, seed, args.match, args.threads)

    rows = []
    for suite in results.values():
        for name, result in suite["test_results"].items():
            test = name.removesuffix("()")
            kind = result.get("kind") or {}
            inv = kind.get("Invariant") if isinstance(kind, dict) else None
            rows.append(
                {
                    "test": test,
                    "passed": result["status"] == "Success",
                    "logs": result.get("decoded_logs") or [],
                    "reason": result.get("reason"),
                    "runs": inv["runs"] if inv else None,
                    "calls": inv["calls"] if inv else None,
                    "reverts": inv["reverts"] if inv else None,
                    "sequence": sequence_text(result.get("counterexample")),
                    # per handler function: calls and reverts (a revert is a step the suite refused)
                    "metrics": {k.rsplit(".", 1)[-1]: v for k, v in (inv or {}).get("metrics", {}).items()},
                }
            )
    rows.sort(key=lambda r: r["test"])
    failed = [r for r in rows if not r["passed"]]

    print(f"forge invariants: runs={args.runs} depth={args.depth} seed={seed or 'random'} "
          f"wall={elapsed:.0f}s tests={len(rows)}")
    for r in rows:
        size = f" runs={r['runs']} calls={r['calls']} reverts={r['reverts']}" if r["runs"] is not None else ""
        print(f"  {'pass' if r['passed'] else 'FAIL':<4} {r['test']}{size}")
        for line in r["logs"]:
            print(f"      {line}")
        if not r["passed"]:
            print(f"      why: {r['reason']}")
            for call in r["sequence"]:
                print(f"        {call}")
    if args.summary:
        args.summary.write_text(json.dumps({"runs": args.runs, "depth": args.depth, "seed": seed,
                                            "wall_seconds": round(elapsed, 1), "tests": rows}, indent=2) + "\n")
    problems = []
    if not rows:
        problems.append("no test ran")
    if failed:
        problems.append(f"failures: {', '.join(r['test'] for r in failed)}")
    if problems:
        print("forge invariants: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"forge invariants: ok ({len(rows)} passed)")
    return 0

if __name__ == "__main__":
    sys.exit(main())

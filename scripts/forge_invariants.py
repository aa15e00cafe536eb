#!/usr/bin/env python3
"""Run the forge invariant suite (test/forge) and judge it against the list of known suite-v1 failures.

    python scripts/forge_invariants.py                     the short campaign `make test` runs
    python scripts/forge_invariants.py --runs 256 --depth 100 --random-seed   `make invariants`

Every test in test/forge must pass, except the invariants listed in test/forge/known-v1-failures.txt:
suite v1 breaks those (issue 10's findings), and they are reported as "known" whether or not this
campaign found the counterexample. The list is the only allowance: the invariants are not weakened.
When suite v2 lands, its lines are deleted and those invariants must pass too. Exit status: 0 when
nothing unexpected failed, 1 otherwise (including forge not running, no test found, or a listed name
that is no test any more).

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
KNOWN_FAILURES = ROOT / "test" / "forge" / "known-v1-failures.txt"
# The short campaign's seed is fixed, so `make test` is reproducible; `make invariants` draws one.
SHORT_SEED = "0x5eed"


def known_failures() -> dict[str, str]:
    """{test name: the finding that breaks it} from the list (name, then '#' and the finding)."""
    known = {}
    for line in KNOWN_FAILURES.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, why = line.partition("#")
        known[name.strip()] = why.strip()
    return known


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
        cmd = [str(FORGE), "test", "--json", "--threads", str(threads)]
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

    known = known_failures()
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
                    "known_v1_failure": known.get(test),
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
    names = {r["test"] for r in rows}
    stale = sorted(set(known) - names) if not args.match else []
    unexpected = [r for r in rows if not r["passed"] and not r["known_v1_failure"]]

    print(f"forge invariants: runs={args.runs} depth={args.depth} seed={seed or 'random'} "
          f"wall={elapsed:.0f}s tests={len(rows)}")
    for r in rows:
        if r["passed"]:
            status = "pass" if not r["known_v1_failure"] else "pass (listed as a known v1 failure: not found this time)"
        else:
            status = "known v1 failure" if r["known_v1_failure"] else "FAIL"
        size = f" runs={r['runs']} calls={r['calls']} reverts={r['reverts']}" if r["runs"] is not None else ""
        print(f"  {status:<17} {r['test']}{size}")
        if not r["passed"]:
            print(f"      why: {r['reason']}")
            if r["known_v1_failure"]:
                print(f"      finding: {r['known_v1_failure']}")
            for call in r["sequence"]:
                print(f"        {call}")
    if args.summary:
        args.summary.write_text(json.dumps({"runs": args.runs, "depth": args.depth, "seed": seed,
                                            "wall_seconds": round(elapsed, 1), "tests": rows}, indent=2) + "\n")
    problems = []
    if not rows:
        problems.append("no test ran")
    if stale:
        problems.append(f"known-v1-failures.txt names tests that do not exist: {', '.join(stale)}")
    if unexpected:
        problems.append(f"unexpected failures: {', '.join(r['test'] for r in unexpected)}")
    if problems:
        print("forge invariants: " + "; ".join(problems), file=sys.stderr)
        return 1
    known_found = sum(1 for r in rows if not r["passed"])
    print(f"forge invariants: ok ({len(rows) - known_found} passed, {known_found} known v1 failures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The consortium network side by side with the anvil devnet: `network up` wall time, and time to
finality (a signed `register` sent until its receipt) on 1 s Clique blocks against anvil's instant
mining. Prints the figures and their ratio; asserts nothing. Needs `make engine`. ~2 min on 2 cores.

    .venv/bin/python bench/consortium.py [--samples 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import SHIPLEDGER, header, median


def up(workdir: Path, engine: str) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([SHIPLEDGER, "network", "up", "--engine", engine, "--validators", "4", "--dir", "net", "--json"],
                          cwd=workdir, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"network up --engine {engine} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, json.loads(proc.stdout)


def finality(info: dict, samples: int) -> list[float]:
    """Seconds from sending a register transaction to its receipt, through the SDK on node 1."""
    from shipledger import ArtifactSpec, Ledger

    ledger = Ledger.connect(info["rpc_url"], info["deployment"], signer=info["accounts"]["registrar"]["private_key"])
    times = []
    for n in range(samples):
        version = f"{time.time_ns()}-{n}"
        spec = ArtifactSpec(digest="sha256:" + hashlib.sha256(version.encode()).hexdigest(), service="bench-finality", version=version)
        start = time.perf_counter()
        ledger.register(spec)  # returns once the receipt is in
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    header("consortium network (geth v1.13.15 Clique, 4 validators, 1 s blocks) vs the anvil engine")
    results = {}
    for engine in ("clique", "anvil"):
        workdir = Path(tempfile.mkdtemp(prefix=f"shipledger-bench-{engine}-"))
        try:
            elapsed, info = up(workdir, engine)
            results[engine] = (elapsed, finality(info, args.samples))
        finally:
            subprocess.run([SHIPLEDGER, "network", "down", "--dir", "net"], cwd=workdir, capture_output=True, timeout=120)
            shutil.rmtree(workdir, ignore_errors=True)
    (clique_up, clique_times), (anvil_up, anvil_times) = results["clique"], results["anvil"]
    print(f"   network up:        clique {clique_up:.1f} s, anvil {anvil_up:.1f} s (x{clique_up / anvil_up:.1f})")
    print(f"   time to finality:  clique median {median(clique_times):.2f} s (min {min(clique_times):.2f}, max {max(clique_times):.2f}),"
          f" anvil median {median(anvil_times):.3f} s (x{median(clique_times) / median(anvil_times):.0f}); {args.samples} sends each")


if __name__ == "__main__":
    main()

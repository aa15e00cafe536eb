"""Issue 11's figures: the consortium network side by side with the anvil engine, in one run.

Each engine is started with `shipledger network up` (4 geth Clique validators on 1 s blocks; then
`--engine anvil`, one anvil mining on demand) and measured in turn:
- `network up` wall time;
- time to finality: an SDK `register` from send to receipt (median of --samples);
- the gate: `shipledger gate --json`, process start to exit, against the native `cast block-number`
  on the same node, median of --runs interleaved (bench/gate_vs_cast.py's functions);
- registration throughput: `shipledger register --batch` of --count artifacts (target on the
  consortium >= 500 artifacts/s), and the limit it runs against on a chain with a block period: the
  block gas limit (read from the chain) / gas per item (from the batch's receipts) / the period.
Prints the figures and their ratios; asserts nothing. Needs `make engine`. ~3 min on 2 cores.

    .venv/bin/python bench/consortium.py [--samples 10] [--runs 15] [--count 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import SHIPLEDGER, header, median, ms, timed_run
from gate_vs_cast import ENV, SERVICE, checked_run, interleaved, line, modes, setup_release
from register_batch import write_batch

BATCH_TARGET = 500.0  # artifacts/s on the consortium (issue 11)
BLOCK_PERIOD = 1  # seconds
GOVERNANCE_DELAY = 2  # seconds the gate's policy waits before it executes (waited out on the real clock)


def up(workdir: Path, engine: str) -> tuple[float, dict]:
    argv = [SHIPLEDGER, "network", "up", "--engine", engine, "--validators", "4", "--dir", "net",
            "--governance-delay", f"{GOVERNANCE_DELAY}s", "--json"]
    if engine == "clique":
        argv[-1:-1] = ["--block-period", f"{BLOCK_PERIOD}s"]
    elapsed, proc = timed_run(argv, cwd=workdir, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"network up --engine {engine} failed ({proc.returncode}): {proc.stderr.strip()}")
    info = json.loads(proc.stdout)
    info["book"] = info["deployment"]  # setup_release's name for it
    return elapsed, info


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


def cli_env(info: dict, key: str | None = None) -> dict:
    """The environment a pipeline would give the CLI for this network (no other SHIPLEDGER_ settings)."""
    env = dict(modes()[0][1])  # without the caller's SHIPLEDGER_ settings
    env.update(SHIPLEDGER_RPC_URL=info["rpc_url"], SHIPLEDGER_DEPLOYMENT=info["deployment"])
    if key:
        env["SHIPLEDGER_PRIVATE_KEY"] = key
    return env


def gate_vs_block_number(workdir: Path, info: dict, runs: int, real_clock: bool) -> dict[str, list[float]]:
    """gate --json and cast block-number against node 1, interleaved, after an allowed release."""
    from shipledger.network.devnet import find_foundry_tool

    digest = setup_release(info, real_clock=real_clock)
    env = cli_env(info)  # as gate_vs_cast.py runs it: this environment, with make setup's bytecode
    gate = [SHIPLEDGER, "gate", "--digest", digest, "--service", SERVICE, "--env", ENV, "--json"]
    block_number = [find_foundry_tool("cast"), "block-number", "--rpc-url", info["rpc_url"]]

    def run(argv, run_env):
        return checked_run(argv, workdir, run_env)

    for _ in range(2):  # warm-up: the bytecode cache, the page cache, the node's first calls
        _, answer = run(gate, env)
        run(block_number, env)
    if not json.loads(answer.stdout)["allowed"]:
        raise RuntimeError(f"the gate does not allow the release it was set up for: {answer.stdout.strip()}")
    return interleaved([("gate", gate, env), ("cast block-number", block_number, env)], runs, run)


def register_batch(workdir: Path, info: dict, count: int) -> dict:
    """`shipledger register --batch` of `count` new artifacts: seconds, the receipts, the chain's
    block gas limit, the gas limit of its first transaction (a block packs by it), and the unix times
    the process started and its first and last blocks were sealed."""
    from shipledger.network.devnet import rpc_call

    write_batch(workdir / "batch.jsonl", "bench-batch", count)
    env = cli_env(info, info["accounts"]["registrar"]["private_key"])
    started = time.time()
    seconds, proc = timed_run([SHIPLEDGER, "register", "--batch", "batch.jsonl", "--json"], cwd=workdir, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"shipledger register --batch exited {proc.returncode}: {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    if result["registered"] != count:
        raise RuntimeError(f"register --batch registered {result['registered']} of {count}")
    transactions = result["transactions"]
    block = rpc_call(info["rpc_url"], "eth_getBlockByNumber", ["latest", False])
    sent = rpc_call(info["rpc_url"], "eth_getTransactionByHash", [transactions[0]["tx_hash"]])
    sealed = [int(rpc_call(info["rpc_url"], "eth_getBlockByNumber", [hex(number), False])["timestamp"], 16)
              for number in (min(t["block_number"] for t in transactions), max(t["block_number"] for t in transactions))]
    return {"seconds": seconds, "transactions": transactions, "block_gas_limit": int(block["gasLimit"], 16),
            "tx_gas_limit": int(sent["gas"], 16), "started": started, "sealed": sealed}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10, help="register sends timed for finality")
    parser.add_argument("--runs", type=int, default=15, help="interleaved runs of the gate and cast block-number")
    parser.add_argument("--count", type=int, default=10_000, help="artifacts in the register --batch")
    args = parser.parse_args()
    header("consortium network (geth v1.13.15 Clique, 4 validators, 1 s blocks) vs the anvil engine")
    print(f"   at the start: {load()}")
    results = {}
    for engine in ("clique", "anvil"):
        workdir = Path(tempfile.mkdtemp(prefix=f"shipledger-bench-{engine}-"))
        try:
            elapsed, info = up(workdir, engine)
            results[engine] = {"up": elapsed, "finality": finality(info, args.samples),
                               "gate": gate_vs_block_number(workdir, info, args.runs, real_clock=engine == "clique"),
                               "batch": register_batch(workdir, info, args.count)}
        finally:
            subprocess.run([SHIPLEDGER, "network", "down", "--dir", "net"], cwd=workdir, capture_output=True, timeout=120)
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"   {engine} measured; {load()}")
    clique, anvil = results["clique"], results["anvil"]

    print(f"\n   network up:        clique {clique['up']:.1f} s, anvil {anvil['up']:.1f} s (x{clique['up'] / anvil['up']:.1f})")
    finals = {engine: r["finality"] for engine, r in results.items()}
    print(f"   time to finality:  clique median {median(finals['clique']):.2f} s (min {min(finals['clique']):.2f}, "
          f"max {max(finals['clique']):.2f}), anvil median {median(finals['anvil']):.3f} s "
          f"(x{median(finals['clique']) / median(finals['anvil']):.0f}); {args.samples} sends each")

    print(f"   gate --json vs cast block-number on node 1, {args.runs} interleaved runs each:")
    for engine, r in results.items():
        line(f"{engine}: shipledger gate --json", r["gate"]["gate"])
        line(f"{engine}: cast block-number", r["gate"]["cast block-number"])
        print(f"   {engine}: ratio gate/cast block-number {median(r['gate']['gate']) / median(r['gate']['cast block-number']):.2f}x")
    print(f"   gate, clique vs anvil: {ms(median(clique['gate']['gate']))} vs {ms(median(anvil['gate']['gate']))} "
          f"(x{median(clique['gate']['gate']) / median(anvil['gate']['gate']):.2f})")

    print(f"   register --batch of {args.count:,} (process start to exit):")
    rates = {}
    for engine, r in results.items():
        batch = r["batch"]
        txs = batch["transactions"]
        gas = sum(t["gas_used"] for t in txs)
        blocks = [t["block_number"] for t in txs]
        rates[engine] = args.count / batch["seconds"]
        print(f"   {engine}: {batch['seconds']:.1f} s -> {rates[engine]:,.0f} artifacts/s; {len(txs)} transactions of "
              f"~{args.count / len(txs):.0f} artifacts, {gas / args.count:,.0f} gas per artifact, in {len(set(blocks))} blocks "
              f"({min(blocks)}-{max(blocks)})")
        if engine != "clique":
            continue  # anvil's block times are its own clock, which setup_release moved on
        first, last = batch["sealed"]
        print(f"     {first - batch['started']:.0f} s to its first block (start-up, the checks against the ledger, the first "
              f"sends), {last - first} s of blocks, {batch['started'] + batch['seconds'] - last:.0f} s after the last "
              "(receipts, exit); block times are whole seconds")
    batch = clique["batch"]
    per_item = sum(t["gas_used"] for t in batch["transactions"]) / args.count
    limit = batch["block_gas_limit"] / per_item / BLOCK_PERIOD
    fit = batch["block_gas_limit"] // batch["tx_gas_limit"]
    items_per_tx = args.count / len(batch["transactions"])
    span = max(t["block_number"] for t in batch["transactions"]) - min(t["block_number"] for t in batch["transactions"]) + 1
    print(f"   clique's limit: block gas limit {batch['block_gas_limit']:,} / {per_item:,.0f} gas per artifact / "
          f"{BLOCK_PERIOD} s block period = {limit:,.0f} artifacts/s")
    print(f"     blocks pack by a transaction's gas limit ({batch['tx_gas_limit']:,}): {fit} fit a block, so at most "
          f"{fit * items_per_tx / BLOCK_PERIOD:,.0f} artifacts/s with these transactions; the batch's {span} blocks were "
          f"{sum(t['gas_used'] for t in batch['transactions']) / (span * batch['block_gas_limit']):.0%} full")
    print(f"   ratio clique/anvil: {rates['clique'] / rates['anvil']:.2f}x; clique is at {rates['clique'] / limit:.0%} of its limit")
    share = rates["clique"] / BATCH_TARGET
    print(f"   target >= {BATCH_TARGET:,.0f} artifacts/s on the consortium: "
          + ("met" if share >= 1 else f"MISSED ({share:.0%} of it)"))
    print(f"   at the end: {load()}")


if __name__ == "__main__":
    main()

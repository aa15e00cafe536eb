"""`shipledger gate --json` vs native `cast`: wall time of one gate check, process start to exit,
measured side by side against the same devnet in the same run, interleaved.

Two peers: `cast block-number` (the floor of any JSON-RPC command-line tool: one call, no ABI) and
`cast call ... gate(...)`, which asks the DeploymentLedger the same question. The shipledger CLI
also checks the chain id and that the address book's contract has code (one batched JSON-RPC
request), decodes the reason and prints JSON. Target: the CLI's median <= 3x `cast block-number`'s.
Prints the ratios; never fails on time. The native cast binary is used (node_modules/.bin/cast is a
node shim that adds ~150 ms).

    .venv/bin/python bench/gate_vs_cast.py [--runs 15] [--importtime] [--also-venv DIR]

--also-venv DIR times DIR/bin/shipledger and DIR/bin/python as well, in the same interleaved runs:
e.g. a venv where shipledger is installed without the setuptools editable finder (a plain .pth
path entry, `pip install -e . --config-settings editable_mode=compat`, or a wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys

from _common import SHIPLEDGER, devnet, header, median, ms, timed_run

SERVICE, ENV = "bench", "prod"
TARGET = 3.0  # x the median of `cast block-number`


def setup_release(state: dict, real_clock: bool = False) -> str:
    """Register an artifact, set a policy (1 approval) and approve it, so the gate says allowed.
    real_clock: the chain's clock cannot be moved (the consortium), so the governance delay is waited
    out; else it is skipped with anvil's evm_increaseTime."""
    from shipledger import ArtifactSpec, Ledger

    accounts = state["accounts"]
    digest = "sha256:" + secrets.token_hex(32)
    registrar = Ledger.connect(state["rpc_url"], state["book"], signer=accounts["registrar"]["private_key"])
    registrar.register(ArtifactSpec(digest=digest, service=SERVICE, version="1.0.0"))
    # suite v2: a policy is a governance proposal; the stewards of K organisations, and the delay waited
    stewards = [Ledger.connect(state["rpc_url"], state["book"], signer=s["private_key"]) for s in accounts["stewards"]]
    proposal = stewards[0].set_policy(SERVICE, ENV, threshold=1)
    for steward in stewards[1:state["governance"]["organisations_needed"]]:
        proposal = steward.approve_proposal(proposal.id)
    if proposal.state == "scheduled":
        from shipledger.network.devnet import rpc_call

        if real_clock:
            from shipledger.network.consortium import wait_for_block_time

            wait_for_block_time(state["rpc_url"], proposal.executable_at)
        else:
            rpc_call(state["rpc_url"], "evm_increaseTime", [state["governance"]["delay"]])
            rpc_call(state["rpc_url"], "evm_mine", [])
        stewards[-1].execute_proposal(proposal.id)
    approver = Ledger.connect(state["rpc_url"], state["book"], signer=accounts["approvers"][0]["private_key"])
    approver.approve(digest, SERVICE, ENV)
    result = approver.gate(digest, SERVICE, ENV)
    if not result.allowed:
        raise RuntimeError(f"setup failed: the SDK gate says {result}")
    return digest


def interleaved(jobs: list[tuple], runs: int, run) -> dict:
    """Wall times of each (name, argv, env) job, `runs` of each, in alternating order every round so
    load from anything else on the machine hits all alike. run(argv, env) -> (seconds, process)."""
    times: dict = {name: [] for name, _, _ in jobs}
    for i in range(runs):
        for name, argv, env in jobs if i % 2 == 0 else jobs[::-1]:
            times[name].append(run(argv, env)[0])
    return times


def checked_run(argv: list[str], cwd, env: dict) -> tuple[float, object]:
    """(wall seconds, process) of one run; RuntimeError if it failed, since a failed run's time is no figure."""
    seconds, proc = timed_run(argv, cwd=cwd, env=env, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    return seconds, proc


def line(label: str, values: list[float]) -> None:
    print(f"   {label:34} median {ms(median(values)):>9}   (min {ms(min(values))}, max {ms(max(values))})")


def importtime_top(argv: list[str], cwd, env: dict, top: int = 10, repeats: int = 3,
                   python: str = sys.executable) -> list[tuple[float, float, str]]:
    """(cumulative ms, self ms, module) of the slowest imports of one gate run, by cumulative time;
    the median over a few runs, since one run on a busy machine is noisy."""
    samples: dict[str, list[tuple[int, int]]] = {}
    for _ in range(repeats):
        proc = subprocess.run([python, "-X", "importtime", *argv], cwd=cwd, env=env, capture_output=True, text=True)
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if m:
                samples.setdefault(m.group(3)[1:] + m.group(4), []).append((int(m.group(2)), int(m.group(1))))
    rows = [(median([c for c, _ in v]) / 1000, median([s for _, s in v]) / 1000, k) for k, v in samples.items()]
    return sorted(rows, reverse=True)[:top]


PHASES = """
import sys, time
t0 = time.perf_counter()
import shipledger.cli as cli
t1 = time.perf_counter()
cli.build_parser("gate")
t2 = time.perf_counter()
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(sys.argv[1:])
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, (t3 - t2) - (t2 - t1), code)
"""


def phases(argv: list[str], cwd, env: dict, repeats: int = 7, python: str = sys.executable) -> dict[str, float]:
    """Median seconds of the gate's phases inside the process: importing shipledger.cli, building
    the argparse parser (the gate's group only), and the rest of main() (parse,
    address book, the JSON-RPC round trip, decode, print)."""
    rows = []
    for _ in range(repeats):
        proc = subprocess.run([python, "-c", PHASES, *argv], cwd=cwd, env=env, capture_output=True, text=True)
        rows.append([float(x) for x in proc.stdout.split()[:3]])
    return {name: median([r[i] for r in rows]) for i, name in enumerate(("import shipledger.cli", "build_parser()", "rest of main()"))}


def modes() -> list[tuple[str, dict]]:
    """The environment to run the gate in: this one, as a user's shell runs it. `make setup` compiles
    shipledger's bytecode, which matters where PYTHONDONTWRITEBYTECODE is set (these machines set it):
    without it every gate run compiles shipledger from source, and the label says so."""
    from pathlib import Path

    import shipledger

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    compiled = (Path(shipledger.__file__).parent / "__pycache__").is_dir()
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not compiled:
        return [("this environment, shipledger NOT compiled (PYTHONDONTWRITEBYTECODE; make setup compiles it)", env)]
    return [("this environment", env)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--importtime", action="store_true", help="print the import-time top 10 even under the target")
    parser.add_argument("--also-venv", metavar="DIR", help="also time DIR/bin/shipledger and DIR/bin/python")
    opts = parser.parse_args()

    from shipledger.network.devnet import find_foundry_tool

    cast = find_foundry_tool("cast")
    header("gate: `shipledger gate --json` vs `cast call gate(...)`")
    with devnet() as (workdir, state):
        digest = setup_release(state)
        book = json.loads(open(state["book"]).read())
        ledger_address = book["contracts"]["DeploymentLedger"]["address"]
        gate_argv = [SHIPLEDGER, "gate", "--digest", digest, "--service", SERVICE, "--env", ENV, "--json"]
        cast_argv = [cast, "call", ledger_address, "gate(bytes32,string,string)(uint8,uint256,uint256)",
                     "0x" + digest.removeprefix("sha256:"), SERVICE, ENV, "--rpc-url", state["rpc_url"]]
        block_number_argv = [cast, "block-number", "--rpc-url", state["rpc_url"]]
        floor_argv = [sys.executable, "-c", "pass"]
        envs = modes()
        programs = {label: (SHIPLEDGER, sys.executable) for label, _ in envs}
        if opts.also_venv:
            label = f"venv {opts.also_venv}"
            envs.append((label, dict(envs[0][1])))
            programs[label] = (os.path.join(opts.also_venv, "bin", "shipledger"), os.path.join(opts.also_venv, "bin", "python"))

        def run(argv, env):
            return checked_run(argv, workdir, env)

        def gate_for(label):
            return [programs[label][0], *gate_argv[1:]]

        def floor_for(label):
            return [programs[label][1], *floor_argv[1:]]

        # Warm up (bytecode cache, page cache, anvil's first calls); check both give the same answer.
        for label, env in envs:
            for _ in range(2):
                _, g = run(gate_for(label), env)
                run(floor_for(label), env)
        _, c = run(cast_argv, envs[0][1])
        answer = json.loads(g.stdout)
        if not answer["allowed"] or c.stdout.split()[0] != "0":
            raise RuntimeError(f"answers differ: shipledger {g.stdout.strip()!r}, cast {c.stdout.strip()!r}")

        # Interleaved, alternating order, so load from anything else on the machine hits all alike.
        jobs = [("cast", cast_argv, envs[0][1]), ("cast block-number", block_number_argv, envs[0][1])]
        for label, env in envs:
            jobs += [(("gate", label), gate_for(label), env), (("floor", label), floor_for(label), env)]
        times = interleaved(jobs, opts.runs, run)
        cast_med, block_number_med = median(times["cast"]), median(times["cast block-number"])
        print(f"   answer: allowed={answer['allowed']} reason={answer['reason']} (cast: {c.stdout.split()[0]})")
        print(f"   runs: {opts.runs} of each, interleaved")
        line("cast block-number", times["cast block-number"])
        line("cast call gate(...)", times["cast"])
        missed = []
        for label, env in envs:
            gate_med = median(times[("gate", label)])
            ratio = gate_med / block_number_med
            print(f"   -- {label}")
            line("shipledger gate --json", times[("gate", label)])
            line("python -c pass (start-up floor)", times[("floor", label)])
            print(f"   ratio shipledger/cast block-number: {ratio:.2f}x   (target <= {TARGET:.0f}x: "
                  f"{'met' if ratio <= TARGET else 'MISSED'}{'' if ratio <= TARGET else f', by {ratio / TARGET - 1:.0%}'})")
            print(f"   ratio shipledger/cast call: {gate_med / cast_med:.2f}x")
            print(f"   ratio of the fastest runs (block-number): {min(times[('gate', label)]) / min(times['cast block-number']):.2f}x"
                  "   (less sensitive to other load on the machine)")
            if ratio > TARGET or opts.importtime:
                missed.append((label, env))
        for label, env in missed:
            print(f"\n   where the time goes, {label} (in-process, median of 7 runs):")
            for name, seconds in phases(gate_argv[1:], workdir, env, python=programs[label][1]).items():
                print(f"   {ms(seconds):>12}  {name}")
            print(f"   python -X importtime of the gate, {label}: top 10 by cumulative time (median of 3 runs)")
            print(f"   {'cumulative':>12} {'self':>10}  module")
            for cumulative, own, module in importtime_top(gate_for(label), workdir, env, python=programs[label][1]):
                print(f"   {cumulative:>9.1f} ms {own:>7.1f} ms  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

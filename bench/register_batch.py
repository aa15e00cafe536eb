"""`shipledger register --batch FILE.jsonl` (10,000 artifacts) vs a plain web3.py loop of one
`register` transaction per artifact, on the same fresh devnet in the same run.

The CLI is timed from process start to exit (start-up, web3 import, address-book checks, gas
estimate, 100-artifact registerBatch transactions sent back to back, every receipt). The web3 loop
is what a script would do without the SDK: for each artifact build the transaction (web3 estimates
gas and fees), sign locally with the registrar key, send, wait for the receipt; it runs over a
smaller sample and its rate is extrapolated. Target: the CLI >= 1,000 artifacts/s. Prints rates
and the ratio; never fails on time.

    .venv/bin/python bench/register_batch.py [--count 10000] [--sample 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import time

from _common import SHIPLEDGER, devnet, header, timed_run

TARGET = 1000.0  # artifacts/s


def write_batch(path, service: str, count: int) -> None:
    with open(path, "w") as out:
        for i in range(count):
            out.write(json.dumps({"digest": "sha256:" + secrets.token_hex(32), "service": service, "version": str(i)}) + "\n")


def web3_loop(state: dict, count: int) -> tuple[float, list[bytes]]:
    """Seconds to register `count` artifacts one transaction each; returns the digests too."""
    from eth_account import Account
    from web3 import Web3

    from shipledger._internal import artifacts

    book = json.loads(open(state["book"]).read())
    w3 = Web3(Web3.HTTPProvider(state["rpc_url"]))
    registry = w3.eth.contract(address=Web3.to_checksum_address(book["contracts"]["ReleaseRegistry"]["address"]),
                               abi=artifacts.abi("ReleaseRegistry"))
    account = Account.from_key(state["accounts"]["registrar"]["private_key"])
    digests = [secrets.token_bytes(32) for _ in range(count)]
    zero = b"\0" * 32
    start = time.perf_counter()
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    chain_id = w3.eth.chain_id
    for i, digest in enumerate(digests):
        item = (digest, "bench-web3", str(i), zero, 0, zero, zero, "")
        tx = registry.functions.register(item).build_transaction({"from": account.address, "nonce": nonce + i, "chainId": chain_id})
        signed = account.sign_transaction(tx)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), poll_latency=0.01)
        if receipt.status != 1:
            raise RuntimeError(f"web3 register {i} reverted")
    return time.perf_counter() - start, digests


def anvil_cpu(workdir) -> float:
    """CPU seconds (user + system) the devnet's anvil has used so far; 0 if unknown (not Linux)."""
    try:
        pid = json.loads((workdir / ".shipledger" / "devnet" / "state.json").read_text())["pid"]
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, KeyError, IndexError):
        return 0.0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="artifacts in the CLI batch")
    parser.add_argument("--sample", type=int, default=500, help="artifacts in the web3 loop")
    opts = parser.parse_args()

    header(f"register: `shipledger register --batch` ({opts.count} artifacts) vs a web3.py loop ({opts.sample})")
    with devnet() as (workdir, state):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
        env["SHIPLEDGER_PRIVATE_KEY"] = state["accounts"]["registrar"]["private_key"]

        # Warm-up and fixed cost: a one-artifact batch (start-up, web3 import, checks, one tx).
        write_batch(workdir / "one.jsonl", "bench-warm", 1)
        cli = [SHIPLEDGER, "register", "--batch", "one.jsonl", "--json"]
        fixed, proc = timed_run(cli, cwd=workdir, env=env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"shipledger register --batch exited {proc.returncode}: {proc.stderr.strip()}")

        loop_seconds, loop_digests = web3_loop(state, opts.sample)
        loop_rate = opts.sample / loop_seconds

        write_batch(workdir / "batch.jsonl", "bench", opts.count)
        cli[3] = "batch.jsonl"
        cpu_before, anvil_before = children_cpu(), anvil_cpu(workdir)
        seconds, proc = timed_run(cli, cwd=workdir, env=env, timeout=600)
        cli_cpu, node_cpu = children_cpu() - cpu_before, anvil_cpu(workdir) - anvil_before
        if proc.returncode != 0:
            raise RuntimeError(f"shipledger register --batch exited {proc.returncode}: {proc.stderr.strip()}")
        result = json.loads(proc.stdout)
        cli_rate = opts.count / seconds

        # Spot-check that the records are on the ledger.
        from shipledger import Ledger

        lines = (workdir / "batch.jsonl").read_text().splitlines()
        ledger = Ledger.connect(state["rpc_url"], state["book"])
        for i in sorted({0, opts.count // 2, opts.count - 1}):
            if ledger.digest_of("bench", str(i)) != json.loads(lines[i])["digest"]:
                raise RuntimeError(f"artifact bench {i} is not on the ledger after the CLI batch")
        if ledger.digest_of("bench-web3", str(opts.sample - 1)) != "sha256:" + loop_digests[-1].hex():
            raise RuntimeError("the web3 loop's last artifact is not on the ledger")

        gas = sum(t["gas_used"] for t in result["transactions"])
        print(f"   shipledger register --batch: {opts.count} artifacts in {seconds:.2f} s, {len(result['transactions'])} transactions"
              f" ({gas / opts.count:,.0f} gas/artifact) -> {cli_rate:,.0f} artifacts/s")
        print(f"     of which fixed cost (one-artifact batch, process start to exit): {fixed:.2f} s;"
              f" without it {opts.count / max(seconds - fixed, 1e-9):,.0f} artifacts/s")
        print(f"     CPU during the batch: shipledger process {cli_cpu:.2f} s, anvil {node_cpu:.2f} s"
              f" ({'client-bound' if cli_cpu > node_cpu else 'node-bound'})")
        print(f"   web3.py loop, one register tx each: {opts.sample} artifacts in {loop_seconds:.2f} s -> {loop_rate:,.0f} artifacts/s"
              f" (extrapolated to {opts.count}: {opts.count / loop_rate:.1f} s)")
        print(f"   ratio CLI/web3 loop: {cli_rate / loop_rate:.1f}x")
        print(f"   target >= {TARGET:,.0f} artifacts/s: {'met' if cli_rate >= TARGET else 'MISSED'}"
              f"{'' if cli_rate >= TARGET else f' ({cli_rate / TARGET:.0%} of it)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

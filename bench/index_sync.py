"""`Index.sync` from zero over 100,000 events vs a plain loop of `eth_getLogs` + web3 decoding over
the same blocks, on the same anvil in the same run.

The chain: a fresh anvil with the suite v2 deployed with the devnet's bootstrap consortium (three
organisations, their stewards and approvers) and 20 services with a one-approval policy in `prod` in
the bootstrap (so no governance proposals are needed), then about 84% artifact registrations (registerBatch, 200 per
transaction, 2 per block), 15% approvals (one `approve` transaction each, as approvers send them,
50 per block) and 1% deployments (start at 10%, canary verdict, promote to 100%, complete; every
tenth rolled back, with an incident opened naming it, acknowledged, mitigated by that rollback and
resolved). Blocks are mined by hand (automine off) so a block holds many transactions, as on a busy
chain. Building it takes a few minutes, so it is cached in bench/out/events-N/ (anvil's
--dump-state / --load-state, the address book and a manifest); reruns load it in seconds. The
counts per event are checked against what the peer loop decodes, so a chain that was built wrong
stops the run.

Measured, in this order, each from a fresh temp dir:
- shipledger: `Index.open(fresh file).sync(ledger)`: every log, decoded, resolved, written to SQLite
  with block hashes and timestamps, committed. Rate = events / wall seconds. Target >= 10,000/s.
- peer: for each chunk of blocks `eth_getLogs` (both addresses, every topic), then web3's
  `get_event_data` per log. It stores nothing and fetches no block timestamps: it is the floor of
  what any tool reading the logs must do, so a ratio above 1 means the indexer does more work and
  is still faster.

    .venv/bin/python bench/index_sync.py [--events 100000] [--chunk 5000] [--rebuild]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from _common import ROOT, header

OUT = ROOT / "bench" / "out"
TARGET = 10_000.0  # events/s
SERVICES = [f"svc-{i:02d}" for i in range(20)]
ENV = "prod"
BATCH = 200  # artifacts per registerBatch transaction


def artifact_digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(f"shipledger-bench artifact {i}".encode()).hexdigest()


def artifact_service(i: int) -> str:
    return SERVICES[i % len(SERVICES)]


class Rpc:
    """Plain JSON-RPC on one kept-alive HTTP session: building the chain is not what is measured,
    so it goes as fast as anvil takes it."""

    def __init__(self, url: str):
        import requests

        self.url = url
        self.session = requests.Session()

    def call(self, method: str, params: list):
        reply = self.session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait(self, tx_hash: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while (receipt := self.call("eth_getTransactionReceipt", [tx_hash])) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no receipt for {tx_hash}")
            time.sleep(0.05)
        if receipt["status"] != "0x1":
            raise RuntimeError(f"transaction {tx_hash} reverted")
        return receipt


def _send_and_mine(rpc: Rpc, txs: list[dict], per_block: int, progress: str) -> None:
    """eth_sendTransaction from anvil's unlocked dev accounts with automine off, `evm_mine` after
    every `per_block` of them, then mine until the pool is empty. Many transactions per block, as
    on a busy chain: anvil's cost per block grows with the size of the state (about 0.5 s per block
    at 100,000 artifacts), so one block per transaction would take hours. One sender's
    transactions are mined in nonce order; a transaction that reverts is caught later by the event
    counts."""
    for sent, tx in enumerate(txs, 1):
        rpc.call("eth_sendTransaction", [tx])
        if sent % per_block == 0 or sent == len(txs):
            rpc.call("evm_mine", [])
            print(f"\r   {progress}: {sent}/{len(txs)} transactions sent", end="", flush=True)
    while int(rpc.call("txpool_status", [])["pending"], 16):  # what did not fit in its block
        rpc.call("evm_mine", [])
    print()


def build_chain(node, book_path: Path, events: int) -> dict:
    """Fill a fresh anvil with about `events` events of the suite; return the manifest."""
    from eth_abi import encode as abi_encode
    from eth_account import Account

    from eth_utils import keccak

    from shipledger.client import Ledger
    from shipledger.network.devnet import dev_bootstrap, dev_private_keys

    keys = dev_private_keys(11)  # the devnet's parts (network/devnet.DEV_ROLES)
    accounts = [Account.from_key(k).address for k in keys]
    registrar, deployer, responder, approvers = accounts[1], accounts[2], accounts[3], accounts[4:7]
    policies = [(service, ENV, {"threshold": 1, "min_organisations": 1}) for service in SERVICES]
    admin = Ledger.deploy_suite(node.url, Account.from_key(keys[0]), dev_bootstrap(accounts, policies=policies),
                                out=book_path)
    rpc = Rpc(node.url)
    start_block = min(c["block"] for c in admin.book["contracts"].values())
    setup = sum(peer_counts(admin, rpc.call("eth_getLogs", [{"fromBlock": hex(start_block), "toBlock": "latest"}])).values())
    # registerBatch(ArtifactInput[]) of suite v2 (kind after version)
    register_batch_args = "(bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string)[]"
    register_batch_selector = keccak(text=f"registerBatch({register_batch_args})")[:4]

    deployments = max(1, events // 400)
    rolled_back = len(range(9, deployments, 10))
    deployment_events = deployment_records(deployments, rolled_back)
    approvals = int(events * 0.15)
    registrations = events - setup - approvals - deployment_events
    if registrations < max(approvals, deployments):
        raise SystemExit(f"--events {events} is too few for this mix; use 2000 or more")
    rpc.call("evm_setAutomine", [False])

    # Registrations: registerBatch calldata encoded with eth_abi, as Ledger.register_many does.
    zero = b"\0" * 32
    items = []
    for i in range(registrations):
        digest = bytes.fromhex(artifact_digest(i)[7:])
        commit = hashlib.sha1(f"commit {i}".encode()).digest().ljust(32, b"\0")
        items.append((digest, artifact_service(i), f"1.{i // 1000}.{i % 1000}", 0, commit, 1_700_000_000 + i, zero, zero,
                      f"oci://registry.example/{artifact_service(i)}@{artifact_digest(i)}"))
    first = register_batch_selector + abi_encode([register_batch_args], [items[:BATCH]])
    gas = int(int(rpc.call("eth_estimateGas", [{"from": registrar, "to": admin.registry.address, "data": "0x" + first.hex()}]), 16) * 1.25)
    txs = [{"from": registrar, "to": admin.registry.address, "gas": hex(gas),
            "data": "0x" + (register_batch_selector + abi_encode([register_batch_args], [items[i : i + BATCH]])).hex()}
           for i in range(0, registrations, BATCH)]
    _send_and_mine(rpc, txs, 2, f"{registrations} registrations")

    # Approvals: one approve transaction each, approvers taking turns, 50 per block.
    def approve(k: int) -> dict:
        data = admin.registry.functions.approve(bytes.fromhex(artifact_digest(k)[7:]), artifact_service(k), ENV, "lgtm")
        return {"from": approvers[k % 3], "to": admin.registry.address, "data": data._encode_transaction_data()}

    vote_gas = int(int(rpc.call("eth_estimateGas", [approve(0)]), 16) * 1.5)
    _send_and_mine(rpc, [{**approve(k), "gas": hex(vote_gas)} for k in range(approvals)], 50, f"{approvals} approvals")

    # Deployments of approved artifacts: ids are sequential from 1 and one sender's transactions are
    # mined in order, so the whole story can be sent ahead. Every tenth deployment is rolled back
    # right after it completed (while it is live); the incidents about them come after.
    fns = admin.ledger.functions
    txs = []
    for d in range(deployments):
        k, deployment_id = d * (approvals // deployments), d + 1
        digest, service = bytes.fromhex(artifact_digest(k)[7:]), artifact_service(k)
        steps = [(fns.start(digest, service, ENV, 10), 400_000),
                 # a Pass: suite v2 blocks promote and complete after a Marginal verdict until a later Pass
                 (fns.recordAnalysis(deployment_id, 9750 if d % 3 else 9100, 1, zero, "", "bench"), 200_000),
                 (fns.promote(deployment_id, 100), 150_000), (fns.complete(deployment_id), 200_000)]
        if d % 10 == 9:
            steps.append((fns.rollback(deployment_id, "error rate"), 200_000))
        txs += [{"from": deployer, "to": admin.ledger.address, "gas": hex(g), "data": fn._encode_transaction_data()} for fn, g in steps]
    _send_and_mine(rpc, txs, 20, f"{deployments} deployments")
    txs = []
    for incident_id, d in enumerate(range(9, deployments, 10), 1):
        k = d * (approvals // deployments)
        steps = [fns.openIncident((artifact_service(k), ENV, 2, [d + 1], "error rate after deploy", zero, "")),
                 fns.acknowledge(incident_id), fns.mitigate(incident_id, d + 1), fns.resolve(incident_id, zero, "")]
        txs += [{"from": responder, "to": admin.ledger.address, "gas": hex(400_000), "data": fn._encode_transaction_data()}
                for fn in steps]
    if txs:
        _send_and_mine(rpc, txs, 20, f"{rolled_back} incidents")
    rpc.call("evm_setAutomine", [True])
    head = int(rpc.call("eth_blockNumber", []), 16)
    return {
        "events": events, "setup_events": setup, "registrations": registrations, "approvals": approvals,
        "deployments": deployments, "rolled_back": rolled_back, "expected_events": setup + registrations + approvals + deployment_events,
        "start_block": start_block, "head_block": head, "services": SERVICES, "environment": ENV,
        "approvers": approvers, "registrar": registrar,
    }


@contextmanager
def chain_with_events(events: int, rebuild: bool = False):
    """A running anvil holding the bench chain of `events` events, from the cache in bench/out/ or
    built now (and cached). Yields (node, book path, manifest); stops anvil afterwards."""
    from shipledger.network.devnet import Anvil

    cache = OUT / f"events-{events}"
    state, book, manifest_path = cache / "state.json", cache / "book.json", cache / "manifest.json"
    if rebuild or not manifest_path.is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        print(f"   building the chain ({events} events; cached in {cache.relative_to(ROOT)} for reruns)")
        started = time.perf_counter()
        # Blocks over half the gas limit raise the EIP-1559 base fee block after block: past ~100,000
        # events the dev accounts' default 10,000 ETH no longer paid, and at 160,000 not even 10^8
        # ETH did. A block gas limit far above what one block holds keeps the base fee falling.
        node = Anvil.start(extra_args=("--dump-state", str(state), "--balance", "100000000", "--gas-limit", "1000000000"))
        try:
            manifest = build_chain(node, book, events)
        finally:
            node.process.terminate()  # anvil writes the dump on exit: give it time (it is large)
            node.process.wait(timeout=600)
        manifest["built_in_seconds"] = round(time.perf_counter() - started, 1)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks the cache complete
        print(f"   built in {manifest['built_in_seconds']:.0f} s; state dump {state.stat().st_size / 2**20:.0f} MiB")
    manifest = json.loads(manifest_path.read_text())
    started = time.perf_counter()
    node = Anvil.start(extra_args=("--load-state", str(state)))
    try:
        from shipledger.network.devnet import rpc_call

        # --load-state returns before big states are in; wait until the head is back.
        while int(rpc_call(node.url, "eth_blockNumber", timeout=60), 16) < manifest["head_block"]:
            time.sleep(0.2)
        print(f"   anvil loaded the cached chain in {time.perf_counter() - started:.1f} s"
              f" (blocks {manifest['start_block']}..{manifest['head_block']})")
        yield node, book, manifest
    finally:
        node.stop()


def event_table(ledger) -> dict:
    """(address, topic0) -> abi item for every record event of the suite's three contracts (the
    events the contracts fold into their history heads: what the index stores)."""
    from eth_utils import keccak

    from shipledger._internal import artifacts
    from shipledger._internal.history import is_record
    from shipledger._internal.revert import canonical_type

    table = {}
    for name, contract in (("ReleaseRegistry", ledger.registry), ("Governance", ledger.governance),
                           ("DeploymentLedger", ledger.ledger)):
        for item in artifacts.abi(name):
            if item["type"] == "event" and is_record(name, item["name"]):
                signature = f"{item['name']}({','.join(canonical_type(i) for i in item['inputs'])})"
                table[(contract.address.lower(), keccak(text=signature))] = item
    return table


def peer_counts(ledger, logs: list) -> dict:
    """Records per event name among raw logs (TimelockController's own events are not records)."""
    table, counts = event_table(ledger), {}
    for log in logs:
        item = table.get((log["address"].lower(), bytes.fromhex(log["topics"][0][2:])))
        if item is not None:
            counts[item["name"]] = counts.get(item["name"], 0) + 1
    return counts


def peer_scan(ledger, first: int, last: int, chunk: int) -> tuple[float, dict]:
    """Seconds for eth_getLogs + get_event_data over [first, last]; and the count per event name."""
    from web3._utils.events import get_event_data

    table = event_table(ledger)
    addresses = [ledger.registry.address, ledger.governance.address, ledger.ledger.address]
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for low in range(first, last + 1, chunk):
        logs = ledger.w3.eth.get_logs({"address": addresses, "fromBlock": low, "toBlock": min(low + chunk - 1, last)})
        for log in logs:
            item = table.get((log["address"].lower(), bytes(log["topics"][0])))
            if item is None:
                continue  # not a record (TimelockController's own events): the index skips them too
            decoded = get_event_data(ledger.w3.codec, item, log)
            counts[decoded["event"]] = counts.get(decoded["event"], 0) + 1
    return time.perf_counter() - started, counts


def deployment_records(deployments: int, rolled_back: int) -> int:
    """Start, canary verdict, promote, complete per deployment; per rolled-back one its rollback and
    its incident: opened, acknowledged, mitigated, a resolve approval and resolved (suite v2)."""
    return 4 * deployments + 6 * rolled_back


def check_counts(manifest: dict, counts: dict) -> None:
    """The chain holds what build_chain meant to put there (a reverted batch would show here)."""
    expected = {
        "ArtifactRegistered": manifest["registrations"], "ArtifactApproved": manifest["approvals"],
        "DeploymentStarted": manifest["deployments"], "DeploymentCompleted": manifest["deployments"],
        "DeploymentRolledBack": manifest["rolled_back"], "IncidentResolved": manifest["rolled_back"],
    }
    wrong = {name: (counts.get(name, 0), n) for name, n in expected.items() if counts.get(name, 0) != n}
    expected_total = (manifest["setup_events"] + manifest["registrations"] + manifest["approvals"]
                      + deployment_records(manifest["deployments"], manifest["rolled_back"]))
    if wrong or sum(counts.values()) != expected_total:
        raise RuntimeError(f"the chain does not hold the events it should (got, expected): {wrong or sum(counts.values())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events on the chain (default 100000)")
    parser.add_argument("--chunk", type=int, default=5000, help="blocks per eth_getLogs in the peer loop")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached chain")
    opts = parser.parse_args()

    from shipledger.client import Ledger
    from shipledger.compliance.index import Index

    header(f"index sync: Index.sync from zero vs eth_getLogs + web3 decoding ({opts.events} events)")
    with chain_with_events(opts.events, opts.rebuild) as (node, book, manifest):
        ledger = Ledger.connect(node.url, book)
        first, last = manifest["start_block"], manifest["head_block"]
        workdir = Path(tempfile.mkdtemp(prefix="shipledger-bench-index-"))
        try:
            started = time.perf_counter()
            index = Index.open(workdir / "index.sqlite")
            result = index.sync(ledger)
            index.close()
            sync_seconds = time.perf_counter() - started
            size = (workdir / "index.sqlite").stat().st_size
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        peer_seconds, counts = peer_scan(ledger, first, last, opts.chunk)
        check_counts(manifest, counts)
        total = sum(counts.values())
        if result.events != total:
            raise RuntimeError(f"Index.sync stored {result.events} events, the chain holds {total}")

        rate, peer_rate = total / sync_seconds, total / peer_seconds
        print(f"   chain: {total:,} events in blocks {first}..{last} ({last - first + 1:,} blocks)")
        print(f"   Index.sync from zero: {sync_seconds:.2f} s -> {rate:,.0f} events/s (SQLite file {size / 2**20:.0f} MiB)")
        print(f"   eth_getLogs ({opts.chunk}-block chunks) + get_event_data: {peer_seconds:.2f} s -> {peer_rate:,.0f} events/s"
              " (decodes only: no timestamps, no storage)")
        print(f"   ratio Index.sync / peer loop: {rate / peer_rate:.2f}x")
        print(f"   target >= {TARGET:,.0f} events/s: {'met' if rate >= TARGET else 'MISSED'}"
              f"{'' if rate >= TARGET else f' ({rate / TARGET:.0%} of it)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Faults on the consortium engine (issue 11), on a network of this module's own (the `net` fixture of
test_consortium.py): a node restarted in the middle of a 2,000-artifact `register --batch`, and a
real Clique reorganisation that the index must rewind.

Clique with 4 signers lets a signer seal at most one of any 3 consecutive blocks, so a signer cut off
from its peers seals one block of its own and stalls, while the other three go on with a heavier
chain; reconnected, it reorganises onto theirs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest
from eth_utils import keccak

from shipledger.compliance.index import record_tables
from shipledger.network.devnet import rpc_call
from support import CLI, assert_no_traceback, clean_env, digest_for, ok, unique
from test_consortium import BLOCK_PERIOD, caught_up, net, wait_until  # noqa: F401 - net: this module's own network

pytestmark = pytest.mark.consortium

REGISTERED = "0x" + keccak(
    text="ArtifactRegistered(bytes32,bytes32,bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string,address,bytes32)"
).hex()
LOG_CHUNK = 20  # blocks per eth_getLogs: the count is read the way a node that caps ranges needs


def registry(net) -> str:
    return json.loads(net.book.read_text())["contracts"]["ReleaseRegistry"]["address"]


def registered_logs(net, url: str, service: str, since: int) -> list[dict]:
    """The ArtifactRegistered logs of `service` from block `since` to url's head, by eth_getLogs in
    LOG_CHUNK-block ranges (serviceKey, the second topic, is keccak of the name)."""
    service_key = "0x" + keccak(text=service).hex()
    head, logs = net.head(url), []
    for start in range(since, head + 1, LOG_CHUNK):
        logs += rpc_call(url, "eth_getLogs", [{"address": registry(net), "fromBlock": hex(start),
                                               "toBlock": hex(min(start + LOG_CHUNK - 1, head)),
                                               "topics": [REGISTERED, None, service_key]}], timeout=30)
    return logs


def node_url(net, number: int) -> str:
    return net.info["nodes"][number - 1]["rpc_url"]


def peers_of(url: str) -> int:
    return int(rpc_call(url, "net_peerCount"), 16)


# ============================================================================ a node restarted mid-batch


def test_node_restarted_mid_batch_every_artifact_registered_once(net, tmp_path):
    service = unique()
    digests = [digest_for(f"{service}@{n}") for n in range(2000)]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"digest": d, "service": service, "version": str(n)}) + "\n"
                             for n, d in enumerate(digests)))
    # the registrar's organisation's node first, then the others (as a pipeline of org1 would list them)
    org = net.account("registrar")["org"]
    number = next(i for i, n in enumerate(net.info["nodes"], 1) if n["org"] == org)
    urls = [node_url(net, number)] + [n["rpc_url"] for n in net.info["nodes"] if n["org"] != org]
    witness = urls[1]  # a node that stays up, to watch the chain from
    since = net.head(witness)
    command = [*CLI, "register", "--batch", str(batch), "--rpc", ",".join(urls), "--json"]
    env = clean_env(SHIPLEDGER_PRIVATE_KEY=net.key("registrar"), SHIPLEDGER_DEPLOYMENT=str(net.book))
    proc = subprocess.Popen(command, cwd=net.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("a first transaction of the batch confirmed",
                   lambda: proc.poll() is not None or registered_logs(net, witness, service, since), 120, every=0.1)
        assert proc.poll() is None, f"the batch ended before the restart: {proc.communicate()}"
        ok(net.network("stop-node", str(number), "--json"))
        # the fault hit the batch in the middle: the chain has only part of it (the batch may have
        # exited on losing its node, or go on through another)
        confirmed_at_stop = len(registered_logs(net, witness, service, since))
        assert 0 < confirmed_at_stop < 2000, confirmed_at_stop
        ok(net.network("start-node", str(number), "--json"))
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_no_traceback(err)
    first = json.loads(out)
    print(f"at the stop {confirmed_at_stop} confirmed; the batch exited {proc.returncode}: {err.strip()}")
    if proc.returncode == 0:  # it went on through another node
        assert (first["registered"], first["already"], first["error"]) == (2000, 0, None), first
    else:  # or it stopped saying where to resume, and the same command finishes it
        assert proc.returncode == 1 and "run the same command again" in err and first["resume_at"], err
        rerun = ok(net.run("register", "--batch", batch, "--rpc", ",".join(urls), "--json", key=net.key("registrar")))
        assert rerun["registered"] + rerun["already"] == 2000 and rerun["resume_at"] is None, rerun
    caught_up(net, node_url(net, number), witness)

    # on the chain: one ArtifactRegistered per digest, read from the restarted node and from another
    for url in (node_url(net, number), witness):
        logs = registered_logs(net, url, service, since)
        assert sorted(log["topics"][1] for log in logs) == sorted("0x" + d.removeprefix("sha256:") for d in digests), url
    chain = {(int(log["blockNumber"], 16), log["transactionHash"], int(log["logIndex"], 16)) for log in logs}

    # the index and `history` say the same
    db = tmp_path / "index.sqlite"
    ok(net.run("index", "sync", "--db", db, "--rpc", witness, "--json"))
    events = ok(net.run("history", "--service", service, "--kind", "registered", "--db", db, "--rpc", witness, "--json"))["events"]
    assert {(e["block"], e["tx"], e["log_index"]) for e in events} == chain and len(events) == 2000
    with sqlite3.connect(db) as index:
        rows = index.execute("SELECT digest, count(*) FROM artifact_registered WHERE service = ? GROUP BY digest", (service,)).fetchall()
    assert len(rows) == 2000 and {count for _, count in rows} == {1}


# ============================================================================ a Clique reorganisation


def enode_of(url: str) -> str:
    return rpc_call(url, "admin_nodeInfo")["enode"]


def index_rows(db) -> dict[str, list]:
    """Every row of the index's event tables, in a stable order: what two indexes of one chain share
    (the blocks table also holds each sync's checkpoints, which differ by when the syncs ran)."""
    with sqlite3.connect(db) as index:
        return {table: index.execute(f"SELECT * FROM {table} ORDER BY block_number, log_index").fetchall()
                for table in ["events", *record_tables()]}


def test_lone_signer_block_is_orphaned_and_the_index_rewinds_it(net, tmp_path):
    lone = net.info["nodes"][3]
    lone_url = lone["rpc_url"]
    others = [n["rpc_url"] for n in net.info["nodes"][:3]]
    lone_enode, other_enodes = enode_of(lone_url), [enode_of(u) for u in others]
    service = unique()
    try:
        def recent_signers() -> list[str]:
            newest = net.head(lone_url)
            return [rpc_call(lone_url, "clique_getSigner", [hex(n)]) for n in (newest - 1, newest)]

        def cut_off() -> bool:
            """removePeer drops the peer and its static entry, on both sides (the nodes run with no
            discovery and no trusted peers, so then nothing dials it again). Asked again until it holds:
            a peer dropped on one side may have dialled back before the other side's call."""
            for url, enode in zip(others, other_enodes):
                assert rpc_call(url, "admin_removePeer", [lone_enode]) and rpc_call(lone_url, "admin_removePeer", [enode])
            time.sleep(0.5)
            return peers_of(lone_url) == 0 and all(peers_of(u) == 2 for u in others)

        def reconnect() -> None:
            for url, enode in zip(others, other_enodes):
                rpc_call(lone_url, "admin_addPeer", [enode])
                rpc_call(url, "admin_addPeer", [lone_enode])

        # Hold its sealing until the others have sealed the two newest blocks, then cut it off: it may
        # then seal the next block on its own (it is not among its chain's recent signers). A seal
        # already under way when the miner stops still lands (Clique delays an out-of-turn seal by up
        # to a second or two), also after the cut; then it is a recent signer on its own chain and can
        # never seal again alone, so that try is undone and made again.
        rpc_call(lone_url, "miner_stop")
        for attempt in range(3):
            time.sleep(2 * BLOCK_PERIOD)  # a seal in flight lands meanwhile
            wait_until("the 2 newest blocks sealed by the others", lambda: lone["validator"].lower() not in recent_signers(), 30)
            wait_until("the node cut off", cut_off, 30)
            time.sleep(2 * BLOCK_PERIOD)
            if lone["validator"].lower() not in recent_signers():
                break
            reconnect()
            wait_until("every node with its 3 peers again", lambda: all(peers_of(n["rpc_url"]) == 3 for n in net.info["nodes"]), 60)
        else:
            pytest.fail("a seal of the lone node's own landed after each of 3 cuts")

        # A registration through it: only its pool has the transaction, and its one block holds it.
        proc = subprocess.Popen([*CLI, "register", "--digest", digest_for(service), "--service", service, "--version", "1",
                                 "--rpc", lone_url, "--json"], cwd=net.workdir, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                env=clean_env(SHIPLEDGER_PRIVATE_KEY=net.key("registrar"), SHIPLEDGER_DEPLOYMENT=str(net.book)))
        wait_until("the registration in the lone node's pool",
                   lambda: int(rpc_call(lone_url, "txpool_status")["pending"], 16) > 0 or proc.poll() is not None, 60)
        rpc_call(lone_url, "miner_start")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        registered = json.loads(out)
        orphan = registered["block_number"]
        orphan_hash = net.block_hash(orphan, lone_url)
        assert rpc_call(lone_url, "clique_getSigner", [hex(orphan)]) == lone["validator"].lower()

        # The index, pointed at the lone node, sees its block and the event in it.
        db = tmp_path / "index.sqlite"
        ok(net.run("index", "sync", "--db", db, "--rpc", lone_url, "--json"))
        [event] = [row for row in index_rows(db)["events"] if row[10] == service]
        assert (event[0], event[2], event[3]) == (orphan, orphan_hash, registered["tx_hash"])

        # It stalls (signed recently) while the three go on; wait until their chain is heavier.
        def difficulty(url):
            return int(rpc_call(url, "eth_getBlockByNumber", ["latest", False])["totalDifficulty"], 16)

        def heavier() -> bool:
            assert peers_of(lone_url) == 0, "the lone node has a peer again"
            return difficulty(others[0]) > difficulty(lone_url) + 2
        wait_until("the three's chain heavier than the lone one", heavier, 60)
        assert net.head(lone_url) == orphan
    finally:
        rpc_call(lone_url, "miner_start")
        reconnect()

    # Reconnected, it takes the heavier chain: the block at that height is another one now.
    wait_until("the lone node reorganised", lambda: net.block_hash(orphan, lone_url) != orphan_hash, 60)
    wait_until("every node with its 3 peers again", lambda: all(peers_of(n["rpc_url"]) == 3 for n in net.info["nodes"]), 60)
    caught_up(net, lone_url, others[0])
    assert net.block_hash(orphan, lone_url) == net.block_hash(orphan, others[0])
    # The orphaned transaction went back to the pool: wait for it to be mined again (it may not be,
    # if a node drops it; then the chain has no such event, and neither must the index).
    try:
        receipt = wait_until("the registration mined again",
                             lambda: rpc_call(lone_url, "eth_getTransactionReceipt", [registered["tx_hash"]]), 30)
    except AssertionError:
        receipt = None

    synced = ok(net.run("index", "sync", "--db", db, "--rpc", lone_url, "--json"))
    assert synced["rewound_from"] is not None and synced["rewound_from"] >= orphan, synced
    fresh = tmp_path / "fresh.sqlite"
    ok(net.run("index", "sync", "--db", fresh, "--rpc", lone_url, "--json"))
    rewound, fresh_rows = index_rows(db), index_rows(fresh)
    assert rewound == fresh_rows
    ours = [row for row in rewound["events"] if row[10] == service]
    if receipt is None:
        assert ours == []
    else:
        [event] = ours
        moved_to = int(receipt["blockNumber"], 16)
        assert (event[0], event[2], event[3]) == (moved_to, receipt["blockHash"], registered["tx_hash"])
        assert event[2] != orphan_hash
    print(f"lone block {orphan} {orphan_hash[:10]} orphaned; the registration now in block "
          f"{receipt and int(receipt['blockNumber'], 16)}; rewound from {synced['rewound_from']}")

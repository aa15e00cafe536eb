"""The index (shipledger/compliance/index.py): sync from a real devnet into a real SQLite file, decoded record
tables, chunks that follow the node's limits, confirmations, crashes, a devnet restarted under the
index, the history filters of the CLI, and the binding to one suite.

The module's devnet (`dn`) only ever grows; tests that need a chain of their own (restarts, reverts)
start a separate anvil."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from eth_abi import encode as abi_encode
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipledger import ArtifactSpec, Ledger
from shipledger.network.devnet import Anvil, dev_bootstrap, dev_private_keys, free_port, rpc_call
from eth_utils import keccak
from shipledger.compliance.index import Index, IndexMismatch, event_types, record_tables, snake_case
from support import ENV, digest_for, fails, ok, unique

OWN_CHAIN_ID = 4242


# ============================================================================ helpers


def story(dn) -> dict:
    """One service through every kind of event: releases, canary, promotion, completion, a rollback
    under an incident, a rejection withdrawn, a signed approval, a revocation and a failed rollout."""
    service = unique()
    first = dn.release(service, "1.0.0")
    deployer, responder = dn.ledger("deployer"), dn.ledger("responder")
    d1 = deployer.start_deployment(first, service, ENV, 10)
    deployer.record_analysis(d1, 97.5, "pass", digest_for("report"), "https://reports/1", "judge-v1")
    deployer.promote(d1, 100)
    deployer.complete(d1)
    second = dn.register(service, "2.0.0")
    dn.approve(second, service, ENV, approvers=(0, 1))
    d2 = deployer.start_deployment(second, service, ENV, 100)
    incident = responder.open_incident(service, ENV, 2, "5xx after 2.0.0", [d2], digest_for("details"), "https://inc/1")
    deployer.rollback(d2, "errors")
    responder.acknowledge(incident)
    responder.mitigate(incident, d2)
    responder.resolve(incident, digest_for("postmortem"), "https://pm/1")
    third = dn.register(service, "3.0.0")
    dn.ledger("approver", 2).reject(third, service, ENV, "missing tests")
    dn.ledger("approver", 2).withdraw(third, service, ENV)
    dn.ledger("outsider").submit_approvals([dn.ledger("approver", 0).sign_approval(third, service, ENV)])
    dn.ledger("registrar").revoke(third, service, "CVE-2026-1")
    fourth = dn.release(service, "4.0.0")
    d4 = deployer.start_deployment(fourth, service, ENV, 50)
    deployer.fail(d4, "crashloop")
    return {"service": service, "digests": [first, second, third, fourth], "deployments": [d1, d2, d4],
            "incident": incident}


def flatten(event_type, args: dict) -> dict:
    """What the record table should hold for these args: snake_case columns, structs flattened,
    bools as 0/1, arrays as JSON text, integers of 2**63 or more as text."""
    def column(value):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, list):
            return json.dumps(value)
        if isinstance(value, int) and value >= 2**63:
            return str(value)
        return value

    out = {}
    for name, value in args.items():
        if isinstance(value, dict):
            out.update({f"{snake_case(name)}_{snake_case(k)}": column(v) for k, v in value.items()})
        else:
            out[snake_case(name)] = column(value)
    return out


GOVERNANCE_KINDS = {e.kind for e in event_types().values() if e.contract == "Governance"}


def without_governance(events: list) -> list:
    """Ledger.history() reads the registry and the ledger only; the index's Governance records are
    checked against the Governance contract's history head instead."""
    return [e for e in events if e.kind not in GOVERNANCE_KINDS]


def assert_index_matches_chain(index: Index, ledger: Ledger) -> None:
    """The index holds exactly the chain's records, each in its record table, every block hash current,
    and its last history head per contract is the contract's historyHead()."""
    assert without_governance(index.history()) == without_governance(ledger.history())
    for name, contract in (("ReleaseRegistry", ledger.registry), ("Governance", ledger.governance),
                           ("DeploymentLedger", ledger.ledger)):
        head, count = contract.functions.historyHead().call(block_identifier=int(index.meta()["checkpoint_block"]))
        assert index.history_heads().get(name, ("0x" + "00" * 24, 0)) == ("0x" + head[:24].hex(), count), name
    events = index.db.execute("SELECT * FROM events ORDER BY block_number, log_index").fetchall()
    tables = record_tables()
    for row in events:
        record = index.db.execute(f"SELECT * FROM {snake_case(row['event'])} WHERE block_number = ? AND log_index = ?",
                                  (row["block_number"], row["log_index"])).fetchone()
        assert record is not None, f"no record row for {row['event']} at {row['block_number']}/{row['log_index']}"
        expected = flatten(tables[snake_case(row["event"])], json.loads(row["args"]))
        assert {k: record[k] for k in expected} == expected
        assert (record["block_hash"], record["tx_hash"], record["timestamp"]) == (row["block_hash"], row["tx_hash"], row["timestamp"])
    assert sum(index.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables) == len(events)
    blocks = index.db.execute("SELECT number, hash, timestamp FROM blocks").fetchall()
    for block in blocks:
        header = rpc_call(ledger.w3.provider.endpoint_uri, "eth_getBlockByNumber", [hex(block["number"]), False])
        assert (block["hash"], block["timestamp"]) == (header["hash"], int(header["timestamp"], 16))
    assert {row["block_number"] for row in events} <= {b["number"] for b in blocks}
    meta = index.meta()
    assert int(meta["checkpoint_block"]) in {b["number"] for b in blocks}


class RefusingProxy:
    """A real HTTP JSON-RPC proxy in front of a node that refuses eth_getLogs the way public nodes do:
    mode 'range' refuses spans wider than `limit` blocks ("block range too large", as Erigon/QuickNode),
    mode 'results' refuses answers of more than `limit` logs (as Infura/Besu: "query returned more than
    10000 results"). It records every eth_getLogs range and whether it was refused. With
    strip_timestamps it also drops anvil's blockTimestamp from logs, as nodes without it answer."""

    def __init__(self, upstream: str, mode: str, limit: int, strip_timestamps: bool = False):
        self.upstream, self.mode, self.limit, self.strip = upstream, mode, limit, strip_timestamps
        self.ranges: list[tuple[int, int, bool]] = []  # (from, to, refused)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls = body if isinstance(body, list) else [body]
                replies = [proxy.answer(call) for call in calls]
                data = json.dumps(replies if isinstance(body, list) else replies[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, call: dict) -> dict:
        reply = requests.post(self.upstream, json=call, timeout=30).json()
        if call["method"] == "eth_getLogs":
            span = call["params"][0]
            start, end = int(span["fromBlock"], 16), int(span["toBlock"], 16)
            if self.mode == "range" and end - start + 1 > self.limit:
                reply = {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": "block range too large"}}
            elif self.mode == "results" and len(reply.get("result", [])) > self.limit:
                reply = {"jsonrpc": "2.0", "id": call["id"],
                         "error": {"code": -32005, "message": "query returned more than 10000 results"}}
            self.ranges.append((start, end, "error" in reply))
            for log in reply.get("result", []) if self.strip else []:
                log.pop("blockTimestamp", None)
        return reply

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def own_chain(tmp_path):
    """A separate anvil (another chain id than the module's devnet) with the suite deployed by dev key 0
    and the devnet's bootstrap consortium (dev key 1 registers), so a redeploy after a restart lands
    on the same addresses."""
    port = free_port()
    node = Anvil.start(port=port, chain_id=OWN_CHAIN_ID)
    keys = dev_private_keys(11)
    admin = Account.from_key(keys[0])
    book = tmp_path / "own.json"
    Ledger.deploy_suite(node.url, admin, dev_bootstrap([Account.from_key(k).address for k in keys]), out=book)
    chain = {"node": node, "port": port, "book": book, "admin": admin, "registrar": Account.from_key(keys[1])}
    yield chain
    chain["node"].stop()


# ============================================================================ sync and decoding


def test_sync_decodes_every_event_type_into_record_tables(dn, tmp_path):
    s = story(dn)
    index = Index.open(tmp_path / "index.sqlite")
    result = index.sync(dn.ledger())
    assert result.events == index.db.execute("SELECT count(*) FROM events").fetchone()[0] > 40
    assert result.rewound_from is None
    assert_index_matches_chain(index, dn.ledger())
    db, service = index.db, s["service"]
    first, _, third, _ = s["digests"]
    d1, d2, d4 = s["deployments"]
    key = lambda d: "0x" + d.removeprefix("sha256:")

    registered = db.execute("SELECT * FROM artifact_registered WHERE digest = ?", (key(first),)).fetchone()
    assert (registered["service"], registered["version"], registered["registrant"]) == (service, "1.0.0", dn.address("registrar"))
    signed = db.execute("SELECT * FROM artifact_approved WHERE digest = ? AND by_signature = 1", (key(third),)).fetchone()
    assert (signed["approver"], signed["org"], signed["environment"]) == (dn.address("approver", 0), 1, ENV)
    assert signed["policy_version"] == 1
    rejected = db.execute("SELECT * FROM artifact_rejected WHERE digest = ?", (key(third),)).fetchone()
    assert (rejected["approver"], rejected["org"], rejected["reason"]) == (dn.address("approver", 2), 3, "missing tests")
    withdrawn = db.execute("SELECT * FROM vote_withdrawn WHERE digest = ?", (key(third),)).fetchone()
    assert withdrawn["previous"] == 2  # it withdrew a rejection
    assert db.execute("SELECT reason, revoker FROM artifact_revoked WHERE digest = ?", (key(third),)).fetchone()[:] == (
        "CVE-2026-1", dn.address("registrar"))
    policy = db.execute("SELECT * FROM policy_set WHERE service = ?", (service,)).fetchone()
    assert (policy["new_policy_threshold"], policy["new_policy_min_organisations"], policy["new_policy_version"]) == (2, 2, 1)
    assert policy["old_policy_version"] == 0 and policy["new_policy_prior_environment"] == "0x" + "00" * 32
    started = db.execute("SELECT * FROM deployment_started WHERE id = ?", (d1,)).fetchone()
    assert (started["digest"], started["percent"], started["deployer"]) == (key(first), 10, dn.address("deployer"))
    canary = db.execute("SELECT * FROM canary_analysis_recorded WHERE id = ?", (d1,)).fetchone()
    assert (canary["score_basis_points"], canary["verdict"], canary["report_uri"], canary["judge"]) == (9750, 1, "https://reports/1", "judge-v1")
    assert (canary["service"], canary["environment"], canary["report_digest"]) == (service, ENV, key(digest_for("report")))
    promoted = db.execute("SELECT * FROM deployment_promoted WHERE id = ?", (d1,)).fetchone()
    assert (promoted["from_percent"], promoted["to_percent"], promoted["service"]) == (10, 100, service)
    rolled = db.execute("SELECT * FROM deployment_rolled_back WHERE id = ?", (d2,)).fetchone()
    assert (rolled["restored"], rolled["from_status"], rolled["reason"], rolled["environment"]) == (d1, 1, "errors", ENV)
    assert db.execute("SELECT reason FROM deployment_failed WHERE id = ?", (d4,)).fetchone()[0] == "crashloop"
    opened = db.execute("SELECT * FROM incident_opened WHERE id = ?", (s["incident"],)).fetchone()
    assert (json.loads(opened["suspects"]), opened["severity"], opened["title"]) == ([d2], 2, "5xx after 2.0.0")
    mitigated = db.execute("SELECT * FROM incident_mitigated WHERE id = ?", (s["incident"],)).fetchone()
    assert (mitigated["rollback_id"], mitigated["service"], mitigated["responder"]) == (d2, service, dn.address("responder"))
    resolved = db.execute("SELECT * FROM incident_resolved WHERE id = ?", (s["incident"],)).fetchone()
    assert resolved["postmortem_uri"] == "https://pm/1"
    slot = db.execute('SELECT * FROM approver_slot_assigned WHERE account = ?', (dn.address("approver", 1),)).fetchone()
    assert (slot["index"], slot["org"]) == (1, 2)
    assert [r[0] for r in db.execute("SELECT name FROM organisation_added ORDER BY org")][:3] == ["acme", "globex", "initech"]
    granted = db.execute("SELECT * FROM role_granted WHERE account = ?", (dn.address("deployer"),)).fetchone()
    assert granted["sender"] == dn.address("admin")
    assert index.meta()["registry"] == dn.ledger().registry.address and index.meta()["chain_id"] == "31337"
    mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_sync_is_incremental(dn, tmp_path):
    index = Index.open(tmp_path / "index.sqlite")
    first = index.sync(dn.ledger())
    checkpoint = int(index.meta()["checkpoint_block"])
    assert first.to_block == checkpoint
    service = unique()
    for version in ("1", "2", "3"):
        dn.register(service, version)
    second = index.sync(dn.ledger())
    assert second.from_block == checkpoint + 1 and second.events == 3
    assert [e.fields["version"] for e in index.history(service=service)] == ["1", "2", "3"]
    third = index.sync(dn.ledger())
    assert third.events == 0 and third.from_block > third.to_block
    assert_index_matches_chain(index, dn.ledger())


@pytest.mark.parametrize("mode, limit, strip", [("range", 5, False), ("results", 4, True)])
def test_sync_shrinks_chunks_when_the_node_refuses_and_grows_back(dn, tmp_path, mode, limit, strip):
    if mode == "results":
        # A node that answers no block of the chain cannot be synced at all: refuse more logs than the
        # densest block holds (the bootstrap's), and no fewer than `limit`.
        logs = rpc_call(dn.rpc_url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])
        limit = max(limit, max(Counter(log["blockNumber"] for log in logs).values()))
    service = unique()
    for version in range(30):  # a long sparse stretch, one event a block, so chunks can grow again
        dn.register(service, str(version))
    proxy = RefusingProxy(dn.rpc_url, mode, limit, strip)
    try:
        ledger = Ledger.connect(proxy.url, dn.book)
        index = Index.open(tmp_path / "index.sqlite")
        index.sync(ledger, chunk_blocks=64)
    finally:
        proxy.close()
    refused = [(a, b) for a, b, no in proxy.ranges if no]
    accepted = [(a, b) for a, b, no in proxy.ranges if not no]
    assert refused, "the proxy never refused: the test did not test shrinking"
    # Accepted ranges tile the history with no gap and no overlap.
    assert all(b + 1 == c for (_, b), (c, _) in zip(accepted, accepted[1:]))
    sizes = [b - a + 1 for a, b in accepted]
    if mode == "range":
        # Halved from 64 to 4 (the widest halving under the limit) and kept there: after a refusal
        # it tries a wider range only once in a while, not after every success.
        assert set(sizes[:-1]) == {4}
        assert len(refused) <= 4 + len(accepted) // 10 + 1
    else:
        # Shrunk where blocks are dense, then grew again: some range is wider than one before it.
        assert any(later > earlier for i, earlier in enumerate(sizes) for later in sizes[i + 1:])
    assert_index_matches_chain(index, dn.ledger())


def test_sync_with_confirmations_indexes_only_settled_blocks(dn, tmp_path):
    db = tmp_path / "index.sqlite"
    service = unique()
    digests = [dn.register(service, str(v)) for v in range(3)]  # the three newest blocks
    head = int(rpc_call(dn.rpc_url, "eth_blockNumber"), 16)
    settled = ok(dn.run("index", "sync", "--db", db, "--confirmations", "2", "--json"))
    assert settled["to_block"] == settled["checkpoint"] == head - 2
    index = Index.open(db)
    assert [e.fields["digest"] for e in index.history(service=service)] == ["0x" + digests[0][7:]]
    rest = ok(dn.run("index", "sync", "--db", db, "--json"))
    assert rest["from_block"] == head - 1 and rest["events"] == 2 and rest["total_events"] == settled["total_events"] + 2
    assert len(index.history(service=service)) == 3
    fails(dn.run("index", "sync", "--db", db, "--confirmations", "-1", "--json"), 2, "confirmations")


def test_sync_crash_in_a_chunk_commits_nothing_of_it(dn, tmp_path):
    """A sync killed (SIGKILL) in the middle of its third chunk's transaction leaves the first two
    chunks and a matching checkpoint; the next sync completes the index."""
    db = tmp_path / "index.sqlite"
    script = f"""
import os, signal, sqlite3
from shipledger import Ledger
from shipledger.compliance.index import Index
index = Index.open({str(db)!r})
chunks = []
def trace(sql):
    if sql.startswith("BEGIN IMMEDIATE"):
        chunks.append(1)
    if sql.startswith("INSERT INTO events") and len(chunks) >= 4:  # the bind, then chunks 1, 2, 3
        os.kill(os.getpid(), signal.SIGKILL)
index.db.set_trace_callback(trace)
index.sync(Ledger.connect({dn.rpc_url!r}, {str(dn.book)!r}), chunk_blocks=8)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    index = Index.open(db)
    checkpoint = int(index.meta()["checkpoint_block"])
    chain = dn.ledger().history()
    kept = [e for e in chain if e.block_number <= checkpoint]
    assert 0 < len(kept) < len(chain)
    assert without_governance(index.history()) == without_governance(kept)
    for table in ["events", *record_tables()]:
        assert index.db.execute(f"SELECT count(*) FROM {table} WHERE block_number > ?", (checkpoint,)).fetchone()[0] == 0
    index.sync(dn.ledger())
    assert_index_matches_chain(index, dn.ledger())


def test_sync_error_from_progress_keeps_committed_chunks(dn, tmp_path):
    index = Index.open(tmp_path / "index.sqlite")
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if len(calls) == 2:
            raise KeyboardInterrupt  # an operator's Ctrl-C between chunks

    with pytest.raises(KeyboardInterrupt):
        index.sync(dn.ledger(), progress=progress, chunk_blocks=4)
    checkpoint = int(index.meta()["checkpoint_block"])
    assert checkpoint == calls[-1][0] + int(index.meta()["start_block"]) - 1
    assert without_governance(index.history()) == without_governance(
        [e for e in dn.ledger().history() if e.block_number <= checkpoint])
    index.sync(dn.ledger())
    assert_index_matches_chain(index, dn.ledger())


def _value_strategy(item: dict):
    """Hypothesis values for an ABI input, as eth_abi.encode takes them."""
    kind = item["type"]
    if kind.endswith("[]"):
        return st.lists(_value_strategy({**item, "type": kind[:-2]}), max_size=5)
    if kind == "tuple":
        return st.tuples(*(_value_strategy(c) for c in item["components"]))
    if kind == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    if kind == "bool":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=80)
    if kind.startswith("bytes"):
        size = int(kind[5:] or 0)
        return st.binary(min_size=size, max_size=size) if size else st.binary(max_size=80)
    bits = int(kind.removeprefix("uint").removeprefix("int") or 256)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if kind.startswith("int") else st.integers(0, 2**bits - 1)


@pytest.mark.parametrize("event", sorted(event_types().values(), key=lambda e: e.name), ids=lambda e: e.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_decoder_agrees_with_eth_abi(event, data):
    """The sync decodes event data with a small decoder of its own (eth_abi costs ~80% of a sync);
    for every event of the suite it must give exactly what eth_abi gives, whatever the values."""
    plain = [i for i in event.inputs if not i.get("indexed")]
    values = data.draw(st.tuples(*(_value_strategy(i) for i in plain)))
    encoded = abi_encode(list(event.data_types), values)
    assert event.fast is not None, f"{event.name} has a shape the fast decoder does not cover"
    assert event.fast(encoded) == event.decode_with_eth_abi(encoded)


def test_event_text_that_is_not_utf8_is_indexed_mended(own_chain, tmp_path):
    """Solidity does not check that a string is UTF-8: one such event must not wedge the index."""
    ledger = Ledger.connect(own_chain["node"].url, own_chain["book"], signer=own_chain["registrar"])
    item = (bytes.fromhex(digest_for("bad-text")[7:]), "svc", "1", 0, bytes(32), 0, bytes(32), bytes(32), b"uri \xff\xfe end")
    # registerBatch(ArtifactInput[]) with the uri's bytes where a string goes (same encoding)
    selector = keccak(text="registerBatch((bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string)[])")[:4]
    data = selector + abi_encode(["(bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,bytes)[]"], [[item]])
    ledger._sender.wait(ledger._sender.send_data(ledger.registry.address, data, 2_000_000))
    index = Index.open(tmp_path / "index.sqlite")
    index.sync(ledger)
    [event] = index.history(kinds=["registered"])
    assert (event.fields["uri"], event.fields["version"], event.service) == ("uri \ufffd\ufffd end", "1", "svc")
    row = index.db.execute("SELECT uri, version FROM artifact_registered").fetchone()
    assert tuple(row) == ("uri \ufffd\ufffd end", "1")


def test_concurrent_syncs_of_one_file_never_both_write(dn, tmp_path):
    db = tmp_path / "index.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    procs = [subprocess.Popen([sys.executable, "-m", "shipledger.cli", "index", "sync", "--db", str(db), "--json"],
                              cwd=dn.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    # Each one synced, or found the other syncing and said so at once (it does not wait behind it).
    done = [json.loads(out) for p, (out, _) in zip(procs, outputs) if p.returncode == 0]
    busy = [err for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
    assert done and all("another process is syncing" in err for err in busy), busy
    assert all(p.returncode in (0, 1) for p in procs)
    # Between them they indexed every event once.
    assert sum(r["events"] for r in done) == done[0]["total_events"] == done[-1]["total_events"]
    assert_index_matches_chain(Index.open(db), dn.ledger())


# ============================================================================ reorgs and restarts


def test_devnet_restarted_under_the_index_is_detected_and_resynced(own_chain, tmp_path):
    admin = own_chain["admin"]
    before = Ledger.connect(own_chain["node"].url, own_chain["book"], signer=own_chain["registrar"])
    for name in ("alpha", "beta", "gamma"):
        _register(before, name)
    before.register(ArtifactSpec(digest=digest_for("old"), service="old-service", version="1"))
    index = Index.open(tmp_path / "index.sqlite")
    index.sync(before)
    old_checkpoint = int(index.meta()["checkpoint_block"])
    assert index.history(kinds=["registered"])

    # Restart anvil on the same port: a new chain from genesis; redeploying from the same key and
    # nonce puts the suite at the same addresses, with other blocks and other events.
    own_chain["node"].stop()
    own_chain["node"] = Anvil.start(port=own_chain["port"], chain_id=OWN_CHAIN_ID)
    keys = dev_private_keys(11)
    after = Ledger.deploy_suite(own_chain["node"].url, admin, dev_bootstrap([Account.from_key(k).address for k in keys]),
                                out=own_chain["book"])
    assert after.registry.address == before.registry.address
    _register(Ledger.connect(own_chain["node"].url, own_chain["book"], signer=own_chain["registrar"]), "delta")
    result = index.sync(Ledger.connect(own_chain["node"].url, own_chain["book"]))
    assert result.rewound_from == old_checkpoint
    assert_index_matches_chain(index, after)
    assert [e.service for e in index.history(kinds=["registered"])] == ["delta"]


def _register(ledger: Ledger, service: str) -> None:
    ledger.register(ArtifactSpec(digest=digest_for(service), service=service, version="1"))


def test_reorg_rewinds_to_the_last_common_block(own_chain, tmp_path):
    ledger = Ledger.connect(own_chain["node"].url, own_chain["book"], signer=own_chain["registrar"])
    _register(ledger, "kept")
    url = own_chain["node"].url
    snapshot = rpc_call(url, "evm_snapshot")
    common = int(rpc_call(url, "eth_blockNumber"), 16)
    _register(ledger, "orphaned-1")
    _register(ledger, "orphaned-2")
    index = Index.open(tmp_path / "index.sqlite")
    index.sync(ledger)
    rpc_call(url, "evm_revert", [snapshot])  # the two blocks after `common` leave the chain...
    rpc_call(url, "evm_increaseTime", [7])
    replacement = Ledger.connect(url, own_chain["book"], signer=own_chain["registrar"])
    for name in ("new-1", "new-2", "new-3"):  # ...and other blocks take their heights
        _register(replacement, name)
    result = index.sync(replacement)
    assert result.rewound_from == common + 2
    assert result.from_block == common + 1  # it kept everything up to the common block
    assert [e.service for e in index.history(kinds=["registered"])] == ["kept", "new-1", "new-2", "new-3"]
    assert_index_matches_chain(index, replacement)


def test_index_of_another_suite_is_refused(dn, own_chain, tmp_path):
    db = tmp_path / "index.sqlite"
    ok(dn.run("index", "sync", "--db", db, "--json"))
    # A second suite on the same chain, and the suite of another chain: both refused, index untouched.
    keys = dev_private_keys(11)
    other = Ledger.deploy_suite(dn.rpc_url, Account.from_key(dn.key("admin")),
                                dev_bootstrap([Account.from_key(k).address for k in keys]), out=tmp_path / "other.json")
    message = fails(dn.run("history", "--db", db, "--deployment", tmp_path / "other.json", "--rpc", dn.rpc_url, "--json"),
                    1, "belongs to")
    assert other.registry.address in message
    index = Index.open(db)
    count = index.db.execute("SELECT count(*) FROM events").fetchone()[0]
    with pytest.raises(IndexMismatch, match="pass another --db"):
        index.sync(Ledger.connect(own_chain["node"].url, own_chain["book"]))
    assert index.db.execute("SELECT count(*) FROM events").fetchone()[0] == count
    (tmp_path / "junk.sqlite").write_text("not a database, just text long enough to fail the header check" * 10)
    fails(dn.run("history", "--db", tmp_path / "junk.sqlite", "--json"), 1, "not a usable index")


# ============================================================================ history through the CLI


def test_history_filters(dn, tmp_path):
    s = story(dn)
    other = unique()
    dn.deployed(other)
    db = tmp_path / "index.sqlite"
    service, (first, second, _, _) = s["service"], s["digests"]
    chain = dn.ledger().history()

    def history(*args, sync=False):
        return ok(dn.run("history", "--db", db, *args, *(() if sync else ("--no-sync",)), "--json"))["events"]

    # --digest: the artifact's own events and the steps of its deployments (the first call syncs).
    by_digest = history("--digest", first, sync=True)
    assert [e["kind"] for e in by_digest] == ["registered", "approved", "approved", "deployed", "canary-verdict",
                                              "promoted", "completed"]
    assert history("--digest", "0x" + first[7:].upper()) == by_digest  # the 0x spelling, any case
    # --approver: votes cast by one account, across services.
    approver = dn.address("approver", 2)
    votes = history("--approver", approver.lower())
    assert {e["kind"] for e in votes} == {"rejected", "withdrawn"} and all(e["fields"]["approver"] == approver for e in votes)
    # --org by name or id.
    by_name = history("--org", "globex", "--service", service)
    assert by_name == history("--org", "2", "--service", service)
    assert by_name and all(e["fields"]["org"] == 2 for e in by_name)
    # --kind, repeatable, with the 'incident' family.
    kinds = history("--kind", "approved", "--kind", "rejected", "--service", service)
    assert [e["kind"] for e in kinds] == [e.kind for e in chain if e.service == service and e.kind in ("approved", "rejected")]
    incident = history("--kind", "incident", "--service", service)
    assert [e["kind"] for e in incident] == ["incident-opened", "incident-acknowledged", "incident-mitigated",
                                             "incident-resolve-approved", "incident-resolved"]
    # --since/--until: block numbers inclusive; dates in UTC, a whole day for --until; ISO datetimes.
    mine = [e for e in chain if e.service == service]
    low, high = mine[3].block_number, mine[-3].block_number
    window = history("--service", service, "--since", low, "--until", high)
    assert [(e["block"], e["log_index"]) for e in window] == [(e.block_number, e.log_index) for e in mine if low <= e.block_number <= high]
    day = lambda e: datetime.fromtimestamp(e.timestamp, timezone.utc).date().isoformat()
    assert len(history("--service", service, "--since", day(mine[0]), "--until", day(mine[-1]))) == len(mine)
    assert history("--service", service, "--since", "2000-01-01T00:00:00Z", "--until", "2000-12-31") == []
    # Filters combine; csv comes from the same rows.
    both = history("--service", other, "--kind", "deployed")
    assert len(both) == 1 and both[0]["service"] == other
    csv_rows = dn.run("history", "--db", db, "--no-sync", "--service", service, "--kind", "incident", "--format", "csv").out.splitlines()
    assert len(csv_rows) == 1 + 5 and csv_rows[0].startswith("block,time,kind")
    # --no-sync reads the index as it is; without it the new event appears.
    newest = dn.register(service, "9.9.9")
    assert history("--digest", newest) == []
    assert [e["kind"] for e in history("--digest", newest, sync=True)] == ["registered"]
    # Bad filters are usage errors.
    for bad, needle in ((("--kind", "bogus"), "unknown event kind"), (("--since", "yesterday"), "block number"),
                        (("--org", "no-such-org"), "no organisation"), (("--approver", "0x12"), "not an Ethereum address")):
        fails(dn.run("history", "--db", db, "--no-sync", *bad, "--json"), 2, needle)
    # The same filters through the API agree with the CLI.
    index = Index.open(db)
    assert [e.block_number for e in index.history(digest=first)] == [e["block"] for e in by_digest]
    assert {e.kind for e in index.history(digest=second)} >= {"deployed", "rolled-back"}
    assert [e.block_number for e in index.history(org="globex", service=service)] == [e["block"] for e in by_name]


def test_history_api_time_bounds(dn, tmp_path):
    index = Index.open(tmp_path / "index.sqlite")
    index.sync(dn.ledger())
    events = index.history()
    middle = events[len(events) // 2]
    assert all(e.block_number >= middle.block_number for e in index.history(since=middle.block_number))
    at = datetime.fromtimestamp(middle.timestamp, timezone.utc)
    assert all(e.timestamp <= middle.timestamp for e in index.history(until=at))
    assert all(e.timestamp >= middle.timestamp for e in index.history(since=float(middle.timestamp)))
    assert index.history(kinds=[]) == []
    assert os.path.exists(tmp_path / "index.sqlite")
    assert sqlite3.connect(tmp_path / "index.sqlite").execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)

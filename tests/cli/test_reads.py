"""`status` and `member list` served from the index, the index's edges (read-only, locked, missing,
rewound) and `--timeout` against a node that never answers. Against the module's real devnet."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shipledger.compliance.index import Index
from shipledger.network.devnet import rpc_call
from support import CLI, ENV, digest_for, fails, new_address, ok, one_line, unique


# ============================================================================ status and member list


def test_status_reads_history_from_the_index_synced_first(dn, tmp_path):
    service = unique()
    live = dn.deployed(service, "1.0.0")
    waiting = dn.register(service, "1.1.0")
    db = tmp_path / "index.sqlite"
    data = ok(dn.run("status", service, ENV, "--db", db, "--json"))
    assert data["live"]["id"] == live and data["live"]["version"] == "1.0.0"
    assert data["live"]["digest"] == digest_for(f"{service}@1.0.0")  # the digest dn.deployed registered
    assert [p["digest"] for p in data["pending_approvals"]] == [waiting]
    with Index.open(db) as index:  # status synced the index it read
        assert {e.kind for e in index.history(service=service)} >= {"registered", "deployed", "completed"}

    newer = dn.register(service, "1.2.0")
    stale = ok(dn.run("status", service, ENV, "--db", db, "--no-sync", "--json"))
    assert [p["version"] for p in stale["pending_approvals"]] == ["1.1.0"]  # the index as it was
    fresh = ok(dn.run("status", service, ENV, "--db", db, "--json"))
    assert [(p["digest"], p["version"]) for p in fresh["pending_approvals"]] == [(newer, "1.2.0"), (waiting, "1.1.0")]
    assert fresh["live"] == data["live"]


def test_status_lists_only_the_newest_never_deployed_artifacts(dn, tmp_path):
    service = unique()
    dn.deployed(service, "0.1.0")
    registered = [dn.register(service, f"1.{i}.0") for i in range(7)]
    data = ok(dn.run("status", service, ENV, "--db", tmp_path / "index.sqlite", "--json"))
    assert [p["digest"] for p in data["pending_approvals"]] == registered[::-1][:5]
    # Deployed to another environment: still pending here.
    other = ok(dn.run("status", service, "staging", "--db", tmp_path / "index.sqlite", "--json"))
    assert [p["version"] for p in other["pending_approvals"]] == ["1.6.0", "1.5.0", "1.4.0", "1.3.0", "1.2.0"]
    assert other["live"] is None


def test_member_list_takes_members_from_the_index_and_roles_from_the_contract(dn, tmp_path):
    db = tmp_path / "index.sqlite"
    before = {m["address"] for m in ok(dn.run("member", "list", "--db", db, "--json"))["members"]}
    address = new_address()
    steward = dn.ledger("steward", 0)
    steward.add_member(address, approver=True)
    dn.passed(steward.propose(steward.change_role(True, "DEPLOYER", address)).id)
    assert address not in {m["address"] for m in ok(dn.run("member", "list", "--db", db, "--no-sync", "--json"))["members"]}
    members = {m["address"]: m for m in ok(dn.run("member", "list", "--db", db, "--json"))["members"]}
    assert set(members) == before | {address}
    assert members[address] == {"address": address, "org": 1, "organisation": "acme", "roles": ["APPROVER", "DEPLOYER"]}

    dn.passed(steward.propose(steward.change_role(False, "DEPLOYER", address)).id)
    steward.remove_member(address)
    stale = {m["address"]: m for m in ok(dn.run("member", "list", "--db", db, "--no-sync", "--json"))["members"]}
    assert stale[address]["roles"] == []  # still a member in the stale index; its roles are read now
    assert address not in {m["address"] for m in ok(dn.run("member", "list", "--db", db, "--json"))["members"]}
    assert ok(dn.run("member", "list", "--db", db, "--json"))["members"] == dn.ledger().members()


# ============================================================================ the index's edges


@pytest.mark.parametrize("command", [("history",), ("status", "s", ENV), ("member", "list"), ("trace", "--digest", digest_for("x"), "--service", "s")])
def test_no_sync_without_an_index_is_a_usage_error(dn, tmp_path, command):
    typo = tmp_path / "no-such-dir" / "index.sqlite"
    message = fails(dn.run(*command, "--db", typo, "--no-sync", "--json"), 2, str(typo), "does not exist")
    one_line(message)
    assert not typo.parent.exists()  # nothing created
    fails(dn.run(*command, "--db", tmp_path / "absent.sqlite", "--no-sync", "--json"), 2, "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


def _as_other_user() -> list[str]:
    """Run as `nobody` when we are root (root writes any file whatever its mode)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv to drop root")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def test_read_only_index_opens_with_no_sync_and_a_sync_says_it_cannot_write(dn, tmp_path):
    ok(dn.run("index", "sync", "--db", tmp_path / "index.sqlite", "--json"))
    expected = ok(dn.run("history", "--db", tmp_path / "index.sqlite", "--no-sync", "--json"))["events"]
    members = ok(dn.run("member", "list", "--db", tmp_path / "index.sqlite", "--no-sync", "--json"))["members"]
    # A directory and file this user may read but not write (pytest's tmp_path is private to root).
    shared = Path(tempfile.mkdtemp(prefix="shipledger-ro-"))
    try:
        shutil.copy(tmp_path / "index.sqlite", shared / "index.sqlite")
        shutil.copy(dn.book, shared / "book.json")
        (shared / "index.sqlite").chmod(0o444)
        (shared / "book.json").chmod(0o444)
        shared.chmod(0o555)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"

        def cli(*args):
            proc = subprocess.run([*_as_other_user(), *CLI, *map(str, args), "--db", shared / "index.sqlite",
                                   "--deployment", shared / "book.json", "--rpc", dn.rpc_url],
                                  cwd=shared, env=env, capture_output=True, text=True, timeout=120)
            assert "Traceback" not in proc.stderr, proc.stderr
            return proc

        reading = cli("history", "--no-sync", "--json")
        assert reading.returncode == 0, reading.stderr
        assert json.loads(reading.stdout)["events"] == expected
        listed = cli("member", "list", "--no-sync", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout)["members"] == members
        syncing = cli("history", "--json")
        assert syncing.returncode == 2 and json.loads(syncing.stdout)["error"]["code"] == "IndexReadOnly"
        assert "cannot write the index" in syncing.stderr and "--no-sync" in syncing.stderr
        assert sorted(p.name for p in shared.iterdir()) == ["book.json", "index.sqlite"]  # nothing written
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared, ignore_errors=True)


def test_a_sync_held_by_another_process_fails_at_once(dn, tmp_path):
    db = tmp_path / "index.sqlite"
    ok(dn.run("index", "sync", "--db", db, "--json"))
    with open(tmp_path / "index.sqlite.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running sync holds it
        for command in (("history",), ("index", "sync"), ("member", "list")):
            started = time.monotonic()
            message = fails(dn.run(*command, "--db", db, "--json"), 1, "another process is syncing", str(db))
            assert time.monotonic() - started < 15
            one_line(message)
        assert ok(dn.run("history", "--db", db, "--no-sync", "--json"))["events"]  # readers never wait
    assert ok(dn.run("history", "--db", db, "--json"))["events"]


def test_history_says_when_the_index_rewound(dn, tmp_path):
    db = tmp_path / "index.sqlite"
    snapshot = rpc_call(dn.rpc_url, "evm_snapshot")
    try:
        orphan = new_address()
        dn.ledger("steward", 0).add_member(orphan)
        assert orphan in {e["fields"]["account"] for e in ok(dn.run("history", "--db", db, "--kind", "member-added", "--json"))["events"]}
    finally:
        rpc_call(dn.rpc_url, "evm_revert", [snapshot])  # the blocks holding `orphan` leave the chain
    rpc_call(dn.rpc_url, "evm_increaseTime", [5])
    replacement = new_address()
    dn.ledger("steward", 0).add_member(replacement)  # another block at the same height
    result = dn.run("history", "--db", db, "--kind", "member-added", "--json")
    names = {e["fields"]["account"] for e in ok(result)["events"]}
    assert replacement in names and orphan not in names
    assert "rewound" in result.err and str(db) in result.err
    one_line(result.err)
    quiet = dn.run("history", "--db", db, "--kind", "member-added", "--json")
    assert ok(quiet) and quiet.err == ""  # said once, when it happened


# ============================================================================ --timeout


@pytest.fixture
def hung_node():
    """A TCP server that accepts connections and never answers: a node that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except (socket.timeout, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("command", [
    ("status", "s", ENV),
    ("member", "list"),
    ("history",),
    ("gate", "--digest", digest_for("x"), "--service", "s", "--env", ENV),
    ("register", "--digest", digest_for("x"), "--service", "s", "--version", "1"),
])
def test_timeout_gives_up_on_a_hung_node(dn, tmp_path, hung_node, command):
    index = ("--db", tmp_path / "index.sqlite") if command[0] in ("status", "member", "history") else ()
    started = time.monotonic()
    result = dn.as_("registrar", *command, *index, "--json", "--rpc", hung_node, "--timeout", "1")
    elapsed = time.monotonic() - started
    one_line(fails(result, 1, hung_node))
    assert elapsed < 8, f"took {elapsed:.1f} s with --timeout 1"


def test_timeout_from_the_environment_and_before_the_command(dn, hung_node):
    started = time.monotonic()
    fails(dn.run("status", "s", ENV, "--json", "--rpc", hung_node, env={"SHIPLEDGER_RPC_TIMEOUT": "500ms"}), 1, hung_node)
    fails(dn.run("--timeout", "1s", "gate", "--digest", digest_for("x"), "--service", "s", "--env", ENV, "--json",
                 "--rpc", hung_node), 1, "cannot reach")
    assert time.monotonic() - started < 12


@pytest.mark.parametrize(("option", "env", "needle"), [
    (("--timeout", "0"), {}, "--timeout"),
    (("--timeout", "soon"), {}, "--timeout"),
    ((), {"SHIPLEDGER_RPC_TIMEOUT": "-1"}, "SHIPLEDGER_RPC_TIMEOUT"),
])
def test_bad_timeout_is_a_usage_error(dn, option, env, needle):
    one_line(fails(dn.run("status", "s", ENV, "--json", *option, env=env), 2, needle))

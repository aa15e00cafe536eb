"""`shipledger register --batch` against a real devnet: reruns after a partial batch finish what is
missing and send nothing for what is done, chunks sized by gas and bytes, Ctrl-C and a lost node
reported with counts checked against the chain, and every bad line named by FILE:LINE."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import threading
import time

import pytest
from eth_abi import encode as abi_encode

from shipledger import ArtifactSpec
from shipledger import Ledger
from shipledger._internal.batch import REGISTER_BATCH_ARGS, REGISTER_BATCH_SELECTOR, batch_calldata, encode_item, record_hash_of
from shipledger.client import record_hash
from shipledger.network.devnet import rpc_call
from support import CLI, assert_no_traceback, clean_env, digest_for, fails, ok, one_line, unique


def lines_for(service: str, count: int, start: int = 0, uri: str = "") -> list[dict]:
    return [{"digest": digest_for(f"{service}@{n}"), "service": service, "version": str(n), **({"uri": uri} if uri else {})}
            for n in range(start, start + count)]


def write(path, lines: list[dict]):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def specs(lines: list[dict]) -> list[ArtifactSpec]:
    return [ArtifactSpec(**line) for line in lines]


def block_number(dn) -> int:
    return int(rpc_call(dn.rpc_url, "eth_blockNumber"), 16)


def on_chain(dn, lines: list[dict]) -> list[bool]:
    """Whether each line is registered with exactly its record (one recordOf per line, many per request)."""
    from shipledger._internal.batch import _read_calls
    from shipledger._internal.rpc import Rpc

    registry = json.loads(dn.book.read_text())["contracts"]["ReleaseRegistry"]["address"]
    items = [Ledger.validate_spec(ArtifactSpec(**line)) for line in lines]
    calls = [_read_calls(registry, item)[0] for item in items]
    results = Rpc(dn.rpc_url).fetch("eth_call", [c[1] for c in calls], 500)
    return [r == record_hash(item) for r, item in zip(results, items)]


# ============================================================================ encoding


def test_hand_encoded_calldata_matches_eth_abi():
    z = b"\0" * 32
    items = [(secrets.token_bytes(32), "s" * n, "v€" * n, n % 4, secrets.token_bytes(32), 2**64 - 1 - n, z,
              secrets.token_bytes(32), "ü" * (n * 7)) for n in (0, 1, 15, 16, 31, 32, 33, 64)]
    for count in (1, 2, len(items)):
        expected = REGISTER_BATCH_SELECTOR + abi_encode([REGISTER_BATCH_ARGS], [items[:count]])
        assert batch_calldata([encode_item(i) for i in items[:count]]) == expected
    for item in items:  # the identity the registry keeps: keccak256(abi.encode(input))
        assert "0x" + record_hash_of(encode_item(item)).hex() == record_hash(item)


# ============================================================================ reruns


def test_rerun_after_a_partial_batch_registers_exactly_the_rest_then_nothing(dn, tmp_path):
    service = unique()
    lines = lines_for(service, 350)
    batch = write(tmp_path / "all.jsonl", lines)
    # the first 130 (more than one chunk) are on the ledger already, as after an interrupted run
    first = dn.ledger("registrar").register_many(specs(lines[:130]))
    assert (first.registered, first.already) == (130, 0)

    nonce = dn.nonce("registrar")
    data = ok(dn.as_("registrar", "register", "--batch", batch, "--json"))
    assert (data["artifacts"], data["registered"], data["already"], data["failed"], data["pending"], data["not_sent"]) == \
        (350, 220, 130, 0, 0, 0)
    assert dn.nonce("registrar") == nonce + len(data["transactions"]) and data["transactions"]
    assert all(on_chain(dn, lines))
    assert len(dn.history(service, "registered")) == 350  # nothing registered twice

    nonce, block = dn.nonce("registrar"), block_number(dn)
    again = dn.as_("registrar", "register", "--batch", batch, "--json")
    data = ok(again)
    assert (data["registered"], data["already"], data["transactions"]) == (0, 350, [])
    assert (dn.nonce("registrar"), block_number(dn)) == (nonce, block)
    human = dn.as_("registrar", "register", "--batch", batch)
    assert human.code == 0 and "registered 0 artifacts" in human.err and "350 were already registered" in human.err


def test_long_uris_in_later_chunks_than_the_first_go_through(dn, tmp_path):
    service = unique()
    lines = lines_for(service, 120) + lines_for(service, 150, start=120, uri="https://example.com/" + "x" * 2000)
    batch = write(tmp_path / "long.jsonl", lines)
    data = ok(dn.as_("registrar", "register", "--batch", batch, "--json"))
    assert data["registered"] == 270
    # the long lines weigh ~2 KB and ~110k gas each: they travel in smaller transactions than the short ones
    gas = [t["gas_used"] for t in data["transactions"]]
    assert max(gas) <= 8_000_000 and len(gas) > 270 // 100 + 1
    assert all(on_chain(dn, lines))
    uris = {e.fields["version"]: e.fields["uri"] for e in dn.history(service, "registered")}
    assert uris["269"] == lines[-1]["uri"] and uris["0"] == ""


# ============================================================================ interruptions


def test_ctrl_c_mid_batch_reports_counts_that_match_the_chain(dn, tmp_path):
    service = unique()
    lines = lines_for(service, 4000)
    batch = write(tmp_path / "big.jsonl", lines)
    start = dn.nonce("registrar")
    env = clean_env(SHIPLEDGER_PRIVATE_KEY=dn.key("registrar"))
    proc = subprocess.Popen([*CLI, "register", "--batch", str(batch), "--json"], cwd=dn.workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while dn.nonce("registrar") < start + 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert_no_traceback(err)
    assert proc.returncode == 130, f"exit {proc.returncode}: {err}"
    data = json.loads(out)
    assert data["error"] == "interrupted" and data["not_sent"] > 0 and data["registered"] >= 200
    assert data["registered"] + data["pending"] + data["not_sent"] == 4000 and data["already"] == data["failed"] == 0
    assert f"{data['registered']} artifacts confirmed" in err and "run the same command again" in err
    if data["pending"]:
        assert "still mines them" in err
    # what the node holds is mined after the exit; then the chain has exactly confirmed + pending
    deadline = time.monotonic() + 30
    while dn.nonce("registrar") < start + len(data["transactions"]) + len(data["pending_transactions"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    registered = on_chain(dn, lines)
    assert sum(registered) == data["registered"] + data["pending"]
    resume = int(data["resume_at"].rsplit(":", 1)[1])
    assert f"Resume from {batch}:{resume}" in err
    assert all(registered[: resume - 1]) and not registered[resume - 1 + data["pending"]]

    rerun = ok(dn.as_("registrar", "register", "--batch", batch, "--json"))
    assert (rerun["registered"], rerun["already"]) == (4000 - sum(registered), sum(registered))
    assert all(on_chain(dn, lines))


class CuttableProxy:
    """A TCP relay in front of the devnet's node that goes dead (closes every connection and stops
    listening) once it has relayed `sends` eth_sendRawTransaction requests: a node lost mid-batch."""

    def __init__(self, target_port: int, sends: int):
        self.target, self.sends, self.seen = target_port, sends, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.dead = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.dead.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, counting):
        try:
            while data := src.recv(65536):
                if counting and b"eth_sendRawTransaction" in data:
                    self.seen += 1
                    if self.seen > self.sends:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass

    def cut(self):
        self.dead.set()
        for s in [self.server, *self.sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_lost_node_mid_batch_names_the_line_and_what_was_recorded(dn, tmp_path):
    service = unique()
    lines = lines_for(service, 1600)
    batch = write(tmp_path / "lost.jsonl", lines)
    proxy = CuttableProxy(dn.port, sends=10)  # the 11th transaction never reaches the node
    try:
        result = dn.as_("registrar", "register", "--batch", batch, "--json", "--rpc", f"http://127.0.0.1:{proxy.port}")
    finally:
        proxy.cut()
    assert result.code == 1, result.err
    one_line(result.err)
    data = json.loads(result.out)
    assert "cannot reach the JSON-RPC node" in data["error"] and f"(while sending {batch}:" in data["error"]
    registered = on_chain(dn, lines)
    # confirmed: what the CLI saw receipts for; pending: handed to the node (or being handed) without one
    assert 0 < data["registered"] < sum(registered) < data["registered"] + data["pending"]
    assert len(data["transactions"]) + len(data["pending_transactions"]) == 11
    assert data["not_sent"] == 1600 - data["registered"] - data["pending"] > 0
    resume = int(data["resume_at"].rsplit(":", 1)[1])
    assert f"Resume from {batch}:{resume}" in result.err and all(registered[: resume - 1])
    assert f"{data['registered']} artifacts confirmed, {data['pending']} sent but not yet confirmed" in result.err
    rerun = ok(dn.as_("registrar", "register", "--batch", batch, "--json"))
    assert (rerun["registered"], rerun["already"]) == (1600 - sum(registered), sum(registered))
    assert all(on_chain(dn, lines))


# ============================================================================ refused before sending


def test_batch_without_registrar_role_is_denied_in_a_sentence(dn, tmp_path):
    batch = write(tmp_path / "norole.jsonl", lines_for(unique(), 3))
    nonce = dn.nonce("approver")
    message = fails(dn.as_("approver", "register", "--batch", batch, "--json"), 3, "is not a REGISTRAR of")
    one_line(message)
    assert dn.nonce("approver") == nonce


def test_conflicts_with_the_ledger_name_the_line_and_send_nothing(dn, tmp_path):
    service = unique()
    recorded = dn.register(service, "1", digest_for("the one on chain"))
    nonce = dn.nonce("registrar")
    version_taken = lines_for(service, 3, start=2)
    version_taken.insert(1, {"digest": digest_for("another build"), "service": service, "version": "1"})
    message = fails(dn.as_("registrar", "register", "--batch", write(tmp_path / "v.jsonl", version_taken), "--json"), 3,
                    f"{tmp_path / 'v.jsonl'}:2:", f"{service} 1 is already registered with a different record (record hash {dn.ledger().record_of(service, '1')})",
                    "nothing was sent")
    one_line(message)
    digest_taken = lines_for(service, 2, start=10) + [{"digest": recorded, "service": service, "version": "9"}]
    message = fails(dn.as_("registrar", "register", "--batch", write(tmp_path / "d.jsonl", digest_taken), "--json"), 3,
                    f"{tmp_path / 'd.jsonl'}:3:", f"artifact {recorded} is already registered for {service} under another version",
                    f"registered by {dn.address('registrar')}")
    assert dn.nonce("registrar") == nonce and dn.ledger().record_of(service, "10") is None


@pytest.mark.parametrize("change", [{"kind": "config"}, {"commit": "ab" * 20}, {"uri": "https://forged.example"}])
def test_the_same_digest_and_version_with_another_field_is_a_conflict_not_a_rerun(dn, tmp_path, change):
    """Identity is the whole record: a line that differs from the chain's only in kind, commit or URI
    is refused (exit 3, nothing sent), where v1 skipped it as already registered."""
    service = unique()
    line = {"digest": digest_for(service), "service": service, "version": "1"}
    dn.register(service, "1", line["digest"])
    nonce = dn.nonce("registrar")
    batch = write(tmp_path / "forged.jsonl", [{**line, **change}])
    fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 3, f"{batch}:1:", "different record", "nothing was sent")
    assert dn.nonce("registrar") == nonce
    again = ok(dn.as_("registrar", "register", "--batch", write(tmp_path / "same.jsonl", [line]), "--json"))
    assert (again["registered"], again["already"]) == (0, 1)  # the identical record is a rerun


@pytest.mark.parametrize("second", [
    {"version": "1"},  # the same line twice
    {"version": "1", "digest": digest_for("other")},  # one version, two digests
    {"version": "7"},  # one digest under two versions
])
def test_duplicates_inside_the_file_are_usage_errors(dn, tmp_path, second):
    service = unique()
    first = {"digest": digest_for(service), "service": service, "version": "1"}
    batch = write(tmp_path / "dup.jsonl", [lines_for(service, 1, start=3)[0], first, {**first, **second}])
    nonce = dn.nonce("registrar")
    fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, f"{batch}:3:", f"is also on {batch}:2")
    assert dn.nonce("registrar") == nonce


# ============================================================================ bad lines


@pytest.mark.parametrize("change, needle", [
    ({"version": 1}, "version 1 must be a string"),
    ({"uri": 123}, "uri 123 must be a string"),
    ({"commit": ["a"]}, "must be a string"),
    ({"committed_at": -5}, "committed_at -5 must be a whole number"),
    ({"committed_at": 1e30}, "committed_at 1e+30 must be a whole number"),
    ({"committed_at": True}, "committed_at True must be a whole number"),
    ({"committed_at": 1700000000.5}, "must be a whole number"),
    ({"committed_at": 2**64}, "must be a whole number"),
    ({"uri": "u" * 2049}, "uri is 2049 bytes; at most 2048"),
    ({"uri": "\ud800"}, "not valid text (it holds a lone surrogate)"),
    ({"service": "svc\udc80"}, "not valid text"),
    ({"provenance": "./prov.json"}, "malformed digest './prov.json'"),
    ({"sbom": 5}, "sbom 5 must be a string"),
    ({"verison": "1"}, "unknown key 'verison'"),
    ({"service": None}, "service None must be a string"),
    ({"artifact": "x.bin"}, 'give "digest" or "artifact"'),
])
def test_wrong_values_name_file_and_line(dn, tmp_path, change, needle):
    service = unique()
    line = {"digest": digest_for(service), "service": service, "version": "1", **change}
    batch = tmp_path / "bad.jsonl"
    batch.write_text(json.dumps(lines_for(service, 1, start=5)[0]) + "\n" + json.dumps(line) + "\n")
    one_line(fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, f"{batch}:2: ", needle))


@pytest.mark.parametrize("drop", ["service", "version"])
def test_missing_key_is_named(dn, tmp_path, drop):
    line = {"digest": digest_for("x"), "service": unique(), "version": "1"}
    del line[drop]
    batch = write(tmp_path / "missing.jsonl", [line])
    fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, f"{batch}:1: missing key '{drop}'")


@pytest.mark.parametrize("content, needle", [
    (b'{"service": "a", "version": "1", "digest": "sha256:' + b"a" * 64 + b'"}\n{"service": "\xff\xfe"}\n', ":2: not UTF-8 text"),
    (b'{"service": "a", "service": "b"}\n', ":1: key 'service' appears twice"),
    (b'{"service": "a",\n', ":1: not JSON"),
    (b"\n\n", "holds no artifacts"),
])
def test_unreadable_files_are_usage_errors(dn, tmp_path, content, needle):
    batch = tmp_path / "raw.jsonl"
    batch.write_bytes(content)
    one_line(fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, needle))


def test_bom_crlf_and_line_separators_inside_strings_are_accepted(dn, tmp_path):
    service = unique()
    lines = lines_for(service, 3)
    lines[1]["uri"] = "s3://bucket/a\u2028b"  # str.splitlines() would split this line in two
    text = "\r\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\r\n"
    batch = tmp_path / "windows.jsonl"
    batch.write_bytes(b"\xef\xbb\xbf" + text.encode())
    data = ok(dn.as_("registrar", "register", "--batch", batch, "--json"))
    assert data["registered"] == 3 and all(on_chain(dn, lines))
    uris = {e.fields["version"]: e.fields["uri"] for e in dn.history(service, "registered")}
    assert uris["1"] == "s3://bucket/a\u2028b"


def test_help_describes_the_line_format(dn):
    result = dn.run("register", "--help")
    assert result.code == 0
    text = " ".join(result.out.split())
    for needle in ('"service"', '"digest"', '"artifact"', '"committed_at"', "sha256: digests of those documents, not files",
                   "skipped"):
        assert needle in text, needle

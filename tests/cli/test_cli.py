"""The `shipledger` command line, run as a real subprocess against a real devnet.

One devnet per module (`shipledger devnet up` in a temporary working directory, `devnet down` at the
end). Tests stay independent by using their own service names (uuid-based) instead of snapshots, so
the devnet's history only ever grows. Setup that is not the subject of a test goes through the SDK
in-process (a CLI call costs ~0.7 s of start-up); the command under test always runs as a subprocess
with an explicit environment, and keys only ever travel in environment variables.

Every CLI call is checked for a Python traceback on stderr (see `run`). Bugs found in the CLI/SDK are
pinned by tests marked xfail(strict=True) whose reason says what is wrong.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from shipledger import ArtifactSpec, ConnectionFailed, Ledger
from shipledger.network.devnet import free_port, rpc_call
from support import (
    CLI,
    ENV,
    Devnet,
    Result,
    assert_no_traceback,
    clean_env,
    run,
    ok,
    fails,
    one_line,
    unique,
    sha256_hex,
    digest_for,
    new_address,
    _devnet_up,
    _stop_devnet,
)

TX_KEYS = {"tx_hash", "block_number", "gas_used"}

@pytest.fixture
def files(tmp_path):
    """Write a file under tmp_path: files("name", b"content") -> Path."""

    def write(name: str, content: bytes | str = b"") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return write


# ============================================================================ devnet


def test_devnet_up_json_has_accounts_in_three_orgs(dn):
    info = dn.info
    assert set(info) == {"rpc_url", "deployment", "chain_id", "accounts", "governance", "reused"} and info["reused"] is False
    assert info["rpc_url"] == f"http://127.0.0.1:{dn.port}"
    assert info["chain_id"] == 31337 == int(rpc_call(dn.rpc_url, "eth_chainId"), 16)
    assert info["governance"] == {"organisations_needed": 2, "delay": 60}
    accounts = info["accounts"]
    assert set(accounts) == {"admin", "registrar", "deployer", "responder", "approvers", "stewards", "outsider"}
    assert len(accounts["approvers"]) == len(accounts["stewards"]) == 3
    # one steward per organisation, in the organisations and order of the approvers
    assert [a["org"] for a in accounts["stewards"]] == [a["org"] for a in accounts["approvers"]] == ["acme", "globex", "initech"]
    every = [accounts[p] for p in ("admin", "registrar", "deployer", "responder", "outsider")] + accounts["approvers"] \
        + accounts["stewards"]
    for entry in every:
        assert set(entry) == {"address", "private_key", "org"}
        assert Account.from_key(entry["private_key"]).address == entry["address"]
    assert len({e["address"] for e in every}) == len(every)
    # the files it promises, relative to the working directory
    assert dn.book.is_file() and (dn.workdir / ".shipledger" / "devnet" / "state.json").is_file()
    book = json.loads(dn.book.read_text())
    assert book["chain_id"] == 31337 and book["deployer"] == accounts["admin"]["address"]
    assert set(book["contracts"]) == {"ReleaseRegistry", "Governance", "DeploymentLedger"}
    ledger = dn.ledger()
    for part, role in (("registrar", "REGISTRAR"), ("registrar", "ATTESTOR"), ("deployer", "DEPLOYER"), ("responder", "RESPONDER")):
        assert ledger.has_role(role, accounts[part]["address"])
    for approver in accounts["approvers"]:
        assert ledger.has_role("APPROVER", approver["address"]) and ledger.organisation_of(approver["address"]) > 0
    for n, steward in enumerate(accounts["stewards"], 1):
        assert ledger.steward_organisation(steward["address"]) == n
    # "admin" deployed the suite and holds nothing afterwards; the outsider holds nothing either
    for part in ("admin", "outsider"):
        assert not any(ledger.has_role(r, accounts[part]["address"]) for r in ("REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER", "ATTESTOR"))
        assert ledger.steward_organisation(accounts[part]["address"]) == 0 and ledger.organisation_of(accounts[part]["address"]) == 0
    assert not ledger.registry.functions.hasRole(b"\0" * 32, accounts["admin"]["address"]).call()


def test_devnet_up_again_reuses_running_devnet(dn):
    book_before = dn.book.read_text()
    block_before = int(rpc_call(dn.rpc_url, "eth_blockNumber"), 16)
    again = ok(_devnet_up(dn.workdir, dn.port))
    assert again == {**dn.info, "reused": True}
    assert dn.book.read_text() == book_before
    assert int(rpc_call(dn.rpc_url, "eth_blockNumber"), 16) == block_before  # nothing redeployed


def test_devnet_down_stops_node_and_forgets_book(tmp_path):
    port = free_port()
    try:
        info = ok(_devnet_up(tmp_path, port))
        assert (tmp_path / info["deployment"]).is_file()
        assert ok(run(["devnet", "down", "--json"], cwd=tmp_path)) == {"stopped": True}
        assert not (tmp_path / info["deployment"]).exists()
        with pytest.raises(ConnectionFailed):
            rpc_call(info["rpc_url"], "eth_chainId", timeout=1)
        assert ok(run(["devnet", "down", "--json"], cwd=tmp_path)) == {"stopped": False}
    finally:
        _stop_devnet(tmp_path)


# ============================================================================ suite deploy


def _bootstrap(tmp_path, dn, **extra) -> Path:
    path = tmp_path / "bootstrap.json"
    stewards = dn.info["accounts"]["stewards"]
    path.write_text(json.dumps({
        "organisations": [{"name": s["org"], "steward": s["address"]} for s in stewards],
        "members": [{"address": dn.address("registrar"), "organisation": "acme"},
                    {"address": dn.address("approver", 1), "organisation": "globex", "approver": True}],
        "roles": [{"role": "REGISTRAR", "scope": "api", "address": dn.address("registrar")}],
        "policies": [{"service": "api", "environment": "prod", "threshold": 1, "ttl": "7d", "required_attestations": ["sbom"]}],
        "organisations_needed": 2, "delay": "48h", **extra}))
    return path


def test_suite_deploy_with_a_bootstrap_leaves_the_deployer_no_role(dn, tmp_path):
    out = tmp_path / "books" / "staging.json"
    data = ok(dn.as_("admin", "suite", "deploy", "--out", out, "--bootstrap", _bootstrap(tmp_path, dn), "--rpc", dn.rpc_url, "--json"))
    assert data["deployment"] == str(out) and data["chain_id"] == dn.info["chain_id"]
    assert data["deployer"] == dn.address("admin") and data["governance"] == {"organisations_needed": 2, "delay": 48 * 3600}
    written = json.loads(out.read_text())
    assert written["contracts"] == data["contracts"]
    devnet_book = json.loads(dn.book.read_text())
    for name in ("ReleaseRegistry", "Governance", "DeploymentLedger"):
        assert data["contracts"][name]["address"] != devnet_book["contracts"][name]["address"]
    ledger = Ledger.connect(dn.rpc_url, out)  # checks chain id and code at every address
    assert ledger.has_role("REGISTRAR", dn.address("registrar"), "api") and not ledger.has_role("REGISTRAR", dn.address("registrar"))
    assert ledger.has_role("APPROVER", dn.address("approver", 1)) and ledger.organisation_of(dn.address("approver", 1)) == 2
    assert ledger.policy("api", "prod").ttl == 7 * 86400 and len(ledger.policy("api", "prod").required_attestation_keys) == 1
    assert {m["address"] for m in ledger.members()} == {dn.address("registrar"), dn.address("approver", 1)}
    assert not ledger.registry.functions.hasRole(b"\0" * 32, dn.address("admin")).call()
    assert ledger.organisation_of(dn.address("admin")) == ledger.steward_organisation(dn.address("admin")) == 0


def test_suite_deploy_refuses_to_overwrite_without_force(dn, tmp_path):
    out, bootstrap = tmp_path / "book.json", _bootstrap(tmp_path, dn)
    first = ok(dn.as_("admin", "suite", "deploy", "--out", out, "--bootstrap", bootstrap, "--rpc", dn.rpc_url, "--json"))
    nonce = dn.nonce("admin")
    fails(dn.as_("admin", "suite", "deploy", "--out", out, "--bootstrap", bootstrap, "--rpc", dn.rpc_url, "--json"), 2, "--force")
    assert json.loads(out.read_text())["contracts"] == first["contracts"]
    assert dn.nonce("admin") == nonce  # refused before sending anything
    second = ok(dn.as_("admin", "suite", "deploy", "--out", out, "--bootstrap", bootstrap, "--rpc", dn.rpc_url, "--force", "--json"))
    assert second["contracts"] != first["contracts"]
    assert json.loads(out.read_text())["contracts"] == second["contracts"]


def test_suite_deploy_refuses_a_bad_bootstrap_before_sending(dn, tmp_path):
    nonce = dn.nonce("admin")
    for extra, needle in (({"members": [{"address": dn.address("registrar"), "organisation": "nowhere"}]}, "nowhere"),
                          ({"roles": [{"role": "KING", "address": dn.address("registrar")}]}, "unknown role 'KING'"),
                          ({"delay": "soon"}, "soon"), ({"organisations_needed": 0}, "organisations_needed 0")):
        fails(dn.as_("admin", "suite", "deploy", "--out", tmp_path / "x.json", "--bootstrap", _bootstrap(tmp_path, dn, **extra),
                     "--json"), 2, needle)
    assert dn.nonce("admin") == nonce and not (tmp_path / "x.json").exists()


# ============================================================================ consortium


def test_member_list_shows_organisations_and_roles(dn):
    members = {m["address"]: m for m in ok(dn.run("member", "list", "--json"))["members"]}
    for approver in dn.info["accounts"]["approvers"]:
        assert members[approver["address"]]["organisation"] == approver["org"] and members[approver["address"]]["roles"] == ["APPROVER"]
    assert members[dn.address("registrar")]["roles"] == ["REGISTRAR", "ATTESTOR"]
    assert dn.address("steward", 0) not in members and dn.address("admin") not in members


def test_member_list_prints_a_line_per_member_without_json(dn):
    result = dn.run("member", "list")
    assert result.code == 0
    lines = result.out.splitlines()
    for approver in dn.info["accounts"]["approvers"]:
        assert any(line.startswith(approver["address"]) and approver["org"] in line for line in lines)


def test_member_add_unknown_role_sends_nothing(dn):
    address = new_address()
    nonce = dn.nonce("steward", 0)
    fails(dn.as_("steward", "member", "add", address, "--role", "BOGUS", "--json"), 2, "unknown role")
    assert dn.nonce("steward", 0) == nonce
    assert address not in {m["address"] for m in dn.ledger().members()}


# ============================================================================ policies


def test_policy_set_parses_durations_and_show_reads_it_back(dn):
    service = unique()
    proposed = ok(dn.as_("steward", "policy", "set", service, ENV, "--threshold", "2", "--min-orgs", "2", "--ttl", "7d",
                         "--wait", "1h", "--after", "staging", "--freeze-severity", "2", "--resolve-quorum", "2",
                         "--require-attestation", "sbom", "--require-attestation", "provenance", "--json"))
    change = proposed["change"]["input"]
    assert TX_KEYS <= set(proposed) and [change[k] for k in ("threshold", "minOrganisations", "ttl", "minWait",
                                                            "freezeSeverity", "resolveQuorum")] == [2, 2, 7 * 86400, 3600, 2, 2]
    data = dn.passed(proposed["proposal_id"])
    assert data.executed
    expected = {
        "service": service, "environment": ENV, "threshold": 2, "min_organisations": 2, "ttl": 7 * 86400,
        "min_wait": 3600, "freeze_severity": 2, "version": 1, "resolve_quorum": 2,
        "prior_environment_key": "0x" + Web3.keccak(text="staging").hex().removeprefix("0x"),
        "prior_environment": "staging",  # by name, from the PolicySet event (the chain keeps the hash)
        "required_attestation_keys": ["0x" + Web3.keccak(text=t).hex().removeprefix("0x") for t in ("sbom", "provenance")],
        "required_attestations": ["sbom", "provenance"],
    }
    assert ok(dn.run("policy", "show", service, ENV, "--json")) == {"policy": expected}

    weaker = ok(dn.as_("steward", "policy", "set", service, ENV, "--threshold", "1", "--ttl", "90m", "--json"))
    again = ok(dn.as_("steward", "governance", "approve", weaker["proposal_id"], "--json", index=1))
    assert again["state"] == "scheduled"  # a lower threshold and no prior environment weaken: it waits
    dn.advance(61)
    policy = ok(dn.as_("outsider", "governance", "execute", weaker["proposal_id"], "--json"))["new_state"]["policy"]
    assert policy["version"] == 2 and policy["ttl"] == 5400
    assert policy["prior_environment_key"] == policy["prior_environment"] == "" and policy["required_attestations"] == []
    assert policy["min_wait"] == 0


def test_policy_show_without_policy_prints_null(dn):
    assert ok(dn.run("policy", "show", unique(), ENV, "--json")) == {"policy": None}


def test_policy_set_bad_duration_is_usage_error(dn):
    result = dn.as_("steward", "policy", "set", unique(), ENV, "--threshold", "1", "--ttl", "7x")
    fails(result, 2, "duration")


def test_policy_set_empty_duration_is_usage_error(dn):
    fails(dn.as_("steward", "policy", "set", unique(), ENV, "--threshold", "1", "--ttl", ""), 2, "duration")


# ============================================================================ register


def test_register_file_with_provenance_and_sbom(dn, files):
    service = unique()
    artifact = files("app.tar.gz", os.urandom(4096))
    provenance = files("prov.intoto.jsonl", '{"predicateType": "https://slsa.dev/provenance/v1"}\n')
    sbom = files("sbom.cdx.json", '{"bomFormat": "CycloneDX"}\n')
    commit = "a" * 40
    data = ok(dn.as_("registrar", "register", artifact, "--service", service, "--version", "1.2.3",
                     "--commit", commit, "--committed-at", "1700000000", "--uri", "oci://registry/app@1.2.3",
                     "--provenance", provenance, "--sbom", sbom, "--json"))
    digest = "sha256:" + sha256_hex(artifact.read_bytes())
    assert data["digest"] == digest and data["service"] == service and data["version"] == "1.2.3"
    assert data["registered"] is True and TX_KEYS <= set(data)

    [event] = dn.history(service, "registered")
    f = event.fields
    assert f["digest"] == "0x" + digest.removeprefix("sha256:") and f["version"] == "1.2.3"
    assert f["provenance"] == "0x" + sha256_hex(provenance.read_bytes())
    assert f["sbom"] == "0x" + sha256_hex(sbom.read_bytes())
    assert f["commit"] == "0x" + commit + "0" * 24 and f["committedAt"] == 1700000000
    assert f["uri"] == "oci://registry/app@1.2.3" and f["registrant"] == dn.address("registrar")
    assert event.tx_hash == data["tx_hash"]


def _manifest_digest(entries: list[tuple[str, bytes, bool]]) -> str:
    """The documented directory digest (v2): sha256 of the version line, then '<f|x> <sha256> <path>' per
    file and 'd - <path>' per directory below the root, sorted by path (these names need no escaping)."""
    directories = {parent for path, _, _ in entries for parent in map(str, Path(path).parents) if parent != "."}
    lines = {d: f"d - {d}\n" for d in directories}
    lines |= {path: f"{'x' if executable else 'f'} {sha256_hex(content)} {path}\n" for path, content, executable in entries}
    return "sha256:" + sha256_hex(("shipledger-manifest v2\n" + "".join(lines[p] for p in sorted(lines))).encode())


def test_register_directory_digest_is_deterministic(dn, tmp_path):
    entries = [("bin/app", b"#!/bin/sh\necho hi\n", True), ("README", b"hello\n", False),
               ("lib/a/b.txt", b"b" * 1000, False), ("lib/z.txt", b"", False)]
    first, second = tmp_path / "first", tmp_path / "second"
    for root, order, mtime in ((first, entries, 1_000_000), (second, entries[::-1], 2_000_000)):
        for path, content, executable in order:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o755 if executable else 0o640)
            os.utime(target, (mtime, mtime))
    service = unique()
    data = ok(dn.as_("registrar", "register", first, "--service", service, "--version", "1", "--json"))
    assert data["digest"] == _manifest_digest(entries) and data["registered"] is True
    # the same content in another directory, written in another order with other times: same digest
    again = ok(dn.as_("registrar", "register", second, "--service", service, "--version", "1", "--json"))
    assert again["digest"] == data["digest"] and again["registered"] is False
    # one flipped executable bit makes another artifact
    (second / "README").chmod(0o755)
    flipped = _manifest_digest([(p, c, x or p == "README") for p, c, x in entries])
    gate = dn.run("gate", second, "--service", service, "--env", ENV, "--json")
    assert gate.json()["digest"] == flipped != data["digest"] and gate.json()["reason"] == "unknown_artifact"


def test_register_digest_twice_sends_nothing_the_second_time(dn):
    service, digest = unique(), digest_for(unique())
    first = ok(dn.as_("registrar", "register", "--digest", digest, "--service", service, "--version", "2.0", "--json"))
    assert first["registered"] is True and first["digest"] == digest
    nonce = dn.nonce("registrar")
    second = ok(dn.as_("registrar", "register", "--digest", digest, "--service", service, "--version", "2.0", "--json"))
    assert second == {"digest": digest, "service": service, "version": "2.0", "kind": "build", "registered": False,
                      "tx_hash": None, "block_number": None, "gas_used": None}
    assert dn.nonce("registrar") == nonce
    assert len(dn.history(service, "registered")) == 1


def test_register_key_env_names_the_key_variable(dn):
    service = unique()
    result = dn.run("register", "--digest", digest_for(service), "--service", service, "--version", "1",
                    "--key-env", "RELEASE_BOT_KEY", "--json", env={"RELEASE_BOT_KEY": dn.key("registrar")})
    assert ok(result)["registered"] is True
    assert dn.history(service, "registered")[0].fields["registrant"] == dn.address("registrar")


def test_register_keystore_with_password_from_env(dn, tmp_path):
    keystore = tmp_path / "registrar.keystore.json"
    keystore.write_text(json.dumps(Account.encrypt(dn.key("registrar"), "s3cret", kdf="pbkdf2", iterations=1000)))
    service = unique()
    args = ("register", "--digest", digest_for(service), "--service", service, "--version", "1", "--keystore", keystore, "--json")
    fails(dn.run(*args, env={"SHIPLEDGER_KEYSTORE_PASSWORD": "wrong"}), 2, "wrong password")
    assert ok(dn.run(*args, env={"SHIPLEDGER_KEYSTORE_PASSWORD": "s3cret"}))["registered"] is True


def test_register_batch_registers_every_line(dn, files):
    service = unique()
    artifact = files("svc.bin", b"built bytes")
    lines = [
        {"artifact": str(artifact), "service": service, "version": "1"},
        {"digest": digest_for(service + "2"), "service": service, "version": "2", "commit": "b" * 40, "uri": "s3://x"},
        {"digest": digest_for(service + "3"), "service": service, "version": "3", "committed_at": 1700000000},
    ]
    batch = files("batch.jsonl", "\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    data = ok(dn.as_("registrar", "register", "--batch", batch, "--json"))
    assert data["artifacts"] == 3 and len(data["transactions"]) == 1 and TX_KEYS <= set(data["transactions"][0])
    ledger = dn.ledger()
    assert ledger.digest_of(service, "1") == "sha256:" + sha256_hex(b"built bytes")
    assert ledger.digest_of(service, "2") == lines[1]["digest"]
    assert ledger.digest_of(service, "3") == lines[2]["digest"]
    assert [e.fields["version"] for e in dn.history(service, "registered")] == ["1", "2", "3"]


def test_register_batch_bad_json_line_names_file_and_line(dn, files):
    service = unique()
    good = json.dumps({"digest": digest_for(service), "service": service, "version": "1"})
    batch = files("bad.jsonl", good + "\n{not json\n")
    nonce = dn.nonce("registrar")
    fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, f"{batch}:2")
    assert dn.nonce("registrar") == nonce and dn.ledger().digest_of(service, "1") is None


def test_register_batch_missing_file_is_usage_error(dn, tmp_path):
    fails(dn.as_("registrar", "register", "--batch", tmp_path / "absent.jsonl", "--json"), 2, "absent.jsonl")


def test_register_batch_non_object_line_names_file_and_line(dn, files):
    batch = files("scalar.jsonl", "42\n")
    fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, f"{batch}:1")


def test_register_batch_malformed_digest_names_file_and_line(dn, files):
    service = unique()
    good = json.dumps({"digest": digest_for(service), "service": service, "version": "1"})
    batch = files("digest.jsonl", good + "\n" + json.dumps({"digest": "sha256:xyz", "service": service, "version": "2"}) + "\n")
    fails(dn.as_("registrar", "register", "--batch", batch, "--json"), 2, f"{batch}:2", "malformed digest")


# ============================================================================ revoke


def test_revoke_quarantines_the_artifact(dn):
    service = unique()
    digest = dn.release(service)
    assert dn.run("gate", "--digest", digest, "--service", service, "--env", ENV).code == 0
    data = ok(dn.as_("registrar", "revoke", "--digest", digest, "--service", service, "--reason", "CVE-2024-0001", "--json"))
    assert data["digest"] == digest and TX_KEYS <= set(data)
    gate = dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json")
    assert gate.code == 3 and gate.json()["reason"] == "artifact_revoked"
    [event] = dn.history(service, "revoked")
    assert event.fields["reason"] == "CVE-2024-0001" and event.fields["revoker"] == dn.address("registrar")


# ============================================================================ votes


def test_approve_tx_records_vote_once(dn):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service)
    args = ("approve", "--digest", digest, "--service", service, "--env", ENV, "--comment", "LGTM", "--json")
    first = ok(dn.as_("approver", *args))
    assert first["digest"] == digest and first["approver"] == dn.address("approver") and first["recorded"] is True
    assert TX_KEYS <= set(first)
    nonce = dn.nonce("approver")
    second = ok(dn.as_("approver", *args))
    assert second["recorded"] is False and second["tx_hash"] is None
    assert dn.nonce("approver") == nonce
    [event] = dn.history(service, "approved")
    assert event.fields["approver"] == dn.address("approver") and event.fields["comment"] == "LGTM"
    assert event.fields["bySignature"] is False


def test_approve_sign_only_then_outsider_submits(dn, tmp_path):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=1)
    signature_file = tmp_path / "vote.json"
    nonce = dn.nonce("approver", 2)
    signed = ok(dn.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV,
                       "--sign-only", "--out", signature_file, "--valid-for", "1h", "--json", index=2))
    assert dn.nonce("approver", 2) == nonce  # signing sends nothing
    assert signed["out"] == str(signature_file) and signed["signer"] == dn.address("approver", 2)
    on_disk = json.loads(signature_file.read_text())
    assert on_disk == {k: v for k, v in signed.items() if k != "out"}
    assert on_disk["digest"] == digest and on_disk["decision"] == 1 and on_disk["chain_id"] == dn.info["chain_id"]
    assert 3500 < on_disk["deadline"] - time.time() <= 3600
    assert dn.run("gate", "--digest", digest, "--service", service, "--env", ENV).code == 3

    submitted = ok(dn.as_("outsider", "approvals", "submit", signature_file, "--json"))
    assert submitted["submitted"] == 1 and TX_KEYS <= set(submitted)
    [event] = dn.history(service, "approved")
    assert event.fields["approver"] == dn.address("approver", 2) and event.fields["bySignature"] is True
    assert event.tx_hash == submitted["tx_hash"]
    assert dn.run("gate", "--digest", digest, "--service", service, "--env", ENV).code == 0
    assert on_disk["signed_at"] <= event.fields["signedAt"] + 1 and event.fields["signedAt"] == on_disk["signed_at"]
    # the same signature again: its nonce is spent, the registry skips it and nothing is recorded
    fails(dn.as_("outsider", "approvals", "submit", signature_file, "--json"), 3, "nonce_used", "already used")


def test_approvals_submit_unreadable_file_is_usage_error(dn, files):
    fails(dn.as_("outsider", "approvals", "submit", files("vote.json", '{"signer": "0x"}'), "--json"), 2,
          "not a signed approval")


def test_approvals_submit_vote_for_another_chain_is_usage_error(dn, tmp_path):
    vote = tmp_path / "vote.json"
    ok(dn.as_("approver", "approve", "--digest", digest_for("x"), "--service", "s", "--env", ENV, "--sign-only",
              "--out", vote, "--json"))
    vote.write_text(json.dumps({**json.loads(vote.read_text()), "chain_id": 1}))
    nonce = dn.nonce("outsider")
    fails(dn.as_("outsider", "approvals", "submit", vote, "--json"), 2, "chain 1")
    assert dn.nonce("outsider") == nonce


def test_reject_blocks_gate_until_withdrawn(dn):
    service = unique()
    digest = dn.release(service)  # approvers 0 and 1 approved
    gate_args = ("gate", "--digest", digest, "--service", service, "--env", ENV, "--json")
    rejected = ok(dn.as_("approver", "reject", "--digest", digest, "--service", service, "--env", ENV,
                         "--reason", "failing e2e", "--json", index=2))
    assert rejected["digest"] == digest and rejected["recorded"] is True and TX_KEYS <= set(rejected)
    gate = dn.run(*gate_args)
    assert gate.code == 3 and gate.json()["reason"] == "rejected_by"
    assert gate.json()["details"] == {"approver": dn.address("approver", 2).lower()}

    withdrawn = ok(dn.as_("approver", "withdraw", "--digest", digest, "--service", service, "--env", ENV, "--json", index=2))
    assert withdrawn["digest"] == digest and TX_KEYS <= set(withdrawn)
    assert dn.run(*gate_args).code == 0
    assert [e.kind for e in dn.history(service) if e.kind in ("rejected", "withdrawn")] == ["rejected", "withdrawn"]
    fails(dn.as_("approver", "withdraw", "--digest", digest, "--service", service, "--env", ENV, index=2), 3,
          "no vote")


# ============================================================================ gate


def test_gate_denies_without_enough_approvals(dn):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2)
    dn.approve(digest, service, approvers=(0,))
    result = dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json")
    assert result.code == 3
    assert result.json() == {"allowed": False, "reason": "not_enough_approvals", "details": {"have": 1, "need": 2},
                             "digest": digest}
    human = dn.run("gate", "--digest", digest, "--service", service, "--env", ENV)
    assert human.code == 3 and human.out == "" and "DENIED" in human.err and "1 of 2" in human.err


def test_gate_allows_approved_release(dn, files):
    service = unique()
    artifact = files("release.bin", b"release " + service.encode())
    digest = "sha256:" + sha256_hex(artifact.read_bytes())
    dn.register(service, digest=digest)
    dn.set_policy(service, threshold=2, min_organisations=2)
    dn.approve(digest, service, approvers=(0, 1))
    result = dn.run("gate", artifact, "--service", service, "--env", ENV, "--json")  # by path this time
    assert result.code == 0
    assert result.json() == {"allowed": True, "reason": "allowed", "details": {}, "digest": digest}
    other_env = dn.run("gate", artifact, "--service", service, "--env", "staging", "--json")
    assert other_env.code == 3 and other_env.json()["reason"] == "no_policy"


def test_gate_unknown_artifact_is_denied(dn):
    result = dn.run("gate", "--digest", digest_for(unique()), "--service", unique(), "--env", ENV, "--json")
    assert result.code == 3 and result.json()["reason"] == "unknown_artifact" and result.json()["allowed"] is False


# deploy and incident commands: tests/cli/test_deploy_incident.py


# ============================================================================ reads


def test_status_shows_live_rollout_incidents_pending_and_policy(dn):
    service = unique()
    live = dn.deployed(service, "1.0.0")
    rolling = dn.release(service, "1.1.0")
    active = dn.ledger("deployer").start_deployment(rolling, service, ENV, 20)
    waiting = dn.register(service, "1.2.0")
    incident = dn.ledger("responder").open_incident(service, ENV, 2, "errors")
    data = ok(dn.run("status", service, ENV, "--json"))
    assert set(data) == {"service", "environment", "live", "active", "open_incidents", "open_incident_counts",
                         "pending_approvals", "policy"}
    assert data["service"] == service and data["environment"] == ENV
    assert data["live"]["id"] == live and data["live"]["status"] == "completed" and data["live"]["version"] == "1.0.0"
    assert data["active"]["id"] == active and data["active"]["percent"] == 20
    assert data["active"]["digest"] == rolling and data["active"]["version"] == "1.1.0"
    assert data["pending_approvals"] == [{"digest": waiting, "version": "1.2.0", "allowed": False,
                                          "reason": "not_enough_approvals", "details": {"have": 0, "need": 2}}]
    assert [i["id"] for i in data["open_incidents"]] == [incident]
    assert data["open_incidents"][0]["severity"] == 2 and data["policy"]["threshold"] == 2

    empty = ok(dn.run("status", unique(), ENV, "--json"))
    assert empty["live"] is None and empty["active"] is None and empty["open_incidents"] == []
    assert empty["pending_approvals"] == [] and empty["policy"] is None


def test_history_formats_and_service_filter(dn):
    service = unique()
    deployment_id = dn.deployed(service)
    json_rows = ok(dn.run("history", "--service", service, "--format", "json"))["events"]
    assert [r["kind"] for r in json_rows] == ["registered", "policy-set", "approved", "approved", "deployed", "completed"]
    assert {r["service"] for r in json_rows} == {service}
    for row in json_rows:
        assert {"block", "time", "kind", "service", "environment", "summary", "tx", "log_index", "fields"} <= set(row)
    assert json_rows[-1]["fields"]["id"] == deployment_id and json_rows[-1]["environment"] == ENV
    assert ok(dn.run("history", "--service", service, "--json"))["events"] == json_rows

    csv_result = dn.run("history", "--service", service, "--format", "csv")
    assert csv_result.code == 0
    table = list(csv.reader(io.StringIO(csv_result.out)))
    assert table[0] == ["block", "time", "kind", "service", "environment", "summary", "tx"]
    assert [row[2] for row in table[1:]] == [r["kind"] for r in json_rows]
    assert [row[6] for row in table[1:]] == [r["tx"] for r in json_rows]

    text = dn.run("history", "--service", service, "--format", "table")
    assert text.code == 0
    lines = text.out.splitlines()
    assert lines[0].split()[:3] == ["block", "time", "kind"] and len(lines) == 1 + len(json_rows)

    everything = ok(dn.run("history", "--json"))["events"]
    assert len(everything) > len(json_rows) and {r["service"] for r in everything} > {service}


# ============================================================================ bad input and failures


@pytest.mark.parametrize("command", [
    ("gate", "--env", ENV),
    ("register", "--version", "1"),
    ("approve", "--env", ENV),
    ("revoke", "--reason", "x"),
])
def test_cli_malformed_digest_is_usage_error(dn, command):
    result = dn.as_("admin", *command, "--digest", "sha256:not-hex", "--service", unique(), "--json")
    one_line(fails(result, 2, "malformed digest"))


@pytest.mark.parametrize("command", [("gate", "--env", ENV), ("register", "--version", "1")])
def test_cli_nonexistent_artifact_path_is_usage_error(dn, tmp_path, command):
    result = dn.as_("registrar", command[0], tmp_path / "missing.tar", *command[1:], "--service", unique(), "--json")
    one_line(fails(result, 2, "missing.tar", "does not exist"))


def test_register_nonexistent_provenance_is_usage_error(dn, tmp_path):
    nonce = dn.nonce("registrar")
    result = dn.as_("registrar", "register", "--digest", digest_for(unique()), "--service", unique(), "--version", "1",
                    "--provenance", tmp_path / "prov.json", "--json")
    fails(result, 2, "prov.json")
    assert dn.nonce("registrar") == nonce


def test_register_path_and_digest_together_is_usage_error(dn, files):
    result = dn.as_("registrar", "register", files("a.bin", b"a"), "--digest", digest_for("a"), "--service", unique(),
                    "--version", "1", "--json")
    fails(result, 2, "not both")


@pytest.mark.parametrize("args", [("gate", "--bogus"), ("history", "--format", "xml"), ("frobnicate",)])
def test_cli_unknown_option_is_usage_error(dn, args):
    result = dn.run(*args)
    assert result.code == 2 and result.out == "" and "usage:" in result.err


@pytest.mark.parametrize("args", [
    ("gate", "--digest", digest_for("x"), "--service", "s"),
    ("policy", "set", "s", ENV),
    ("deploy", "promote", "1"),
])
def test_cli_missing_required_option_is_usage_error(dn, args):
    result = dn.run(*args)
    assert result.code == 2 and result.out == "" and "required" in result.err


@pytest.mark.parametrize("args", [
    ("org", "add", "nokey", "--steward", new_address()),
    ("register", "--digest", digest_for("nokey"), "--service", "nokey", "--version", "1"),
    ("approve", "--digest", digest_for("nokey"), "--service", "nokey", "--env", ENV, "--sign-only", "--out", "v.json"),
    ("suite", "deploy", "--out", "never.json", "--bootstrap", "b.json"),
    ("governance", "approve", "1"),
])
def test_cli_transaction_without_key_is_usage_error(dn, args):
    one_line(fails(dn.run(*args, "--json"), 2, "SHIPLEDGER_PRIVATE_KEY"))
    assert not (dn.workdir / "never.json").exists() and not (dn.workdir / "v.json").exists()


def test_cli_invalid_key_is_usage_error(dn):
    result = dn.run("org", "add", unique("org"), "--steward", new_address(), "--json", key="0xnot-a-key")
    message = fails(result, 2, "SHIPLEDGER_PRIVATE_KEY", "valid private key")
    one_line(message)
    assert "0xnot-a-key" not in message  # the secret is not echoed


@pytest.mark.parametrize(("part", "args", "role"), [
    ("registrar", ("org", "add", "intruders", "--steward", new_address()), "is not the steward"),
    ("registrar", ("governance", "propose", "settings", "--delay", "1s"), "is not the steward"),
    ("approver", ("register", "--digest", digest_for("role"), "--service", "role-test", "--version", "1"), "REGISTRAR"),
    ("registrar", ("deploy", "start", "--digest", digest_for("role"), "--service", "role-test", "--env", ENV), "DEPLOYER"),
    ("deployer", ("incident", "open", "--service", "role-test", "--env", ENV, "--severity", "1", "--title", "x"), "RESPONDER"),
])
def test_cli_key_without_role_is_denied(dn, part, args, role):
    result = dn.as_(part, *args, "--json")
    message = fails(result, 3, role, dn.address(part))
    one_line(message)


@pytest.fixture(scope="module")
def bad_books(dn, tmp_path_factory) -> dict:
    """Copies of the devnet's address book, each wrong in one way."""
    directory = tmp_path_factory.mktemp("books")
    registry = json.loads(dn.book.read_text())["contracts"]["ReleaseRegistry"]["address"]
    nowhere = new_address()

    def set_ledger(address):
        return lambda book: book["contracts"]["DeploymentLedger"].update(address=address)

    def no_code(book):
        for entry in book["contracts"].values():
            entry["address"] = nowhere

    return {
        "wrong_chain": dn.book_variant(directory, "wrong_chain", lambda book: book.update(chain_id=1)),
        "no_code": dn.book_variant(directory, "no_code", no_code),
        "ledger_is_registry": dn.book_variant(directory, "ledger_is_registry", set_ledger(registry)),
        "ledger_is_eoa": dn.book_variant(directory, "ledger_is_eoa", set_ledger(dn.address("outsider"))),
    }


def _gate_args(book_or_rpc: tuple) -> tuple:
    return ("gate", "--digest", digest_for("gate"), "--service", "gate-test", "--env", ENV, "--json", *book_or_rpc)


@pytest.mark.parametrize("command", [
    ("gate", "--digest", digest_for("x"), "--service", "s", "--env", ENV),
    ("status", "s", ENV),
    ("org", "add", "wrongchain", "--steward", new_address()),
])
def test_cli_wrong_chain_id_in_book_fails(dn, bad_books, command):
    result = dn.as_("admin", *command, "--json", "--deployment", bad_books["wrong_chain"])
    one_line(fails(result, 1, "chain 1", "31337"))


@pytest.mark.parametrize("command", [
    ("gate", "--digest", digest_for("x"), "--service", "s", "--env", ENV),
    ("status", "s", ENV),
    ("register", "--digest", digest_for("x"), "--service", "s", "--version", "1"),
])
def test_cli_book_pointing_at_no_code_fails(dn, bad_books, command):
    result = dn.as_("registrar", *command, "--json", "--deployment", bad_books["no_code"])
    one_line(fails(result, 1, "no contract code"))


@pytest.mark.parametrize("book", ["ledger_is_registry", "ledger_is_eoa"])
def test_gate_fails_closed_on_wrong_ledger_address(dn, bad_books, book):
    result = dn.run(*_gate_args(("--deployment", bad_books[book])))
    one_line(fails(result, 1))


def test_status_with_ledger_address_of_registry_is_operational_error(dn, bad_books):
    fails(dn.run("status", "s", ENV, "--json", "--deployment", bad_books["ledger_is_registry"]), 1)


def test_cli_missing_book_fails(dn, tmp_path):
    result = dn.run("status", "s", ENV, "--json", cwd=tmp_path)  # no deployments/devnet.json here
    one_line(fails(result, 1, "no address book"))
    result = dn.run(*_gate_args(("--deployment", tmp_path / "absent.json")))
    one_line(fails(result, 1, "absent.json"))


@pytest.mark.parametrize("command", [
    ("gate", "--digest", digest_for("x"), "--service", "s", "--env", ENV),
    ("status", "s", ENV),
    ("register", "--digest", digest_for("x"), "--service", "s", "--version", "1"),
    ("suite", "deploy", "--out", "down.json", "--bootstrap", "{bootstrap}"),
])
def test_cli_rpc_down_fails(dn, command, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    bootstrap = _bootstrap(tmp_path, dn)
    result = dn.as_("registrar", *(w.format(bootstrap=bootstrap) for w in command), "--json", "--rpc", dead)
    one_line(fails(result, 1, "cannot reach"))
    assert not (dn.workdir / "down.json").exists()


def test_approve_sign_only_needs_no_rpc(dn, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "offline.json"
    data = ok(dn.as_("approver", "approve", "--digest", digest_for("offline"), "--service", "s", "--env", ENV,
                     "--sign-only", "--out", out, "--rpc", dead, "--json"))
    assert data["signer"] == dn.address("approver") and json.loads(out.read_text())["signature"] == data["signature"]


class _FakeNode(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the body in `self.server.answer` (bytes) and status `self.server.status`."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, *args):
        pass


def _rpc_replies(chain_id="0x7a69", code="0x6080", call=None, call_error=None) -> bytes:
    replies = [{"jsonrpc": "2.0", "id": 0, "result": chain_id}, {"jsonrpc": "2.0", "id": 1, "result": code}]
    third = {"jsonrpc": "2.0", "id": 2}
    third.update({"error": call_error} if call_error else {"result": call})
    return json.dumps(replies + [third]).encode()


def _words(*numbers: int) -> str:
    return "0x" + "".join(f"{n:064x}" for n in numbers)


@pytest.fixture(scope="module")
def fake_node():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeNode)
    server.status, server.answer = 200, b""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "answer"), [
    (200, b"<html>not json-rpc</html>"),
    (502, b'{"error": "bad gateway"}'),
    (200, _rpc_replies(call=_words(0, 0))),  # 64 bytes: not the gate's answer
    (200, _rpc_replies(call=_words(0, 0, 0, 0))),  # 128 bytes
    (200, _rpc_replies(call=_words(13, 0, 0))),  # an unknown reason code (12 is the last one)
    (200, _rpc_replies(call="0x")),
    (200, _rpc_replies(call_error={"code": 3, "message": "execution reverted"})),
    (200, _rpc_replies(code="0x", call=_words(0, 0, 0))),  # no code at the ledger address
    (200, _rpc_replies(chain_id="0x1", call=_words(0, 0, 0))),  # another chain
    (200, _rpc_replies(chain_id=None, call=_words(0, 0, 0))),
    (200, json.dumps([{"jsonrpc": "2.0", "id": 0, "result": "0x7a69"}]).encode()),  # missing answers
    (200, json.dumps({"jsonrpc": "2.0", "id": 0, "result": "0x7a69"}).encode()),  # not a batch
])
def test_gate_fails_closed_when_answer_cannot_be_decoded(dn, fake_node, status, answer):
    fake_node.status, fake_node.answer = status, answer
    rpc = f"http://127.0.0.1:{fake_node.server_address[1]}"
    result = dn.run(*_gate_args(("--rpc", rpc)))
    assert result.code == 1, f"the gate must fail closed (exit 1), got {result.code}: {result.out}{result.err}"
    one_line(fails(result, 1))  # with --json, stdout holds only the error document


def test_gate_trusts_only_a_well_formed_allowed_answer(dn, fake_node):
    """The control for the test above: the same fake node with a well-formed answer is believed."""
    fake_node.status, fake_node.answer = 200, _rpc_replies(call=_words(0, 0, 0))
    result = dn.run(*_gate_args(("--rpc", f"http://127.0.0.1:{fake_node.server_address[1]}")))
    assert result.code == 0 and result.json()["allowed"] is True


# ============================================================================ crash and retry


def test_register_retry_after_crash_records_once(dn):
    service, digest = unique(), digest_for(unique())
    crashed = dn.ledger("registrar")
    spec = ArtifactSpec(digest=digest, service=service, version="1.0")
    crashed._sender.send(crashed.registry.functions.register(crashed.validate_spec(spec)))  # sent, never waited
    retry = ok(dn.as_("registrar", "register", "--digest", digest, "--service", service, "--version", "1.0", "--json"))
    assert retry["registered"] is False and retry["tx_hash"] is None
    events = ok(dn.run("history", "--service", service, "--json"))["events"]
    assert [e["kind"] for e in events] == ["registered"]


def test_approve_retry_after_crash_records_once(dn):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service)
    crashed = dn.ledger("approver")
    crashed._sender.send(crashed.registry.functions.approve(*crashed._vote_args(digest, service, ENV), ""))
    retry = ok(dn.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV, "--json"))
    assert retry["recorded"] is False and retry["tx_hash"] is None
    approvals = [e for e in ok(dn.run("history", "--service", service, "--json"))["events"] if e["kind"] == "approved"]
    assert len(approvals) == 1 and approvals[0]["fields"]["approver"] == dn.address("approver")


def _retry_while_pending(dn: Devnet, part: str, fn_of, cli_args: tuple) -> dict:
    """Send fn_of(ledger) from `part` with automine off (the crash leaves it pending), run the CLI retry,
    mine once both are in the pool, and report what happened."""
    ledger = dn.ledger(part)
    nonce_before = dn.nonce(part)
    rpc_call(dn.rpc_url, "evm_setAutomine", [False])
    try:
        ledger._sender.send(fn_of(ledger))
        proc = subprocess.Popen([*CLI, *map(str, cli_args), "--json"], cwd=dn.workdir, text=True,
                                env=clean_env(SHIPLEDGER_PRIVATE_KEY=dn.key(part)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if int(rpc_call(dn.rpc_url, "txpool_status")["pending"], 16) >= 2:
                break
            time.sleep(0.05)
        rpc_call(dn.rpc_url, "evm_mine")
    finally:
        rpc_call(dn.rpc_url, "evm_setAutomine", [True])
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert_no_traceback(err)
    return {"result": Result(proc.returncode, out, err), "sent": dn.nonce(part) - nonce_before}


@pytest.fixture(scope="module")
def pending_retries(dn) -> dict:
    """A register and an approve each retried by the CLI while the crashed first transaction is still pending."""
    service = unique()
    digest = digest_for(service)
    spec = ArtifactSpec(digest=digest, service=service, version="1.0")
    register = _retry_while_pending(
        dn, "registrar", lambda l: l.registry.functions.register(l.validate_spec(spec)),
        ("register", "--digest", digest, "--service", service, "--version", "1.0"))
    dn.set_policy(service)
    approve = _retry_while_pending(
        dn, "approver", lambda l: l.registry.functions.approve(*l._vote_args(digest, service, ENV), ""),
        ("approve", "--digest", digest, "--service", service, "--env", ENV))
    return {"service": service, "register": register, "approve": approve, "events": dn.history(service)}


def test_register_retry_while_first_tx_pending_records_once(pending_retries):
    assert [e.kind for e in pending_retries["events"]].count("registered") == 1


def test_approve_retry_while_first_tx_pending_records_once(pending_retries):
    assert [e.kind for e in pending_retries["events"]].count("approved") == 1


def test_register_retry_while_first_tx_pending_sends_nothing(pending_retries):
    outcome = pending_retries["register"]
    assert ok(outcome["result"])["registered"] is False
    assert outcome["sent"] == 1  # only the crashed transaction


def test_approve_retry_while_first_tx_pending_exits_0(pending_retries):
    outcome = pending_retries["approve"]
    assert ok(outcome["result"])["recorded"] is False
    assert outcome["sent"] == 1


def test_approve_concurrent_threads_share_one_ledger(dn):
    service = unique()
    digests = [dn.register(service, f"1.0.{i}") for i in range(4)]
    dn.set_policy(service, threshold=1)
    ledger = dn.ledger("approver")  # one instance, one key, four threads
    start = threading.Barrier(len(digests))

    def approve(digest):
        start.wait()
        return ledger.approve(digest, service, ENV, "concurrent")

    with ThreadPoolExecutor(len(digests)) as pool:
        receipts = list(pool.map(approve, digests))
    assert all(r is not None for r in receipts) and len({r.tx_hash for r in receipts}) == len(digests)
    nonces = sorted(ledger.w3.eth.get_transaction(r.tx_hash)["nonce"] for r in receipts)
    assert nonces == list(range(nonces[0], nonces[0] + len(digests)))
    approved = dn.history(service, "approved")
    assert sorted(e.fields["digest"] for e in approved) == sorted("0x" + d.removeprefix("sha256:") for d in digests)
    assert all(ledger.gate(d, service, ENV).allowed for d in digests)


# A long-lived Ledger (the rollout controller is one) must survive another process using its key.
def test_ledger_survives_cli_using_the_same_key(dn):
    steward = dn.ledger("steward", 2)
    steward.propose(steward.change_org_add(unique("org"), new_address()))
    ok(dn.as_("steward", "org", "add", unique("org"), "--steward", new_address(), "--json", index=2))
    assert steward.propose(steward.change_org_add(unique("org"), new_address())).state == "pending"


def test_history_table_summarises_every_event_kind(dn):
    """Last in the file. Every kind is made here, so that the check does not depend on which other
    tests shared this devnet."""
    service = unique()
    vetoed = dn.register(service, "0.9.0")
    dn.set_policy(service)
    approver = dn.ledger("approver", 2)
    approver.reject(vetoed, service, ENV, "not this one")
    approver.withdraw(vetoed, service, ENV)
    dn.deployed(service, "1.0.0")
    second = dn.deployed(service, "1.1.0")
    deployer, responder = dn.ledger("deployer"), dn.ledger("responder")
    deployer.rollback(second, "latency")
    digest = dn.release(service, "1.2.0")
    third = deployer.start_deployment(digest, service, ENV, 10)
    deployer.promote(third, 50)
    deployer.fail(third, "errors")
    responder.resolve(responder.open_incident(service, ENV, 3, "slow"))
    dn.ledger("registrar").revoke(digest, service, "withdrawn from sale")
    kinds = {row["kind"] for row in ok(dn.run("history", "--json"))["events"]}
    assert {"registered", "approved", "rejected", "withdrawn", "revoked", "deployed", "promoted", "completed", "failed",
            "rolled-back", "incident-opened", "incident-resolved", "policy-set", "member-added"} <= kinds
    table = dn.run("history", "--format", "table")
    assert table.code == 0 and table.err == ""
    assert {line.split()[2] for line in table.out.splitlines()[1:]} == kinds

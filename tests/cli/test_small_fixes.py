"""The "smaller things" of issue 15, one test per reported case, each run through the real CLI
against a real devnet (the `dn` fixture of tests/support.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from importlib import metadata

import pytest
from web3 import Web3

from support import CLI, ENV, assert_no_traceback, clean_env, digest_for, fails, new_address, ok, one_line, unique


def _miscased(address: str) -> str:
    """The checksummed address with the case of its first letter flipped: a wrong EIP-55 checksum."""
    at = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    return address[:at] + address[at].swapcase() + address[at + 1 :]


# ============================================================================ addresses


@pytest.mark.parametrize("command", [
    ("role", "grant", "DEPLOYER", "{address}"),
    ("role", "revoke", "DEPLOYER", "{address}"),
    ("member", "add", "{address}"),
    ("member", "remove", "{address}"),
    ("history", "--approver", "{address}", "--no-sync"),
    ("export", "--format", "jsonl", "--out", "x.jsonl", "--approver", "{address}", "--no-sync"),
])
def test_address_with_a_wrong_checksum_is_refused(dn, command):
    address = new_address()
    wrong = _miscased(address)
    assert wrong != address and wrong.lower() == address.lower()
    nonce = dn.nonce("steward")
    result = dn.as_("steward", *[a.format(address=wrong) for a in command], "--json")
    message = fails(result, 2, "wrong EIP-55 checksum", wrong)
    assert "argument" in message and ("address" in message or "--approver" in message)  # names the argument
    assert dn.nonce("steward") == nonce  # nothing was sent
    assert not (dn.workdir / "x.jsonl").exists()


def test_address_without_a_checksum_is_accepted(dn):
    """All lower case carries no checksum (EIP-55): taken as typed, recorded checksummed."""
    address = new_address()
    data = ok(dn.as_("steward", "member", "add", address.lower(), "--json"))
    assert data["address"] == address
    assert dn.ledger().organisation_of(address) == 1
    proposal = ok(dn.as_("steward", "role", "grant", "DEPLOYER", address.lower(), "--json"))
    assert proposal["change"]["account"] == address


# ============================================================================ free text in the table view


def test_history_table_escapes_control_characters_in_free_text(dn):
    service = unique()
    forged = "x\n999999  2099-01-01T00:00:00+00:00  completed               " + service + "  prod      #1 live"
    title = forged + " \u202eevil\u202c \x1b[2J end"
    dn.ledger("responder").open_incident(service, ENV, 2, title)

    table = dn.run("history", "--service", service)
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert len(lines) == 2, table.out  # the header and the one event: no forged row
    assert "\\n999999" in lines[1] and "\\u202e" in lines[1] and "\\u202c" in lines[1] and "\\x1b[2J" in lines[1]
    assert not any(c in table.out for c in "\u202e\u202c\x1b")

    events = ok(dn.run("history", "--service", service, "--format", "json"))["events"]
    assert [e["fields"]["title"] for e in events] == [title]  # JSON stays exact
    csv_out = dn.run("history", "--service", service, "--format", "csv", "--no-sync").out
    assert title in csv_out  # CSV too (quoted by the csv module)

    suspects = dn.run("incident", "suspects", str(events[0]["fields"]["id"]), "--no-sync")
    assert suspects.code == 0, suspects.err
    assert "\u202e" not in suspects.out and "\\u202e" in suspects.out.splitlines()[0]


# ============================================================================ names and case


def test_a_name_differing_only_in_case_from_a_policy_name_warns(dn):
    service = unique()
    dn.set_policy(service, ENV, threshold=1)
    twin = service.upper()

    result = dn.as_("steward", "policy", "set", twin, ENV, "--threshold", "1", "--json")
    proposal = ok(result)
    assert proposal["change"]["service"] == twin  # a warning, not a refusal: such names may exist on chain
    assert f"warning: service '{twin}' differs only in case from '{service}'" in result.err
    dn.passed(proposal["proposal_id"])  # the second organisation agrees: TWIN has a policy of its own
    warning = dn.as_("steward", "policy", "set", twin, ENV, "--threshold", "1", "--json").err
    assert "warning" not in warning  # two real services now, nothing to say

    other = unique()
    dn.set_policy(other, ENV, threshold=1)
    result = dn.as_("registrar", "register", "--digest", digest_for(other), "--service", other.upper(), "--version", "1",
                    "--json")
    assert result.code == 0, result.err
    assert f"warning: service '{other.upper()}' differs only in case from '{other}'" in result.err
    result = dn.as_("responder", "incident", "open", "--service", other, "--env", ENV.upper(), "--severity", "3",
                    "--title", "t", "--json")
    assert result.code == 0, result.err
    assert f"environment '{ENV.upper()}' differs only in case from '{ENV}'" in result.err
    exact = dn.as_("registrar", "register", "--digest", digest_for(other + "2"), "--service", other, "--version", "2",
                   "--json")
    assert exact.code == 0 and "warning" not in exact.err


# ============================================================================ filters that cannot match


@pytest.mark.parametrize("args, needles", [
    (("history", "--since", "10", "--until", "5"), ("--since 10 is after --until 5",)),
    (("history", "--since", "2026-02-01", "--until", "2026-01-01"), ("is after",)),
    (("history", "--since", ""), ("--since", "neither a block number")),
    (("history", "--until", ""), ("--until",)),
    (("history", "--service", ""), ("--service",)),
    (("history", "--org", "99"), ("no organisation 99", "1 (")),
    (("history", "--org", "0"), ("--org",)),
    (("export", "--format", "csv", "--out", "e.csv", "--org", "99"), ("no organisation 99",)),
    (("export", "--format", "csv", "--out", "e.csv", "--since", ""), ("--since",)),
    (("report", "--json", "--prod-env", ","), ("--prod-env", "names no environment")),
    (("report", "--json", "--repo", "/no/such/repo"), ("--repo", "no such directory")),
    (("report", "--json", "--since", "2026-02-01", "--until", "2026-01-01"), ("is after",)),
    (("report", "--json", "--since", ""), ("--since",)),
])
def test_filters_that_cannot_match_are_usage_errors(dn, tmp_path, args, needles):
    one_line(fails(dn.run(*args, "--db", tmp_path / "index.sqlite", "--json"), 2, *needles))
    assert not (dn.workdir / "e.csv").exists()


def test_filters_that_can_match_still_answer(dn, tmp_path):
    db = tmp_path / "index.sqlite"
    assert ok(dn.run("history", "--org", "1", "--db", db, "--json"))["events"]  # org 1 exists: its events
    same_block = ok(dn.run("history", "--since", "5", "--until", "5", "--db", db, "--no-sync", "--json"))["events"]
    assert same_block and {e["block"] for e in same_block} == {5}


# ============================================================================ exports and reports


def _run_with_umask(dn, umask: int, *args):
    proc = subprocess.run([*CLI, *map(str, args)], cwd=dn.workdir, env=clean_env(), capture_output=True, text=True,
                          timeout=120, preexec_fn=lambda: os.umask(umask))
    assert_no_traceback(proc.stderr)
    return proc


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_exports_and_reports_respect_the_umask(dn, tmp_path, umask, mode):
    db = tmp_path / "index.sqlite"
    export = tmp_path / "history.jsonl"
    done = _run_with_umask(dn, umask, "export", "--format", "jsonl", "--out", export, "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(export.stat().st_mode) == mode
    report = tmp_path / "dora.html"
    done = _run_with_umask(dn, umask, "report", "--out", report, "--db", db, "--no-sync", "--json")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(report.stat().st_mode) == mode


@pytest.mark.parametrize("command", [("export", "--format", "csv"), ("report",)])
def test_out_that_is_a_symlink_is_refused_not_followed(dn, tmp_path, command):
    target = tmp_path / "someone-elses-file"
    target.write_text("keep me\n")
    link = tmp_path / "out"
    link.symlink_to(target)
    one_line(fails(dn.run(*command, "--out", link, "--db", tmp_path / "index.sqlite", "--json"), 2, "symbolic link"))
    assert link.is_symlink() and target.read_text() == "keep me\n"


# ============================================================================ help and wording


def test_sign_only_says_what_it_signed(dn, tmp_path):
    service = unique()
    digest = dn.register(service)
    out = tmp_path / "vote.json"
    result = dn.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV, "--sign-only",
                    "--out", out)
    assert result.code == 0, result.err
    assert "signed an approval by" in result.err and "signed a approve" not in result.err


def test_policy_set_counts_in_words(dn):
    service = unique()
    one = dn.as_("steward", "policy", "set", service, ENV, "--threshold", "1")
    assert one.code == 0, one.err
    assert "1 of 2 organisations approved" in one.err and "1 more organisation must" in one.err, one.err
    dn.passed(dn.ledger().proposals()[-1].id)
    two = dn.as_("steward", "policy", "set", service, ENV, "--threshold", "2", "--min-orgs", "1")
    assert two.code == 0, two.err
    executed = dn.as_("steward", "governance", "approve", dn.ledger().proposals()[-1].id, index=1)
    assert ": 2 approvals from 1 organisation" in executed.err, executed.err  # tightening: runs at once
    table = dn.run("history", "--service", service, "--kind", "policy-set").out
    assert "1 approval, 0 orgs" in table and "2 approvals, 1 org" in table and "1 approvals" not in table


@pytest.mark.parametrize("edit, needle", [
    (lambda book: book.__setitem__("contracts", ["not", "an", "object"]), "contracts.ReleaseRegistry.address is missing"),
    (lambda book: book["contracts"]["DeploymentLedger"].__setitem__("address", "0x12"),
     "contracts.DeploymentLedger.address '0x12' is not an address"),
    (lambda book: book.__setitem__("chain_id", "abc"), "chain_id 'abc' is not a number"),
])
def test_malformed_address_book_message_names_the_field(dn, tmp_path, edit, needle):
    book = dn.book_variant(tmp_path, "bad", edit)
    message = fails(dn.run("policy", "show", unique(), ENV, "--deployment", book, "--json"), 1, f"address book {book}", needle)
    one_line(message)
    assert "indices" not in message and "missing or bad" not in message


def test_help_describes_service_version_percent_port_and_reason():
    """Every --service, --version, --percent, --port and --reason of every command has a help text."""
    import argparse

    from shipledger.cli import build_parser

    seen = set()

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + (name,))
            elif set(action.option_strings) & {"--service", "--version", "--percent", "--port", "--reason", "--env"}:
                seen.add(action.option_strings[0])
                assert action.help and action.help.strip(), f"{' '.join(path)} {action.option_strings[0]} has no help"

    walk(build_parser(), ("shipledger",))
    assert seen == {"--service", "--version", "--percent", "--port", "--reason", "--env"}


def test_version_option(tmp_path):
    proc = subprocess.run([*CLI, "--version"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"shipledger {metadata.version('shipledger')}\n"
    # `register --version` is still the artifact's version, not this option.
    proc = subprocess.run([*CLI, "register", "--service", "s", "--version", "1.0", "--digest", "sha256:xx"], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "malformed digest" in proc.stderr


def test_messages_show_digests_as_sha256(dn):
    service = unique()
    digest = digest_for(service)  # never registered
    message = fails(dn.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV, "--json"), 3,
                    f"artifact {digest} is not registered for {service}")
    assert "0x" + digest.removeprefix("sha256:") not in message


def test_prior_environment_is_shown_by_name(dn):
    service = unique()
    prior = "staging-" + unique("e")[2:]
    dn.set_policy(service, ENV, threshold=1, min_organisations=1, prior_environment=prior)
    digest = dn.register(service)
    dn.approve(digest, service, ENV, approvers=(0,))
    key = "0x" + Web3.keccak(text=prior).hex().removeprefix("0x")

    gate = dn.run("gate", "--digest", digest, "--service", service, "--env", ENV)
    assert gate.code == 3 and f"the required prior environment ({prior})" in gate.err and key not in gate.err
    data = json.loads(dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json").out)
    assert data["details"] == {"environment": prior, "environment_key": key}

    shown = ok(dn.run("policy", "show", service, ENV, "--json"))["policy"]
    assert shown["prior_environment"] == prior and shown["prior_environment_key"] == key
    status = dn.run("status", service, ENV)
    assert f"after a deployment to {prior}" in status.out and f"prior environment ({prior})" in status.out
    start = dn.as_("deployer", "deploy", "start", "--digest", digest, "--service", service, "--env", ENV, "--json")
    fails(start, 3, f"prior environment ({prior})")


def test_a_vote_signed_after_the_head_is_relayed_with_gas_to_record_it(dn):
    """The node estimates voteBySig on the latest block, where a vote signed after that block's time is
    skipped as signed_in_future (cheap); mined a few seconds later it is recorded, which used to run out
    of the estimated gas. Found by the browser wallet's relay flow."""
    from shipledger.network.devnet import rpc_call

    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=1)
    head_time = dn.block_time()
    signed = dn.ledger("approver").sign_approval(digest, service, ENV, signed_at=head_time + 5)
    rpc_call(dn.rpc_url, "evm_setNextBlockTimestamp", [head_time + 10])
    receipt, skipped = dn.ledger("outsider").submit_approvals([signed])
    assert skipped == []
    assert dn.ledger().vote_of(digest, service, ENV, dn.address("approver")).decision == "approve"
    assert dn.ledger().gate(digest, service, ENV).allowed

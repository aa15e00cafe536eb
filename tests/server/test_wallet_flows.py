"""The web app's wallet flows in Debian's headless chromium (Python playwright, executable_path; no
downloaded browser), against a real `shipledger serve` with the relay on and a real devnet.

The approver's wallet (conftest.Wallet) is tests/server/test-wallet.js (web/test-wallet.js bundled with viem): a real
EIP-1193 provider around viem's local account, announced through EIP-6963, making real secp256k1
signatures and signing its own transactions; its node calls go to the devnet through an exposed
binding, as a wallet reaches its node itself. The page under test is the served one, with its CSP:
any console error (a CSP violation is one) fails the flow. A screenshot of every page is saved in the
test's tmp directory."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from support import ENV, ok, unique
from conftest import confirm_shown, message, open_inbox, waiting_release

REFUSED = "You refused in the wallet: nothing was signed and nothing was sent."


def test_flow1_approve_in_the_browser_relay_submits_and_the_gate_flips(dn, server, wallet):
    service, digest = waiting_release(dn, server, dn.address("approver", 0))
    gate = "/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": ENV})
    assert server.get(gate).json()["reason"] == "not_enough_approvals"
    w = wallet("approver", 0)
    approver = dn.address("approver", 0)
    row = open_inbox(w, server, approver, digest)
    row.locator('button[data-action="approve"]').click()
    shown = confirm_shown(w)
    # plain words for exactly what will be signed: decision, artifact, environment, validity, signer, ledger
    for needle in ("APPROVE this release", f"{service} 1.0.0, {digest}", f"Environment: {ENV}", "Valid: from ",
                   " UTC until ", approver, f"chain {dn.info['chain_id']}", "Sign with Test Wallet"):
        assert needle in shown, (needle, shown)
    assert "eth_signTypedData_v4" not in w.calls()  # nothing is asked of the wallet before the user says yes
    w.page.click('button[data-confirm="yes"]')
    done = message(w, "done")
    assert done.startswith("Your approval is recorded in transaction 0x"), done
    assert server.get(gate).json()["allowed"] is True
    row.locator(".gate").filter(has_text="allowed").wait_for()  # the page shows the new gate answer
    w.shot("inbox-allowed")
    vote = dn.ledger().vote_of(digest, service, ENV, approver)
    assert vote.decision == "approve"
    assert [c for c in w.calls() if c.startswith(("eth_requestAccounts", "eth_signTypedData"))] == [
        "eth_requestAccounts", "eth_signTypedData_v4"]
    [body] = w.relayed
    relayed = json.loads(body)
    assert relayed["signer"] == approver and relayed["decision"] == 1 and isinstance(relayed["nonce"], int)
    assert dn.ledger().votes(digest, service, ENV)[0].approver == approver


def test_flow2_a_rejection_with_a_v01_signature_is_normalised_and_recorded(dn, server, wallet):
    service, digest = waiting_release(dn, server, dn.address("approver", 1))
    w = wallet("approver", 1, mode="v01")
    approver = dn.address("approver", 1)
    row = open_inbox(w, server, approver, digest)
    row.locator('button[data-action="reject"]').click()
    assert "REJECT this release (a veto)" in confirm_shown(w)
    w.page.click('button[data-confirm="yes"]')
    assert message(w, "done").startswith("Your rejection is recorded in transaction 0x")
    [body] = w.relayed
    assert json.loads(body)["signature"][-2:] in ("1b", "1c")  # the wallet gave 00/01
    assert dn.ledger().vote_of(digest, service, ENV, approver).decision == "reject"
    gate = server.until("/v1/gate?" + urlencode({"digest": digest, "service": service, "environment": ENV}),
                        lambda a: a.json()["reason"] != "not_enough_approvals")
    assert gate.json()["allowed"] is False


def test_flow3_the_wallet_refuses_or_never_answers_and_nothing_is_sent(dn, server, wallet):
    service, digest = waiting_release(dn, server, dn.address("approver", 0))
    approver = dn.address("approver", 0)
    refusing = wallet("approver", 0, mode="refuse")
    row = open_inbox(refusing, server, approver, digest)
    row.locator('button[data-action="approve"]').click()
    confirm_shown(refusing)
    refusing.page.click('button[data-confirm="yes"]')
    assert message(refusing, "error") == REFUSED
    assert "eth_signTypedData_v4" in refusing.calls() and refusing.relayed == []
    # cancelling on the page asks the wallet for nothing
    row.locator('button[data-action="approve"]').click()
    confirm_shown(refusing)
    refusing.page.click('button[data-confirm="no"]')
    refusing.page.locator(".wallet-message").filter(has_text="Cancelled: nothing was signed").wait_for()
    assert refusing.calls().count("eth_signTypedData_v4") == 1 and refusing.relayed == []

    silent = wallet("approver", 0, mode="silent")
    silent.page.clock.install()
    row = open_inbox(silent, server, approver, digest)
    row.locator('button[data-action="approve"]').click()
    confirm_shown(silent)
    silent.page.click('button[data-confirm="yes"]')
    silent.page.locator(".wallet-message").filter(has_text="Waiting for your signature").wait_for()
    silent.page.clock.fast_forward("02:01")
    timed_out = message(silent, "error")
    assert timed_out.startswith("The wallet did not answer eth_signTypedData_v4 within 120 s: nothing was sent."), timed_out
    assert silent.relayed == []
    assert dn.ledger().vote_of(digest, service, ENV, approver).decision == "none"


def test_flow4_a_wallet_on_the_wrong_chain_is_switched_then_signs(dn, server, wallet):
    service, digest = waiting_release(dn, server, dn.address("approver", 0))
    approver = dn.address("approver", 0)
    w = wallet("approver", 0, chain_id=1, known_chains=(1,))  # mainnet, and the devnet unknown to it
    row = open_inbox(w, server, approver, digest)
    row.locator('button[data-action="approve"]').click()
    confirm_shown(w)
    calls = w.calls()
    assert calls.index("wallet_switchEthereumChain") < calls.index("wallet_addEthereumChain")  # 4902, then added
    assert w.page.evaluate("window.__walletCalls").count("eth_chainId") >= 2
    w.page.click('button[data-confirm="yes"]')
    assert message(w, "done").startswith("Your approval is recorded")
    assert dn.ledger().vote_of(digest, service, ENV, approver).decision == "approve"


def test_flow5_history_filter_and_an_export_that_verify_export_accepts(dn, server, wallet, tmp_path):
    service = unique()
    dn.deployed(service)
    server.until("/v1/history?" + urlencode({"service": service, "kind": "completed"}),
                 lambda a: a.status == 200 and a.json()["events"])
    w = wallet("outsider")
    w.page.goto(server.url + "/history", wait_until="networkidle")
    w.page.fill('input[name="service"]', service)
    w.page.click('form.filters button[type="submit"]')
    w.page.wait_for_url("**/history?*service=*")
    w.shot("history-filtered")
    rows = w.page.locator("main table tbody tr")
    assert rows.count() == len(dn.history(service)) > 0
    assert set(w.page.locator("main table tbody tr td:nth-child(4)").all_inner_texts()) == {service}
    with w.page.expect_download() as download:
        w.page.click("text=Export CSV")
    saved = tmp_path / "history.csv"
    download.value.save_as(saved)
    checked = ok(dn.run("verify-export", str(saved), "--json"))
    assert checked["ok"] is True and checked["lines"] == len(dn.history(service))


def test_flow6_a_steward_approves_a_governance_proposal_from_the_browser(dn, server, wallet):
    service = unique()
    proposal = dn.ledger("steward", 0).set_policy(service, ENV, threshold=1, min_organisations=1)
    assert proposal.state == "pending" and proposal.approvals == 1
    server.until("/v1/proposals", lambda a: any(p["proposal_id"] == proposal.id and p["state"] == "pending"
                                                for p in a.json()["proposals"]))
    w = wallet("steward", 1)
    w.page.goto(server.url + "/governance", wait_until="networkidle")
    row = w.page.locator(f'tr.proposal[data-proposal-id="{proposal.id}"]')
    assert row.locator("td.state").inner_text() == "pending"
    assert row.locator("td.approvals").inner_text() == f"1 of {proposal.needed}"
    w.shot("governance")
    row.locator('button[data-action="approve"]').click()
    shown = confirm_shown(w)
    assert f"APPROVE governance proposal {proposal.id}" in shown and dn.address("steward", 1) in shown
    assert "Governance contract" in shown and "costs gas" in shown
    w.page.click('button[data-confirm="yes"]')
    assert message(w, "done").startswith(f"Proposal {proposal.id}: approved in transaction 0x")
    after = dn.ledger().proposal(proposal.id)
    assert after.approvals == 2 and after.state in ("scheduled", "executed")
    row.locator("td.approvals").filter(has_text="2 of").wait_for()
    w.shot("governance-approved")


def test_the_wallet_bundles_rebuild_byte_for_byte():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    if not (root / "node_modules" / ".bin" / "esbuild").exists():
        pytest.skip("node_modules has no esbuild (npm ci installs it)")
    done = subprocess.run([sys.executable, str(root / "scripts" / "build_wallet.py"), "--check"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

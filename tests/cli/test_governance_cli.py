"""Suite v2 on the command line, end to end on a real devnet (K = 2 of 3 organisations, 60 s delay):
proposals by stewards, approval by a second organisation, weakening changes waiting out the delay
(anvil's clock moved forward with evm_increaseTime), tightening ones executing at once, cancels, the
exit codes of each refusal; stewards managing their own members; attestations a policy requires;
artifact kinds; signed votes the registry skips."""

from __future__ import annotations

import json

from support import ENV, digest_for, fails, new_address, ok, one_line, unique

PROPOSAL_KEYS = {"proposal_id", "kind", "approvals", "needed", "executable_at", "executed"}
TX_KEYS = {"tx_hash", "block_number", "gas_used"}


def steward(dn, index, *args):
    return dn.as_("steward", *args, index=index)


def test_a_new_policy_needs_a_second_organisation_and_waits_out_the_delay(dn):
    service = unique()
    proposed = ok(steward(dn, 0, "policy", "set", service, ENV, "--threshold", "2", "--min-orgs", "2", "--json"))
    assert PROPOSAL_KEYS | TX_KEYS <= set(proposed)
    assert (proposed["kind"], proposed["approvals"], proposed["needed"], proposed["executed"], proposed["executable_at"]) == \
        ("policy-set", 1, 2, False, 0)
    pid = proposed["proposal_id"]
    assert proposed["change"]["service"] == service and ok(dn.run("policy", "show", service, ENV, "--json")) == {"policy": None}

    one_line(fails(steward(dn, 0, "governance", "approve", pid, "--json"), 3, "has already approved proposal"))
    fails(dn.as_("outsider", "governance", "execute", pid, "--json"), 3, f"proposal {pid} has the approval of 1 of the 2")

    approved = ok(steward(dn, 1, "governance", "approve", pid, "--json"))
    # a policy where there was none lets releases through: weakening, so it waits
    assert (approved["approvals"], approved["executed"], approved["state"], approved["weakening"]) == (2, False, "scheduled", True)
    assert approved["executable_at"] >= dn.block_time() + 59 and TX_KEYS <= set(approved)
    fails(dn.as_("outsider", "governance", "execute", pid, "--json"), 3, "may execute only after its delay")
    assert ok(dn.run("policy", "show", service, ENV, "--json")) == {"policy": None}

    dn.advance(61)
    executed = ok(dn.as_("outsider", "governance", "execute", pid, "--json"))
    assert executed["executed"] is True and executed["state"] == "executed" and TX_KEYS <= set(executed)
    policy = executed["new_state"]["policy"]
    assert (policy["threshold"], policy["min_organisations"], policy["version"]) == (2, 2, 1)
    assert ok(dn.run("policy", "show", service, ENV, "--json"))["policy"] == policy
    fails(dn.as_("outsider", "governance", "execute", pid, "--json"), 3, f"proposal {pid} is executed")


def test_a_tightening_change_executes_with_the_kth_approval(dn):
    service = unique()
    dn.set_policy(service, threshold=1)
    proposed = ok(steward(dn, 2, "governance", "propose", "policy-set", service, ENV, "--threshold", "2", "--json"))
    assert proposed["approvals"] == 1 and not proposed["executed"]
    result = steward(dn, 0, "governance", "approve", proposed["proposal_id"])  # human text this time
    assert result.code == 0 and "executed (it only tightens)" in result.err and "policy version 2" in result.err
    assert dn.ledger().policy(service, ENV).threshold == 2


def test_cancel_stops_a_scheduled_weakening(dn):
    service = unique()
    dn.set_policy(service, threshold=2)
    pid = ok(steward(dn, 0, "governance", "propose", "policy-set", service, ENV, "--threshold", "1", "--json"))["proposal_id"]
    assert ok(steward(dn, 1, "governance", "approve", pid, "--json"))["state"] == "scheduled"
    listed = ok(dn.run("governance", "list", "--pending", "--json"))["proposals"]
    assert pid in [p["proposal_id"] for p in listed] and all(p["state"] in ("pending", "scheduled") for p in listed)
    cancelled = ok(steward(dn, 2, "governance", "cancel", pid, "--json"))  # a third organisation alone may cancel
    assert cancelled["state"] == "cancelled" and TX_KEYS <= set(cancelled)
    dn.advance(61)
    fails(dn.as_("outsider", "governance", "execute", pid, "--json"), 3, f"proposal {pid} is cancelled")
    assert dn.ledger().policy(service, ENV).threshold == 2
    assert pid not in [p["proposal_id"] for p in ok(dn.run("governance", "list", "--pending", "--json"))["proposals"]]
    shown = ok(dn.run("governance", "show", pid, "--json"))
    assert shown["state"] == "cancelled" and shown["change"]["service"] == service and shown["data"].startswith("0x")


def test_only_stewards_propose_approve_or_cancel(dn):
    for part in ("outsider", "admin", "registrar", "approver"):
        nonce = dn.nonce(part)
        one_line(fails(dn.as_(part, "policy", "set", unique(), ENV, "--threshold", "1", "--json"), 3,
                       "is not the steward of any organisation"))
        assert dn.nonce(part) == nonce  # refused before sending
    pid = ok(steward(dn, 0, "governance", "propose", "policy-set", unique(), ENV, "--threshold", "1", "--json"))["proposal_id"]
    fails(dn.as_("outsider", "governance", "approve", pid, "--json"), 3, "is not the steward")
    fails(dn.as_("outsider", "governance", "cancel", pid, "--json"), 3, "is not the steward")
    fails(dn.run("governance", "show", "999999", "--json"), 2, "proposal 999999 does not exist")


def test_steward_adds_members_to_its_own_organisation_only_approvers_without_a_vote(dn):
    address = new_address()
    added = ok(steward(dn, 1, "member", "add", address, "--role", "approver", "--json"))
    assert (added["org"], added["roles"]) == (2, ["APPROVER"]) and TX_KEYS <= set(added)
    assert dn.ledger().has_role("APPROVER", address) and dn.ledger().organisation_of(address) == 2

    nonce = dn.nonce("steward", 1)
    message = fails(steward(dn, 1, "member", "add", new_address(), "--role", "deployer", "--json"), 2,
                    "governance propose role-grant DEPLOYER")
    one_line(message)
    assert dn.nonce("steward", 1) == nonce
    fails(dn.as_("outsider", "member", "add", new_address(), "--json"), 3, "is not the steward")
    # a steward cannot remove another organisation's member
    fails(steward(dn, 0, "member", "remove", address, "--json"), 3, "cannot manage a member of organisation 2")
    removed = ok(steward(dn, 1, "member", "remove", address, "--json"))
    assert TX_KEYS <= set(removed) and not dn.ledger().has_role("APPROVER", address)


def test_roles_across_organisations_are_granted_by_proposal(dn):
    address = new_address()
    ok(steward(dn, 0, "member", "add", address, "--json"))
    proposed = ok(steward(dn, 0, "role", "grant", "registrar", address, "--service", "billing", "--json"))
    assert proposed["kind"] == "role-grant" and proposed["change"]["scope"] == "billing"
    assert not dn.ledger().has_role("REGISTRAR", address, "billing")
    fails(steward(dn, 0, "role", "grant", "registrar", address, "--type", "sbom", "--json"), 2, "--type does not go with REGISTRAR")
    fails(steward(dn, 0, "role", "grant", "approver", address, "--json"), 2, "member add ADDRESS --role approver")
    dn.passed(proposed["proposal_id"])  # a grant widens who may act: it waited out the delay
    assert dn.ledger().has_role("REGISTRAR", address, "billing") and not dn.ledger().has_role("REGISTRAR", address)

    revoke = ok(steward(dn, 2, "governance", "propose", "role-revoke", "REGISTRAR", address, "--service", "billing", "--json"))
    done = ok(steward(dn, 1, "governance", "approve", revoke["proposal_id"], "--json"))
    assert done["executed"] and done["new_state"]["role"] == {"role": "REGISTRAR", "scope": "billing", "address": address, "held": False}


def test_org_add_and_steward_set_are_proposals(dn):
    name, first, second = unique("org"), new_address(), new_address()
    proposed = ok(steward(dn, 0, "org", "add", name, "--steward", first, "--json"))
    assert proposed["kind"] == "org-add" and proposed["change"] == {"name": name, "steward": first}
    dn.passed(proposed["proposal_id"])
    org = dn.ledger().steward_organisation(first)
    assert org > 3
    change = ok(steward(dn, 2, "governance", "propose", "steward-set", name, second, "--json"))
    assert change["change"]["org"] == org
    executed = dn.passed(change["proposal_id"])
    assert executed.executed and dn.ledger().steward_organisation(second) == org and dn.ledger().steward_organisation(first) == 0
    fails(steward(dn, 1, "governance", "propose", "steward-set", "no-such-org", second, "--json"), 2, "no organisation is named")


def test_a_policy_requiring_an_attestation_denies_until_it_is_recorded(dn, tmp_path):
    service = unique()
    dn.set_policy(service, threshold=1, required_attestations=["sbom"])
    shown = ok(dn.run("policy", "show", service, ENV, "--json"))["policy"]
    assert shown["required_attestations"] == ["sbom"] and len(shown["required_attestation_keys"]) == 1
    digest = dn.register(service)
    dn.approve(digest, service, approvers=(0,))
    gate = dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json")
    assert gate.code == 3 and gate.json()["reason"] == "missing_attestation"
    assert gate.json()["details"]["attestation_type"] == "sbom"
    human = dn.run("gate", "--digest", digest, "--service", service, "--env", ENV)
    assert "requires a sbom attestation" in human.err

    document = tmp_path / "sbom.json"
    document.write_text('{"packages": []}\n')
    fails(dn.as_("outsider", "attest", "--digest", digest, "--service", service, "--type", "sbom", "--document", document,
                 "--json"), 3, "is not an ATTESTOR of sbom")
    fails(dn.as_("registrar", "attest", "--digest", digest, "--service", service, "--type", "sbom", "--document",
                 tmp_path / "missing.json", "--json"), 2, "is not a file")
    attested = ok(dn.as_("registrar", "attest", "--digest", digest, "--service", service, "--type", "sbom",
                         "--document", document, "--uri", "https://example.com/sbom.json", "--json"))
    assert attested["document_digest"] == digest_for('{"packages": []}\n') and TX_KEYS <= set(attested)
    assert dn.ledger().attestation_of(digest, service, "sbom") == attested["document_digest"]
    assert ok(dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json"))["allowed"] is True


def test_register_kind_is_recorded_and_shown(dn, tmp_path):
    service = unique()
    artifact = tmp_path / "values.yaml"
    artifact.write_text("replicas: 3\n")
    data = ok(dn.as_("registrar", "register", artifact, "--service", service, "--version", "1", "--kind", "config", "--json"))
    assert data["kind"] == "config" and data["registered"] and TX_KEYS <= set(data)
    assert dn.ledger().artifact(data["digest"], service).kind == "config"
    again = dn.as_("registrar", "register", artifact, "--service", service, "--version", "1", "--kind", "config")
    assert again.code == 0 and "(config," in again.err and "nothing sent" in again.err
    # the same digest and version as another kind is another record: refused, not a silent no-op
    fails(dn.as_("registrar", "register", artifact, "--service", service, "--version", "1", "--json"), 3,
          "already registered with a different record")
    human = dn.as_("registrar", "register", "--digest", digest_for(service), "--service", service, "--version", "2", "--kind", "image")
    assert human.code == 0 and "(image)" in human.err
    fails(dn.as_("registrar", "register", artifact, "--service", service, "--version", "3", "--kind", "vm"), 2, "invalid choice")


def test_signed_votes_say_what_was_skipped_and_nothing_recorded_exits_3(dn, tmp_path):
    service = unique()
    dn.set_policy(service, threshold=2)
    digest = dn.register(service)
    files = []
    for index in (0, 1):
        out = tmp_path / f"vote{index}.json"
        ok(dn.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV, "--sign-only", "--out", out,
                  "--json", index=index))
        vote = json.loads(out.read_text())
        assert vote["signed_at"] > 0 and vote["deadline"] == vote["signed_at"] + 7 * 24 * 3600
        files.append(out)
    submitted = ok(dn.as_("outsider", "approvals", "submit", *files, files[0], "--json"))
    assert (submitted["submitted"], submitted["recorded"]) == (3, 2) and TX_KEYS <= set(submitted)
    assert [(s["file"], s["reason"]) for s in submitted["skipped"]] == [(str(files[0]), "nonce_used")]
    assert ok(dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json"))["allowed"] is True

    # mined, but nothing recorded: a denial, whose sentence names the transaction and each skip
    message = fails(dn.as_("outsider", "approvals", "submit", *files, "--json"), 3, "none of the 2 signed votes was recorded",
                    f"skipped {files[0]}", "nonce_used, its nonce was already used")
    one_line(message)
    assert " (transaction 0x" in message


def test_settings_change_by_proposal(dn):
    """Last in the module: it changes the devnet's governance for what would follow."""
    fails(steward(dn, 0, "governance", "propose", "settings", "--json"), 2, "--organisations-needed K, --delay DUR")
    longer = ok(steward(dn, 0, "governance", "propose", "settings", "--delay", "2m", "--json"))
    done = ok(steward(dn, 1, "governance", "approve", longer["proposal_id"], "--json"))  # a longer delay only tightens
    assert done["executed"] and done["new_state"]["governance"] == {"organisations_needed": 2, "delay": 120}
    # more organisations than there are: the change is refused when it would run (at the K-th approval)
    too_many = ok(steward(dn, 0, "governance", "propose", "settings", "--organisations-needed", "200", "--json"))
    fails(steward(dn, 1, "governance", "approve", too_many["proposal_id"], "--json"), 2,
          "organisationsNeeded must be 1..the number of organisations")

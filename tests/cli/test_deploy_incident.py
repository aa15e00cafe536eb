"""`shipledger deploy ...` and `shipledger incident ...` as real subprocesses against a real devnet
(suite v2): every step of a rollout re-checked by the ledger, a rollback that never makes a revoked
artifact live again, incidents resolved by responders of a quorum of organisations, postmortems.

Tests use their own service names on the module's one devnet. Policies go through governance
(support.Devnet.govern: two stewards, and the devnet's clock moved past the delay when the change
weakens anything)."""

from __future__ import annotations

import pytest
from eth_account import Account

from shipledger.network.devnet import dev_private_keys
from support import ENV, digest_for, fails, ok, one_line, sha256_hex, unique

TX_KEYS = {"tx_hash", "block_number", "gas_used"}


@pytest.fixture
def files(tmp_path):
    def write(name: str, content: str) -> object:
        path = tmp_path / name
        path.write_text(content)
        return path

    return write


@pytest.fixture(scope="module")
def acme_responder(dn) -> str:
    """A second responder, in acme (the devnet's responder is in globex): an account anvil funds
    beyond the devnet's parts, made a member by acme's steward and granted RESPONDER by governance."""
    key = dev_private_keys(12)[11]
    address = Account.from_key(key).address
    dn.ledger("steward", 0).add_member(address)
    dn.govern(dn.ledger("steward", 0).change_role(True, "RESPONDER", address))
    return key


def gate(dn, digest: str, service: str):
    return dn.run("gate", "--digest", digest, "--service", service, "--env", ENV, "--json")


# ============================================================================ deployments


def test_deploy_start_promote_complete(dn):
    service = unique()
    digest = dn.release(service)
    started = ok(dn.as_("deployer", "deploy", "start", "--digest", digest, "--service", service, "--env", ENV,
                        "--percent", "10", "--json"))
    assert set(started) == {"deployment_id", "digest", "percent"} | TX_KEYS and started["percent"] == 10
    deployment_id = started["deployment_id"]
    assert isinstance(deployment_id, int) and deployment_id > 0
    [event] = dn.history(service, "deployed")
    assert (event.tx_hash, event.block_number) == (started["tx_hash"], started["block_number"])
    assert started["gas_used"] > 21_000
    promoted = ok(dn.as_("deployer", "deploy", "promote", deployment_id, "--percent", "100", "--json"))
    assert promoted["deployment_id"] == deployment_id and TX_KEYS <= set(promoted)
    completed = ok(dn.as_("deployer", "deploy", "complete", deployment_id, "--json"))
    assert completed["deployment_id"] == deployment_id and TX_KEYS <= set(completed)
    deployment = dn.ledger().deployment(deployment_id)
    assert deployment.status == "completed" and deployment.percent == 100
    assert dn.ledger().target_state(service, ENV).live == deployment_id
    kinds = [e.kind for e in dn.history(service) if e.kind in ("deployed", "promoted", "completed")]
    assert kinds == ["deployed", "promoted", "completed"]


def test_deploy_start_without_json_prints_only_the_id_on_stdout(dn):
    service = unique()
    digest = dn.release(service)
    result = dn.as_("deployer", "deploy", "start", "--digest", digest, "--service", service, "--env", ENV, "--percent", "5")
    assert result.code == 0 and result.out.strip().isdigit()
    assert dn.ledger().deployment(int(result.out)).percent == 5


def test_deploy_start_denied_by_gate(dn):
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2)
    message = fails(dn.as_("deployer", "deploy", "start", "--digest", digest, "--service", service, "--env", ENV,
                           "--json"), 3, "not enough approvals: 0 of 2")
    one_line(message)
    assert dn.ledger().target_state(service, ENV).active == 0


def test_deploy_promote_after_a_veto_is_refused_with_the_reason(dn):
    service = unique()
    digest = dn.release(service)
    deployment_id = dn.ledger("deployer").start_deployment(digest, service, ENV, 10)
    vetoer = dn.address("approver", 2)  # initech's approver
    dn.ledger("approver", 2).reject(digest, service, ENV, "the migration is not reversible")

    refused = dn.as_("deployer", "deploy", "promote", deployment_id, "--percent", "50", "--json")

    message = fails(refused, 3, f"deployment {deployment_id} cannot go on: approver {vetoer.lower()} rejected it")
    one_line(message)
    assert refused.json()["error"]["code"] == "StepDenied"
    assert dn.ledger().deployment(deployment_id).percent == 10  # nothing moved
    fails(dn.as_("deployer", "deploy", "complete", deployment_id), 3, "at 10%")
    dn.ledger("approver", 2).withdraw(digest, service, ENV)  # the veto lifted, the step goes through
    assert ok(dn.as_("deployer", "deploy", "promote", deployment_id, "--percent", "100", "--json"))["deployment_id"] == deployment_id


def test_deploy_complete_after_a_fail_verdict_is_refused_for_good(dn):
    service = unique()
    digest = dn.release(service)
    deployer = dn.ledger("deployer")
    deployment_id = deployer.start_deployment(digest, service, ENV, 100)
    deployer.record_analysis(deployment_id, 12.5, "fail", judge="test")
    deployer.record_analysis(deployment_id, 99, "pass", judge="test")  # a Fail is never undone

    refused = dn.as_("deployer", "deploy", "complete", deployment_id, "--json")

    fails(refused, 3, f"deployment {deployment_id} cannot go on: its canary verdict is fail, which blocks it for good")
    assert refused.json()["error"]["code"] == "CanaryBlocks"
    assert dn.ledger().deployment(deployment_id).status == "in_progress"
    rolled = ok(dn.as_("deployer", "deploy", "rollback", deployment_id, "--reason", "canary failed", "--json"))
    assert rolled["restored"] == 0 and TX_KEYS <= set(rolled)


def test_deploy_fail_marks_rollout_failed(dn):
    service = unique()
    digest = dn.release(service)
    deployment_id = dn.ledger("deployer").start_deployment(digest, service, ENV, 25)
    data = ok(dn.as_("deployer", "deploy", "fail", deployment_id, "--reason", "error rate 7%", "--json"))
    assert data["deployment_id"] == deployment_id and TX_KEYS <= set(data)
    assert dn.ledger().deployment(deployment_id).status == "failed"
    assert dn.ledger().target_state(service, ENV).active == 0
    fails(dn.as_("deployer", "deploy", "complete", deployment_id, "--json"), 3, "failed")


def test_deploy_rollback_restores_previous_live(dn):
    service = unique()
    first = dn.deployed(service, "1.0.0")
    second = dn.deployed(service, "1.1.0")
    data = ok(dn.as_("deployer", "deploy", "rollback", second, "--reason", "latency regression", "--json"))
    assert {k: data[k] for k in ("deployment_id", "restored")} == {"deployment_id": second, "restored": first}
    assert TX_KEYS <= set(data)
    assert dn.ledger().target_state(service, ENV).live == first
    assert dn.ledger().deployment(second).status == "rolled_back"


def test_deploy_rollback_never_makes_a_revoked_artifact_live_again(dn):
    service = unique()
    first = dn.deployed(service, "1.0.0")
    dn.ledger("registrar").revoke(digest_for(f"{service}@1.0.0"), service, "backdoored")
    second = dn.ledger("deployer").start_deployment(dn.release(service, "1.0.1"), service, ENV, 10)

    refused = dn.as_("deployer", "deploy", "rollback", second, "--reason", "slow", "--json")

    message = fails(refused, 3, f"rolling back deployment {second} would make deployment {first} live again",
                    "is revoked", "deploy fail")
    one_line(message)
    assert refused.json()["error"]["code"] == "RestoresRevokedArtifact"
    ok(dn.as_("deployer", "deploy", "fail", second, "--reason", "slow", "--json"))
    assert dn.ledger().target_state(service, ENV).live == first  # as before; nothing became live by a rollback


# ============================================================================ incidents


def test_incident_open_ack_mitigate_resolve(dn, files):
    service = unique()
    first = dn.deployed(service, "1.0.0")
    second = dn.deployed(service, "1.1.0")
    details = files("details.md", "# p99 latency x10\n")
    opened = ok(dn.as_("responder", "incident", "open", "--service", service, "--env", ENV, "--severity", "2",
                       "--title", "checkout latency", "--suspect", second, "--details", details, "--json"))
    assert set(opened) == {"incident_id"} | TX_KEYS and isinstance(opened["incident_id"], int)
    incident = opened["incident_id"]
    [event] = dn.history(service, "incident-opened")
    assert event.fields["severity"] == 2 and list(event.fields["suspects"]) == [second]
    assert event.fields["detailsDigest"] == "0x" + sha256_hex(details.read_bytes())
    assert dn.ledger().open_incident_counts(service, ENV) == {1: 0, 2: 1, 3: 0, 4: 0}

    acked = ok(dn.as_("responder", "incident", "ack", incident, "--json"))
    assert acked["incident_id"] == incident and TX_KEYS <= set(acked)
    assert dn.ledger("deployer").rollback(second, "incident") == first
    mitigated = ok(dn.as_("responder", "incident", "mitigate", incident, "--rollback", second, "--json"))
    assert mitigated["incident_id"] == incident and TX_KEYS <= set(mitigated)
    assert dn.ledger().incident(incident).status == "mitigated"

    postmortem = files("postmortem.md", "# What happened\nA cache stampede.\n")
    resolved = dn.as_("responder", "incident", "resolve", incident, "--postmortem", postmortem,
                      "--postmortem-uri", "https://wiki/pm/1", "--json")
    data = ok(resolved)
    assert data["incident_id"] == incident and TX_KEYS <= set(data)
    assert (data["resolved"], data["organisations"], data["needed"]) == (True, 1, 1)  # no policy freezes it
    assert dn.ledger().incident(incident).status == "resolved"
    [event] = dn.history(service, "incident-resolved")
    assert event.fields["postmortemDigest"] == "0x" + sha256_hex(postmortem.read_bytes())
    assert event.fields["postmortemUri"] == "https://wiki/pm/1"
    assert dn.ledger().open_incident_counts(service, ENV) == {1: 0, 2: 0, 3: 0, 4: 0}


def test_incident_resolve_straight_from_open_says_resolved(dn):
    service = unique()
    incident = dn.ledger("responder").open_incident(service, ENV, 4, "a typo on the status page")

    result = dn.as_("responder", "incident", "resolve", incident)

    assert result.code == 0 and result.out == "", result.err
    assert result.err.strip() == f"incident {incident} resolved"
    assert dn.ledger().incident(incident).status == "resolved"
    fails(dn.as_("responder", "incident", "resolve", incident), 3, f"incident {incident} is resolved")


def test_incident_resolve_missing_postmortem_is_usage_error(dn, tmp_path):
    service = unique()
    incident = dn.ledger("responder").open_incident(service, ENV, 3, "flaky")
    nonce = dn.nonce("responder")
    fails(dn.as_("responder", "incident", "resolve", incident, "--postmortem", tmp_path / "nope.md", "--json"), 2, "nope.md")
    fails(dn.as_("responder", "incident", "postmortem", incident, tmp_path / "nope.md", "--json"), 2, "nope.md")
    assert dn.nonce("responder") == nonce


def test_incident_open_sev1_freezes_gate(dn):
    service = unique()
    digest = dn.release(service, freeze_severity=2)
    assert gate(dn, digest, service).code == 0
    minor = dn.ledger("responder").open_incident(service, ENV, 3, "minor: below the freeze severity")
    assert gate(dn, digest, service).code == 0
    opened = ok(dn.as_("responder", "incident", "open", "--service", service, "--env", ENV, "--severity", "1",
                       "--title", "payments down", "--json"))
    incident = opened["incident_id"]
    assert incident != minor
    frozen = gate(dn, digest, service)
    assert frozen.code == 3
    assert (frozen.json()["allowed"], frozen.json()["reason"]) == (False, "frozen_by_incident")
    assert frozen.json()["details"]["severity"] == 1
    fails(dn.as_("deployer", "deploy", "start", "--digest", digest, "--service", service, "--env", ENV, "--json"), 3,
          "frozen")
    assert dn.ledger("responder").resolve(incident).resolved  # resolve quorum 1 (the default): one responder
    assert gate(dn, digest, service).code == 0


def test_incident_resolve_of_a_freeze_needs_responders_of_two_organisations(dn, acme_responder):
    service = unique()
    digest = dn.release(service, freeze_severity=2, resolve_quorum=2)
    incident = dn.ledger("responder").open_incident(service, ENV, 1, "payments down")
    assert gate(dn, digest, service).json()["reason"] == "frozen_by_incident"

    first = dn.as_("responder", "incident", "resolve", incident)  # globex's responder alone

    assert first.code == 0, first.err
    assert first.err.strip() == (f"incident {incident}: 1 of 2 organisations; waiting for a responder of another "
                                 "organisation (it still freezes deployments)")
    assert dn.ledger().incident(incident).status == "open"
    assert gate(dn, digest, service).json()["reason"] == "frozen_by_incident"
    again = dn.as_("responder", "incident", "resolve", incident, "--json")
    assert fails(again, 3) and again.json()["error"]["code"] == "AlreadyResolvedBy"

    second = ok(dn.run("incident", "resolve", incident, "--json", key=acme_responder))

    assert (second["resolved"], second["organisations"], second["needed"]) == (True, 2, 2)
    assert dn.ledger().incident(incident).status == "resolved"
    assert gate(dn, digest, service).code == 0
    approvals = dn.history(service, "incident-resolve-approved")
    assert [(e.fields["organisations"], e.fields["needed"]) for e in approvals] == [(1, 2), (2, 2)]
    assert len(dn.history(service, "incident-resolved")) == 1
    # an incident below the freeze severity is lifted by one responder, quorum or not
    minor = dn.ledger("responder").open_incident(service, ENV, 3, "slow dashboard")
    assert ok(dn.as_("responder", "incident", "resolve", minor, "--json"))["resolved"] is True


def test_incident_postmortem_attaches_digest_and_uri(dn, files):
    service = unique()
    incident = dn.ledger("responder").open_incident(service, ENV, 2, "queue backlog")
    dn.ledger("responder").resolve(incident)
    document = files("pm.md", "# Queue backlog\nA consumer deadlocked.\n")

    attached = ok(dn.as_("responder", "incident", "postmortem", incident, document, "--uri", "https://wiki/pm/7", "--json"))

    digest = "sha256:" + sha256_hex(document.read_bytes())
    assert attached == {"incident_id": incident, "digest": digest, "uri": "https://wiki/pm/7",
                        **{k: attached[k] for k in TX_KEYS}}
    [event] = dn.history(service, "postmortem")
    assert event.fields["digest"] == "0x" + sha256_hex(document.read_bytes())
    assert event.fields["uri"] == "https://wiki/pm/7" and event.fields["responder"] == dn.address("responder")
    assert event.tx_hash == attached["tx_hash"]
    human = dn.as_("responder", "incident", "postmortem", incident, document)
    assert human.code == 0 and human.err.strip() == f"postmortem {digest} attached to incident {incident}"
    fails(dn.as_("outsider", "incident", "postmortem", incident, document), 3, "RESPONDER")


def test_incident_mitigate_names_only_a_rollback_of_its_own_target(dn):
    service, other = unique(), unique()
    dn.deployed(other, "1.0.0")
    elsewhere = dn.deployed(other, "1.1.0")
    dn.ledger("deployer").rollback(elsewhere, "bad")
    incident = dn.ledger("responder").open_incident(service, ENV, 2, "errors")

    refused = dn.as_("responder", "incident", "mitigate", incident, "--rollback", elsewhere, "--json")

    fails(refused, 3, f"deployment {elsewhere} cannot mitigate incident {incident}",
          "another service or environment than the incident's")
    assert refused.json()["error"]["code"] == "RollbackNotFound"
    assert dn.ledger().incident(incident).status == "open"

"""ReleaseRegistry (suite v2): consortium, scoped roles, artifacts and attestations, policies, votes by
transaction and by EIP-712 signature, and the registry side of the gate (`checkRelease`).

Every revert test asserts the exact custom error and its arguments; every state change asserts the
event arguments and the resulting state. The `suite` fixture reverts the chain after each test. Calls
only governance may make are sent from its address by impersonation (kit.as_governance) where the
test is about the registry's rule, not the vote; the vote is tested in test_governance.py. Who may
call what is in test_access.py.
"""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3

from kit import (
    DEFAULT_ADMIN, MAX_SIGNATURE_VALIDITY, ROLES, ZERO32, ZERO_ADDRESS, Decision, Gate, Kind, Skip, advance,
    approve, artifact, artifact_id, as_governance, block_ts, eip712_vote_hash, events, governed, key, latest_ts,
    mine_at, policy, quick_policy, record_hash, register, reject, send_failing, send_many, sha256, signed_vote,
    stored_policy, target, vote_event,
)
from shipledger._internal import artifacts

pytestmark = pytest.mark.filterwarnings("ignore:The log with transaction hash:UserWarning")

SERVICE, ENV = "api", "prod"
DIGEST = sha256("api 1.0.0")
VOTE_TYPEHASH = Web3.keccak(text="Vote(address signer,bytes32 digest,string service,string environment,uint8 decision,"
                                 "uint256 nonce,uint64 signedAt,uint64 deadline)")
EMPTY_BOOTSTRAP = ([], [], [], [], [], [], [], [], [], [], [])


def check(suite, digest=DIGEST, service=SERVICE, environment=ENV) -> tuple:
    return tuple(suite.registry.functions.checkRelease(artifact_id(service, digest), target(service, environment)).call())


def released(reason, a=0, b=0, prior=ZERO32, freeze=0) -> tuple:
    """The ReleaseCheck tuple checkRelease returns."""
    return (int(reason), a, b, prior, freeze)


def fields(struct) -> tuple:
    """A struct decoded from an event (a mapping of its fields) as the tuple a getter returns."""
    return tuple(struct.values()) if hasattr(struct, "values") else tuple(struct)


def vote_of(suite, approver, digest=DIGEST, service=SERVICE, environment=ENV) -> tuple:
    return tuple(suite.registry.functions.voteOf(digest, service, environment, approver).call())


@pytest.fixture
def registry(suite):
    return suite.registry


@pytest.fixture
def ready(suite):
    """api 1.0.0 registered by the registrar and a (api, prod) policy of threshold 1; a second later."""
    register(suite)
    quick_policy(suite)
    advance(suite.w3, 1)
    return suite


# ================================================================================ construction


def test_constructor_refuses_zero_governance_and_uneven_bootstrap(suite, w3):
    art = artifacts.load("ReleaseRegistry")
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    a = suite.actors
    assert suite.revert_of(factory.constructor(ZERO_ADDRESS, EMPTY_BOOTSTRAP), a.admin) == ("ZeroAddress", {})
    uneven = [
        (0, ["x"], "one steward per organisation"),
        (2, [a.approver1], "members, memberOrgs and memberApprovers differ in length"),
        (5, [ROLES["DEPLOYER"]], "roles, roleScopes and roleAccounts differ in length"),
        (8, ["api"], "policies, policyServices and policyEnvironments differ in length"),
    ]
    for index, value, why in uneven:
        bootstrap = list(EMPTY_BOOTSTRAP)
        bootstrap[index] = value
        assert suite.revert_of(factory.constructor(a.outsider, tuple(bootstrap)), a.admin) == (
            "InvalidBootstrap", {"why": why})


def test_constructor_initial_state(registry, suite, w3):
    a, fns = suite.actors, registry.functions
    for role in ROLES:
        assert getattr(fns, f"{role}_ROLE")().call() == ROLES[role]
        assert fns.getRoleAdmin(ROLES[role]).call() == DEFAULT_ADMIN
    assert fns.VOTE_TYPEHASH().call() == VOTE_TYPEHASH
    assert fns.MAX_SIGNATURE_VALIDITY().call() == MAX_SIGNATURE_VALIDITY
    assert tuple(fns.eip712Domain().call()) == (b"\x0f", "shipledger", "2", w3.eth.chain_id, registry.address, ZERO32, [])
    assert fns.governance().call() == suite.governance.address
    assert fns.organisationCount().call() == 3
    assert [fns.stewardOf(org).call() for org in (1, 2, 3)] == [a.steward1, a.steward2, a.steward3]
    members = {a.approver1: 1, a.approver2: 2, a.approver3: 3, a.approver4: 1, a.registrar: 1, a.deployer: 1,
               a.responder: 2, a.outsider: 0, a.admin: 0}
    assert {m: fns.organisationOf(m).call() for m in members} == members
    assert [fns.hasRole(ROLES["APPROVER"], m).call() for m in (a.approver1, a.approver2, a.approver3, a.approver4)] == [True] * 4
    assert fns.hasRole(ROLES["REGISTRAR"], a.registrar).call() and fns.hasRole(ROLES["ATTESTOR"], a.registrar).call()


# ================================================================================ organisations (governance)


def test_addOrganisation_appends_sequential_id(suite, registry):
    steward = Account.create().address
    receipt = governed(suite, registry.functions.addOrganisation("hooli", steward))
    assert events(receipt, registry, "OrganisationAdded") == [{"org": 4, "name": "hooli", "steward": steward}]
    assert (registry.functions.organisationCount().call(), registry.functions.stewardOf(4).call()) == (4, steward)


def test_addOrganisation_max_length_name(suite, registry):
    receipt = as_governance(suite, registry.functions.addOrganisation("x" * 64, Account.create().address))
    assert events(receipt, registry, "OrganisationAdded")[0]["name"] == "x" * 64


@pytest.mark.parametrize("name", ["", "x" * 65, "é" * 33], ids=["empty", "65-bytes", "66-utf8-bytes"])
def test_addOrganisation_invalid_name(suite, registry, name):
    fn = registry.functions.addOrganisation(name, Account.create().address)
    assert suite.revert_of(fn, suite.governance.address) == ("InvalidName", {"name": name})


def test_addOrganisation_zero_or_existing_steward(suite, registry):
    gov = suite.governance.address
    assert suite.revert_of(registry.functions.addOrganisation("hooli", ZERO_ADDRESS), gov) == ("ZeroAddress", {})
    assert suite.revert_of(registry.functions.addOrganisation("hooli", suite.actors.steward2), gov) == (
        "AlreadySteward", {"account": suite.actors.steward2, "org": 2})


def test_addOrganisation_too_many_organisations(suite, registry):
    """255 organisations fit (ids 1..255); the 256th reverts. Org 255 (the top bit of the gate's
    organisation bitmask) counts as an organisation in checkRelease."""
    gov = suite.governance.address
    suite.w3.provider.make_request("anvil_impersonateAccount", [gov])
    suite.w3.provider.make_request("anvil_setBalance", [gov, hex(10**21)])
    stewards = [Account.create() for _ in range(4, 256)]
    send_many(suite, registry, [("addOrganisation", [f"org{i}", s.address]) for i, s in zip(range(4, 256), stewards)], gov)
    assert registry.functions.organisationCount().call() == 255
    assert suite.revert_of(registry.functions.addOrganisation("one-too-many", Account.create().address), gov) == (
        "TooManyOrganisations", {})
    suite.w3.provider.make_request("anvil_stopImpersonatingAccount", [gov])
    # A member of organisation 255 approves by signature; with approver1 (org 1) that is 2 organisations.
    member, steward255 = Account.create(), stewards[-1]
    suite.w3.provider.make_request("anvil_setBalance", [steward255.address, hex(10**18)])
    suite.w3.provider.make_request("anvil_impersonateAccount", [steward255.address])
    suite.transact(registry.functions.addMember(member.address, True), steward255.address)
    register(suite)
    quick_policy(suite, threshold=2, min_organisations=2)
    approve(suite, suite.actors.approver1)
    advance(suite.w3, 1)
    vote = signed_vote(suite, member.address, private_key=member.key)
    receipt = suite.transact(registry.functions.voteBySig([vote]), suite.actors.outsider)
    assert [e["org"] for e in events(receipt, registry, "ArtifactApproved")] == [255]
    assert check(suite) == released(Gate.ALLOWED)


def test_setSteward_moves_the_stewardship(suite, registry):
    a, new = suite.actors, Account.create().address
    receipt = as_governance(suite, registry.functions.setSteward(2, new))
    assert events(receipt, registry, "StewardSet") == [{"org": 2, "oldSteward": a.steward2, "newSteward": new}]
    assert (registry.functions.stewardOf(2).call(), registry.functions.stewardOrganisation(new).call(),
            registry.functions.stewardOrganisation(a.steward2).call()) == (new, 2, 0)
    assert suite.revert_of(registry.functions.addMember(Account.create().address, False), a.steward2) == (
        "NotSteward", {"account": a.steward2})


@pytest.mark.parametrize("org", [0, 4, 255])
def test_setSteward_unknown_organisation(suite, registry, org):
    assert suite.revert_of(registry.functions.setSteward(org, Account.create().address), suite.governance.address) == (
        "OrganisationUnknown", {"org": org})


# ================================================================================ members (stewards)


def test_addMember_records_organisation(suite, registry):
    newcomer = Account.create().address
    receipt = suite.transact(registry.functions.addMember(newcomer, False), suite.actors.steward2)
    assert events(receipt, registry, "MemberAdded") == [{"account": newcomer, "org": 2, "by": suite.actors.steward2}]
    assert events(receipt, registry, "ApproverSlotAssigned") == []
    assert registry.functions.organisationOf(newcomer).call() == 2
    assert not registry.functions.hasRole(ROLES["APPROVER"], newcomer).call()


def test_addMember_as_approver_assigns_vote_slot(suite, registry):
    newcomer, steward = Account.create().address, suite.actors.steward2
    receipt = suite.transact(registry.functions.addMember(newcomer, True), steward)
    # approver1..4 took slots 0..3 at bootstrap
    assert events(receipt, registry, "ApproverSlotAssigned") == [{"account": newcomer, "index": 4, "org": 2, "epoch": 1}]
    assert events(receipt, registry, "RoleGranted") == [{"role": ROLES["APPROVER"], "account": newcomer, "sender": steward}]
    assert registry.functions.hasRole(ROLES["APPROVER"], newcomer).call()


def test_addMember_zero_address(suite, registry):
    assert suite.revert_of(registry.functions.addMember(ZERO_ADDRESS, False), suite.actors.steward1) == ("ZeroAddress", {})


def test_addMember_already_member(suite, registry):
    assert suite.revert_of(registry.functions.addMember(suite.actors.approver4, False), suite.actors.steward2) == (
        "AlreadyMember", {"account": suite.actors.approver4, "org": 1})


def test_removeMember_revokes_approver(ready, registry):
    suite, a = ready, ready.actors
    receipt = suite.transact(registry.functions.removeMember(a.approver2), a.steward2)
    assert events(receipt, registry, "RoleRevoked") == [
        {"role": ROLES["APPROVER"], "account": a.approver2, "sender": a.steward2}]
    assert events(receipt, registry, "ApproverSlotFreed") == [{"account": a.approver2, "index": 1, "epoch": 1}]
    assert events(receipt, registry, "MemberRemoved") == [{"account": a.approver2, "org": 2, "by": a.steward2}]
    assert registry.functions.organisationOf(a.approver2).call() == 0
    assert not registry.functions.hasRole(ROLES["APPROVER"], a.approver2).call()
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), a.approver2) == (
        "NotApprover", {"account": a.approver2})


def test_removeMember_plain_member_then_rejoins_elsewhere(suite, registry):
    a, newcomer = suite.actors, Account.create().address
    suite.transact(registry.functions.addMember(newcomer, False), a.steward3)
    receipt = suite.transact(registry.functions.removeMember(newcomer), a.steward3)
    assert events(receipt, registry, "RoleRevoked") == []
    assert events(receipt, registry, "MemberRemoved") == [{"account": newcomer, "org": 3, "by": a.steward3}]
    suite.transact(registry.functions.addMember(newcomer, False), a.steward2)
    assert registry.functions.organisationOf(newcomer).call() == 2


def test_removeMember_not_member(suite, registry):
    assert suite.revert_of(registry.functions.removeMember(suite.actors.outsider), suite.actors.steward1) == (
        "NotMember", {"account": suite.actors.outsider})


def test_removeMember_approvals_stop_counting(ready, registry):
    suite, a = ready, ready.actors
    quick_policy(suite, threshold=2)
    approve(suite, a.approver1)
    approve(suite, a.approver2)
    assert check(suite) == released(Gate.ALLOWED)
    suite.transact(registry.functions.removeMember(a.approver2), a.steward2)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    assert vote_of(suite, a.approver2) == (Decision.NONE, 0)


def test_removeMember_rejection_stops_counting(ready, registry):
    suite, a = ready, ready.actors
    approve(suite, a.approver1)
    reject(suite, a.approver2)
    assert check(suite) == released(Gate.REJECTED_BY, int(a.approver2, 16))
    suite.transact(registry.functions.removeMember(a.approver2), a.steward2)
    assert check(suite) == released(Gate.ALLOWED)


def test_setApprover_off_and_on_starts_without_votes(ready, registry):
    """v1 kept an approver's votes across revoke and re-grant; v2 gives the slot a new epoch."""
    suite, a = ready, ready.actors
    approve(suite, a.approver1)
    assert check(suite) == released(Gate.ALLOWED)
    suite.transact(registry.functions.setApprover(a.approver1, False), a.steward1)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 0, 1)
    assert registry.functions.organisationOf(a.approver1).call() == 1  # still a member
    receipt = suite.transact(registry.functions.setApprover(a.approver1, True), a.steward1)
    assert events(receipt, registry, "ApproverSlotAssigned") == [{"account": a.approver1, "index": 0, "org": 1, "epoch": 2}]
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 0, 1)
    approve(suite, a.approver1)
    assert check(suite) == released(Gate.ALLOWED)


def test_renounceRole_approver_votes_stop_counting(ready, registry):
    suite, a = ready, ready.actors
    approve(suite, a.approver1)
    receipt = suite.transact(registry.functions.renounceRole(ROLES["APPROVER"], a.approver1), a.approver1)
    assert events(receipt, registry, "ApproverSlotFreed") == [{"account": a.approver1, "index": 0, "epoch": 1}]
    assert not registry.functions.hasRole(ROLES["APPROVER"], a.approver1).call()
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 0, 1)


def test_slot_255_votes_and_counts(suite, registry):
    """256 vote slots: approver1..4 hold 0..3, 251 more fill 4..254, and slot 255 (the top bit of the
    active-approver mask) votes and counts, and stops counting when freed."""
    a, last = suite.actors, Account.from_key(b"\x5a" * 32)
    accounts = [Web3.to_checksum_address((0xA000 + i).to_bytes(20, "big")) for i in range(251)] + [last.address]
    send_many(suite, registry, [("addMember", [account, True]) for account in accounts], a.steward3)
    register(suite)
    quick_policy(suite)
    advance(suite.w3, 1)
    receipt = suite.transact(registry.functions.voteBySig([signed_vote(suite, last.address, private_key=last.key)]),
                             a.outsider)
    assert [e["approver"] for e in events(receipt, registry, "ArtifactApproved")] == [last.address]
    assert check(suite) == released(Gate.ALLOWED)
    suite.transact(registry.functions.setApprover(last.address, False), a.steward3)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 0, 1)


# ================================================================================ scoped roles (governance)


def test_grantScopedRole_needs_membership_and_a_valid_scope(suite, registry):
    a, gov = suite.actors, suite.governance.address
    assert suite.revert_of(registry.functions.grantScopedRole(ROLES["DEPLOYER"], "", a.outsider), gov) == (
        "NotMember", {"account": a.outsider})
    for role, scope in ((ROLES["DEPLOYER"], "api"), (ROLES["RESPONDER"], "prod"), (ROLES["APPROVER"], ""),
                        (DEFAULT_ADMIN, "")):
        assert suite.revert_of(registry.functions.grantScopedRole(role, scope, a.approver1), gov) == (
            "InvalidRole", {"role": role, "scope": scope})
    assert suite.revert_of(registry.functions.grantScopedRole(ROLES["REGISTRAR"], "s" * 65, a.approver1), gov) == (
        "InvalidName", {"name": "s" * 65})
    assert suite.revert_of(registry.functions.grantScopedRole(ROLES["REGISTRAR"], "", a.registrar), gov) == (
        "RoleAlreadyHeld", {"role": ROLES["REGISTRAR"], "scope": "", "account": a.registrar})


def test_grantScopedRole_per_service_and_revoke(suite, registry):
    a, gov = suite.actors, suite.governance.address
    scoped = Web3.keccak(encode(["bytes32", "bytes32"], [ROLES["REGISTRAR"], key("worker")]))
    receipt = as_governance(suite, registry.functions.grantScopedRole(ROLES["REGISTRAR"], "worker", a.approver4))
    assert events(receipt, registry, "RoleGranted") == [{"role": scoped, "account": a.approver4, "sender": gov}]
    assert events(receipt, registry, "ScopedRoleGranted") == [{
        "role": ROLES["REGISTRAR"], "scopeKey": key("worker"), "account": a.approver4, "scope": "worker", "by": gov}]
    assert registry.functions.hasScopedRole(ROLES["REGISTRAR"], key("worker"), a.approver4).call() is True
    assert registry.functions.hasScopedRole(ROLES["REGISTRAR"], key("api"), a.approver4).call() is False
    assert registry.functions.hasScopedRole(ROLES["REGISTRAR"], key("api"), a.registrar).call() is True  # "" covers all
    register(suite, artifact(service="worker"), registrar=a.approver4)
    receipt = as_governance(suite, registry.functions.revokeScopedRole(ROLES["REGISTRAR"], "worker", a.approver4))
    assert events(receipt, registry, "ScopedRoleRevoked") == [{
        "role": ROLES["REGISTRAR"], "scopeKey": key("worker"), "account": a.approver4, "scope": "worker", "by": gov}]
    assert suite.revert_of(registry.functions.register(artifact(service="worker", version="2")), a.approver4) == (
        "NotRegistrarOf", {"account": a.approver4, "service": "worker"})
    assert suite.revert_of(registry.functions.revokeScopedRole(ROLES["REGISTRAR"], "worker", a.approver4), gov) == (
        "RoleNotHeld", {"role": ROLES["REGISTRAR"], "scope": "worker", "account": a.approver4})


# ================================================================================ artifacts


@pytest.mark.parametrize("kind", list(Kind))
def test_register_records_artifact(suite, registry, kind):
    a, item = suite.actors, artifact(kind=kind)
    assert registry.functions.register(item).call({"from": a.registrar}) is True
    receipt = register(suite, item)
    ts = block_ts(suite.w3, receipt)
    assert events(receipt, registry, "ArtifactRegistered") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "versionKey": key("1.0.0"), "service": SERVICE,
        "version": "1.0.0", "kind": kind, "commit": item[4], "committedAt": item[5], "provenance": item[6],
        "sbom": item[7], "uri": item[8], "registrant": a.registrar, "recordHash": record_hash(item)}]
    assert tuple(registry.functions.getArtifact(DIGEST, SERVICE).call()) == (a.registrar, ts, False, kind)
    assert registry.functions.recordOf(SERVICE, "1.0.0").call() == record_hash(item)
    assert registry.functions.recordHash(item).call() == record_hash(item)
    assert registry.functions.isRevoked(artifact_id(SERVICE, DIGEST)).call() is False


def test_register_identical_record_is_noop(suite, registry):
    register(suite)
    before = tuple(registry.functions.getArtifact(DIGEST, SERVICE).call())
    assert registry.functions.register(artifact()).call({"from": suite.actors.registrar}) is False
    assert register(suite, artifact()).logs == []
    assert tuple(registry.functions.getArtifact(DIGEST, SERVICE).call()) == before


@pytest.mark.parametrize("field, value", [("kind", Kind.CONFIG), ("commit", b"\x01" * 32), ("committed_at", 1),
                                          ("provenance", b"\x02" * 32), ("sbom", ZERO32), ("uri", "https://elsewhere")])
def test_register_same_version_other_record(suite, registry, field, value):
    """v1 took a record as identical when (digest, service, version) matched; v2 hashes every field."""
    register(suite)
    other = artifact(**{field: value})
    assert suite.revert_of(registry.functions.register(other), suite.actors.registrar) == (
        "VersionAlreadyRegistered", {"service": SERVICE, "version": "1.0.0", "existingRecordHash": record_hash(artifact())})


def test_register_same_digest_other_service(suite, registry):
    register(suite, artifact(DIGEST), artifact(DIGEST, service="worker"))
    assert registry.functions.recordOf("worker", "1.0.0").call() == record_hash(artifact(DIGEST, service="worker"))
    suite.transact(registry.functions.revoke(DIGEST, "worker", "bad"), suite.actors.registrar)
    assert registry.functions.isRevoked(artifact_id("worker", DIGEST)).call() is True
    assert registry.functions.isRevoked(artifact_id(SERVICE, DIGEST)).call() is False


def test_register_invalid_digest(suite, registry):
    assert suite.revert_of(registry.functions.register(artifact(digest=ZERO32)), suite.actors.registrar) == (
        "InvalidDigest", {})


@pytest.mark.parametrize("field, value", [("service", "s" * 65), ("version", ""), ("version", "v" * 65)],
                         ids=["long-service", "empty-version", "long-version"])
def test_register_invalid_name(suite, registry, field, value):
    item = artifact(DIGEST, **{field: value})
    assert suite.revert_of(registry.functions.register(item), suite.actors.registrar) == ("InvalidName", {"name": value})


def test_register_empty_service_name(suite, registry):
    assert suite.revert_of(registry.functions.register(artifact(DIGEST, service="")), suite.actors.registrar) == (
        "InvalidName", {"name": ""})


def test_register_max_length_names(suite, registry):
    item = artifact(DIGEST, service="s" * 64, version="v" * 64)
    register(suite, item)
    assert registry.functions.recordOf("s" * 64, "v" * 64).call() == record_hash(item)


def test_register_artifact_already_registered(suite, registry):
    register(suite)
    assert suite.revert_of(registry.functions.register(artifact(DIGEST, version="1.0.1")), suite.actors.registrar) == (
        "ArtifactAlreadyRegistered", {"digest": DIGEST, "service": SERVICE})


def test_registerBatch_returns_count(suite, registry):
    items = [artifact(version=v) for v in ("1.0.0", "1.1.0", "2.0.0")]
    assert registry.functions.registerBatch(items).call({"from": suite.actors.registrar}) == 3
    receipt = suite.transact(registry.functions.registerBatch(items), suite.actors.registrar)
    assert [(e["digest"], e["version"], e["recordHash"]) for e in events(receipt, registry, "ArtifactRegistered")] == [
        (item[0], item[2], record_hash(item)) for item in items]


def test_registerBatch_mixed_new_and_identical(suite, registry):
    register(suite)
    new1, new2 = artifact(version="1.1.0"), artifact(service="web")
    batch = [artifact(), new1, new1, new2]
    assert registry.functions.registerBatch(batch).call({"from": suite.actors.registrar}) == 2
    receipt = suite.transact(registry.functions.registerBatch(batch), suite.actors.registrar)
    assert [(e["digest"], e["service"]) for e in events(receipt, registry, "ArtifactRegistered")] == [
        (new1[0], SERVICE), (new2[0], "web")]


def test_registerBatch_all_identical_emits_nothing(suite, registry):
    register(suite)
    assert registry.functions.registerBatch([artifact()]).call({"from": suite.actors.registrar}) == 0
    assert suite.transact(registry.functions.registerBatch([artifact()]), suite.actors.registrar).logs == []


def test_registerBatch_empty(suite, registry):
    assert suite.revert_of(registry.functions.registerBatch([]), suite.actors.registrar) == ("EmptyBatch", {})


def test_registerBatch_bad_last_item_registers_nothing(suite, registry):
    register(suite)
    good1, good2 = artifact(version="1.1.0"), artifact(version="1.2.0")
    bad = artifact(sha256("api 1.0.0 rebuilt"), version="1.0.0")
    fn = registry.functions.registerBatch([good1, good2, bad])
    assert suite.revert_of(fn, suite.actors.registrar) == (
        "VersionAlreadyRegistered", {"service": SERVICE, "version": "1.0.0", "existingRecordHash": record_hash(artifact())})
    assert send_failing(suite, fn, suite.actors.registrar).logs == []
    for item in (good1, good2):
        assert registry.functions.recordOf(SERVICE, item[2]).call() == ZERO32


def test_registerBatch_checks_the_registrar_of_each_service(suite, registry):
    a = suite.actors
    as_governance(suite, registry.functions.grantScopedRole(ROLES["REGISTRAR"], "worker", a.approver4))
    fn = registry.functions.registerBatch([artifact(service="worker"), artifact(service="worker", version="2"),
                                           artifact(service="api")])
    assert suite.revert_of(fn, a.approver4) == ("NotRegistrarOf", {"account": a.approver4, "service": "api"})


def test_revoke_quarantines_artifact(ready, registry):
    suite, a = ready, ready.actors
    approve(suite, a.approver1)
    receipt = suite.transact(registry.functions.revoke(DIGEST, SERVICE, "CVE-2024-0001"), a.registrar)
    assert events(receipt, registry, "ArtifactRevoked") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "service": SERVICE, "reason": "CVE-2024-0001",
        "revoker": a.registrar}]
    assert tuple(registry.functions.getArtifact(DIGEST, SERVICE).call())[2] is True
    assert check(suite) == released(Gate.ARTIFACT_REVOKED)
    # a revoked artifact still counts as registered: its version is taken, re-registering is a no-op
    assert registry.functions.register(artifact()).call({"from": a.registrar}) is False


def test_revoke_unknown_already_revoked_invalid_name(suite, registry):
    a = suite.actors
    assert suite.revert_of(registry.functions.revoke(DIGEST, SERVICE, "x"), a.registrar) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": SERVICE})
    register(suite)
    suite.transact(registry.functions.revoke(DIGEST, SERVICE, "first"), a.registrar)
    assert suite.revert_of(registry.functions.revoke(DIGEST, SERVICE, "second"), a.registrar) == (
        "ArtifactIsRevoked", {"digest": DIGEST, "service": SERVICE})
    assert suite.revert_of(registry.functions.revoke(DIGEST, "", "x"), a.registrar) == ("InvalidName", {"name": ""})


def test_getArtifact_unknown_and_recordOf_unknown(suite, registry):
    register(suite)
    assert suite.revert_of(registry.functions.getArtifact(DIGEST, "worker"), suite.actors.outsider) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": "worker"})
    assert registry.functions.recordOf(SERVICE, "9.9.9").call() == ZERO32


# ================================================================================ attestations


def test_attest_records_and_replaces(suite, registry):
    a = suite.actors
    register(suite)
    document = sha256("sbom document")
    receipt = suite.transact(registry.functions.attest(DIGEST, SERVICE, "sbom", document, "https://sbom/1"), a.registrar)
    assert events(receipt, registry, "AttestationRecorded") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "typeKey": key("sbom"), "service": SERVICE,
        "attestationType": "sbom", "documentDigest": document, "uri": "https://sbom/1", "attestor": a.registrar}]
    assert registry.functions.attestationOf(DIGEST, SERVICE, "sbom").call() == document
    assert registry.functions.attestationOf(DIGEST, SERVICE, "provenance").call() == ZERO32
    later = sha256("sbom document v2")
    suite.transact(registry.functions.attest(DIGEST, SERVICE, "sbom", later, ""), a.registrar)
    assert registry.functions.attestationOf(DIGEST, SERVICE, "sbom").call() == later


def test_attest_refusals(suite, registry):
    a = suite.actors
    assert suite.revert_of(registry.functions.attest(DIGEST, SERVICE, "sbom", sha256("d"), ""), a.registrar) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": SERVICE})
    register(suite)
    assert suite.revert_of(registry.functions.attest(DIGEST, SERVICE, "sbom", ZERO32, ""), a.registrar) == (
        "InvalidDigest", {})
    assert suite.revert_of(registry.functions.attest(DIGEST, SERVICE, "", sha256("d"), ""), a.registrar) == (
        "InvalidName", {"name": ""})
    as_governance(suite, registry.functions.grantScopedRole(ROLES["ATTESTOR"], "sbom", a.approver4))
    suite.transact(registry.functions.attest(DIGEST, SERVICE, "sbom", sha256("d"), ""), a.approver4)
    assert suite.revert_of(registry.functions.attest(DIGEST, SERVICE, "provenance", sha256("d"), ""), a.approver4) == (
        "NotAttestorOf", {"account": a.approver4, "attestationType": "provenance"})


# ================================================================================ policies


def test_setPolicy_first_version(suite, registry):
    receipt = quick_policy(suite, threshold=3, min_organisations=2, ttl=86_400, min_wait=600, freeze_severity=2,
                           resolve_quorum=2, prior="staging", attestations=("sbom", "provenance"))
    new = stored_policy(3, 2, 86_400, 600, 2, 2, 1, "staging", ("sbom", "provenance"))
    old = (0, 0, 0, 0, 0, 0, 0, ZERO32, [])
    [event] = events(receipt, registry, "PolicySet")
    assert {**event, "oldPolicy": fields(event["oldPolicy"]), "newPolicy": fields(event["newPolicy"])} == {
        "serviceKey": key(SERVICE), "environmentKey": key(ENV), "service": SERVICE, "environment": ENV,
        "oldPolicy": old, "newPolicy": new, "priorEnvironment": "staging", "requiredAttestations": ["sbom", "provenance"]}
    assert tuple(registry.functions.getPolicy(SERVICE, ENV).call()) == new
    assert tuple(registry.functions.policyAt(target(SERVICE, ENV)).call()) == new


def test_setPolicy_update_bumps_version(suite, registry):
    quick_policy(suite, threshold=2, min_organisations=1, prior="staging")
    receipt = quick_policy(suite, threshold=1, freeze_severity=4)
    [event] = events(receipt, registry, "PolicySet")
    assert fields(event["oldPolicy"]) == stored_policy(2, 1, prior="staging")
    assert fields(event["newPolicy"]) == stored_policy(1, freeze_severity=4, version=2)
    assert (event["priorEnvironment"], event["requiredAttestations"]) == ("", [])
    quick_policy(suite, environment="staging")  # other targets are independent
    assert registry.functions.getPolicy(SERVICE, "staging").call()[6] == 1


def test_setPolicy_boundaries_accepted(suite, registry):
    types = [f"type-{i}" for i in range(8)]
    quick_policy(suite, threshold=255, min_organisations=3, ttl=2**32 - 1, min_wait=2**32 - 1, freeze_severity=4,
                 resolve_quorum=3, prior="p" * 64, attestations=types)
    assert tuple(registry.functions.getPolicy(SERVICE, ENV).call()) == stored_policy(
        255, 3, 2**32 - 1, 2**32 - 1, 4, 3, 1, "p" * 64, types)


@pytest.mark.parametrize("kwargs, why", [
    ({"threshold": 0}, "threshold must be at least 1"),
    ({"threshold": 2, "min_organisations": 3}, "minOrganisations cannot exceed threshold"),
    ({"threshold": 4, "min_organisations": 4}, "minOrganisations cannot exceed the number of organisations"),
    ({"freeze_severity": 5}, "freezeSeverity must be 0 (off) or 1..4"),
    ({"resolve_quorum": 0}, "resolveQuorum must be 1..the number of organisations"),
    ({"resolve_quorum": 4}, "resolveQuorum must be 1..the number of organisations"),
    ({"prior": ENV}, "prior environments would form a cycle"),
    ({"attestations": [f"t{i}" for i in range(9)]}, "at most 8 required attestations"),
    ({"attestations": ["sbom", "provenance", "sbom"]}, "a required attestation is listed twice"),
], ids=["threshold-zero", "orgs-above-threshold", "orgs-above-org-count", "freeze-5", "quorum-0", "quorum-4",
        "prior-is-self", "nine-attestations", "attestation-twice"])
def test_setPolicy_invalid_policy(suite, registry, kwargs, why):
    fn = registry.functions.setPolicy(SERVICE, ENV, policy(**kwargs))
    assert suite.revert_of(fn, suite.governance.address) == ("InvalidPolicy", {"why": why})


def test_setPolicy_prior_chain_longer_than_16(suite, registry):
    for i in range(16):
        quick_policy(suite, environment=f"e{i + 1}", prior=f"e{i}")  # e16 -> e15 -> ... -> e0 (none)
    fn = registry.functions.setPolicy(SERVICE, "e17", policy(prior="e16"))
    assert suite.revert_of(fn, suite.governance.address) == (
        "InvalidPolicy", {"why": "the chain of prior environments is longer than 16"})


@pytest.mark.parametrize("service, environment, prior, types, bad", [
    ("", ENV, "", [], ""), ("s" * 65, ENV, "", [], "s" * 65), (SERVICE, "", "", [], ""),
    (SERVICE, "e" * 65, "", [], "e" * 65), (SERVICE, ENV, "p" * 65, [], "p" * 65), (SERVICE, ENV, "", [""], "")],
    ids=["empty-service", "long-service", "empty-env", "long-env", "long-prior", "empty-attestation"])
def test_setPolicy_invalid_name(suite, registry, service, environment, prior, types, bad):
    fn = registry.functions.setPolicy(service, environment, policy(prior=prior, attestations=types))
    assert suite.revert_of(fn, suite.governance.address) == ("InvalidName", {"name": bad})


def test_getPolicy_not_found_and_policyAt_empty(suite, registry):
    quick_policy(suite, environment="staging")
    assert suite.revert_of(registry.functions.getPolicy(SERVICE, ENV), suite.actors.outsider) == (
        "PolicyNotFound", {"service": SERVICE, "environment": ENV})
    assert tuple(registry.functions.policyAt(target(SERVICE, ENV)).call()) == (0, 0, 0, 0, 0, 0, 0, ZERO32, [])


# ================================================================================ votes by transaction


def test_approve_records_vote(ready, registry):
    suite, a = ready, ready.actors
    receipt = approve(suite, a.approver2, comment="lgtm")
    ts = block_ts(suite.w3, receipt)
    assert events(receipt, registry, "ArtifactApproved") == [vote_event(a.approver2, 2, signed_at=ts, note="lgtm")]
    assert vote_of(suite, a.approver2) == (Decision.APPROVE, ts)
    assert vote_of(suite, a.approver1) == (Decision.NONE, 0)
    assert vote_of(suite, a.approver2, environment="staging") == (Decision.NONE, 0)
    assert check(suite) == released(Gate.ALLOWED)


def test_approve_carries_policy_version(ready, registry):
    quick_policy(ready, threshold=2)
    receipt = approve(ready, ready.actors.approver1)
    assert events(receipt, registry, "ArtifactApproved")[0]["policyVersion"] == 2


def test_approve_twice(ready, registry):
    approve(ready, ready.actors.approver1)
    assert ready.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), ready.actors.approver1) == (
        "VoteAlreadyCast", {"digest": DIGEST, "environment": ENV, "approver": ready.actors.approver1,
                            "decision": Decision.APPROVE})


def test_approve_after_reject_replaces_vote(ready, registry):
    suite, a = ready, ready.actors
    reject(suite, a.approver1)
    assert check(suite) == released(Gate.REJECTED_BY, int(a.approver1, 16))
    receipt = approve(suite, a.approver1, comment="fixed")
    assert events(receipt, registry, "ArtifactApproved") == [
        vote_event(a.approver1, 1, signed_at=block_ts(suite.w3, receipt), note="fixed")]
    assert check(suite) == released(Gate.ALLOWED)


def test_approve_refusals(suite, registry):
    a = suite.actors
    quick_policy(suite)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), a.approver1) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": SERVICE})
    register(suite)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, "staging", ""), a.approver1) == (
        "PolicyNotFound", {"service": SERVICE, "environment": "staging"})
    for environment in ("", "e" * 65):
        assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, environment, ""), a.approver1) == (
            "InvalidName", {"name": environment})
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), a.outsider) == (
        "NotApprover", {"account": a.outsider})
    suite.transact(registry.functions.revoke(DIGEST, SERVICE, "bad"), a.registrar)
    for fn in (registry.functions.approve(DIGEST, SERVICE, ENV, ""), registry.functions.reject(DIGEST, SERVICE, ENV, "")):
        assert suite.revert_of(fn, a.approver1) == ("ArtifactIsRevoked", {"digest": DIGEST, "service": SERVICE})


def test_registrant_cannot_approve(suite, registry):
    a = suite.actors
    suite.transact(registry.functions.setApprover(a.registrar, True), a.steward1)
    register(suite)
    quick_policy(suite)
    advance(suite.w3, 1)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), a.registrar) == (
        "RegistrantCannotApprove", {"digest": DIGEST, "approver": a.registrar})
    receipt = suite.transact(registry.functions.voteBySig([signed_vote(suite, a.registrar)]), a.outsider)
    assert [e["reason"] for e in events(receipt, registry, "SignedVoteSkipped")] == [Skip.REFUSED]
    # separation of duties only forbids approving: the registrant may still veto its own artifact
    receipt = reject(suite, a.registrar, reason="pulled")
    assert events(receipt, registry, "ArtifactRejected") == [
        vote_event(a.registrar, 1, signed_at=block_ts(suite.w3, receipt), note="pulled", rejected=True)]


def test_reject_records_veto_and_twice(ready, registry):
    suite, a = ready, ready.actors
    receipt = reject(suite, a.approver3, reason="failing canary")
    ts = block_ts(suite.w3, receipt)
    assert events(receipt, registry, "ArtifactRejected") == [
        vote_event(a.approver3, 3, signed_at=ts, note="failing canary", rejected=True)]
    assert vote_of(suite, a.approver3) == (Decision.REJECT, ts)
    assert suite.revert_of(registry.functions.reject(DIGEST, SERVICE, ENV, "again"), a.approver3) == (
        "VoteAlreadyCast", {"digest": DIGEST, "environment": ENV, "approver": a.approver3, "decision": Decision.REJECT})


@pytest.mark.parametrize("decision", [Decision.APPROVE, Decision.REJECT])
def test_withdraw_clears_vote(ready, registry, decision):
    suite, a = ready, ready.actors
    (approve if decision == Decision.APPROVE else reject)(suite, a.approver1)
    receipt = suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), a.approver1)
    assert events(receipt, registry, "VoteWithdrawn") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "environmentKey": key(ENV), "approver": a.approver1,
        "previous": decision, "service": SERVICE, "environment": ENV}]
    assert vote_of(suite, a.approver1) == (Decision.NONE, 0)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 0, 1)
    approve(suite, a.approver1)
    assert check(suite) == released(Gate.ALLOWED)


def test_withdraw_leaves_other_slots_alone(ready, registry):
    """approver1..4 share one packed storage word; withdrawing one must not touch the others."""
    suite, a = ready, ready.actors
    approve(suite, a.approver1)
    reject(suite, a.approver2)
    approve(suite, a.approver3)
    approve(suite, a.approver4)
    before = {x: vote_of(suite, x) for x in (a.approver1, a.approver3, a.approver4)}
    suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), a.approver2)
    assert {x: vote_of(suite, x) for x in before} == before
    assert vote_of(suite, a.approver2) == (Decision.NONE, 0)


def test_withdraw_no_vote(ready, registry):
    assert ready.revert_of(registry.functions.withdraw(DIGEST, SERVICE, ENV), ready.actors.approver1) == (
        "NoVoteToWithdraw", {"digest": DIGEST, "environment": ENV, "approver": ready.actors.approver1})


def test_voteOf_account_without_slot(ready, registry):
    assert vote_of(ready, ready.actors.outsider) == (Decision.NONE, 0)


# ================================================================================ EIP-712 votes


def test_voteHash_matches_eip712(ready, registry, w3):
    a = ready.actors
    signed_at = latest_ts(w3)
    args = (a.approver1, DIGEST, SERVICE, ENV, Decision.APPROVE, 7, signed_at, signed_at + 3600)
    ours = eip712_vote_hash(w3.eth.chain_id, registry.address, *args)
    assert registry.functions.voteHash(*args).call() == ours
    typed = {
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
                  "Vote": [{"name": "signer", "type": "address"}, {"name": "digest", "type": "bytes32"},
                           {"name": "service", "type": "string"}, {"name": "environment", "type": "string"},
                           {"name": "decision", "type": "uint8"}, {"name": "nonce", "type": "uint256"},
                           {"name": "signedAt", "type": "uint64"}, {"name": "deadline", "type": "uint64"}]},
        "primaryType": "Vote",
        "domain": {"name": "shipledger", "version": "2", "chainId": w3.eth.chain_id, "verifyingContract": registry.address},
        "message": {"signer": a.approver1, "digest": DIGEST, "service": SERVICE, "environment": ENV, "decision": 1,
                    "nonce": 7, "signedAt": signed_at, "deadline": signed_at + 3600}}
    assert Account.sign_typed_data(a.key(a.approver1), full_message=typed).message_hash == ours


def test_voteBySig_three_signers_submitted_by_outsider(ready, registry):
    suite, a = ready, ready.actors
    quick_policy(suite, threshold=3, min_organisations=3)
    advance(suite.w3, 1)
    signers = (a.approver1, a.approver2, a.approver3)
    signed_at = latest_ts(suite.w3)
    votes = [signed_vote(suite, s, nonce=n, signed_at=signed_at) for n, s in enumerate(signers)]
    assert registry.functions.voteBySig(votes).call({"from": a.outsider}) == 3
    receipt = suite.transact(registry.functions.voteBySig(votes), a.outsider)
    assert events(receipt, registry, "ArtifactApproved") == [
        vote_event(s, org, by_signature=True, signed_at=signed_at, nonce=n, deadline=signed_at + 3600,
                   submitter=a.outsider, policy_version=2) for n, (s, org) in enumerate(zip(signers, (1, 2, 3)))]
    for n, s in enumerate(signers):
        assert registry.functions.nonceUsed(s, n).call() is True
        assert vote_of(suite, s) == (Decision.APPROVE, signed_at)  # the signing time, not the submission's
    assert check(suite) == released(Gate.ALLOWED)


def test_voteBySig_reject(ready, registry):
    suite, a = ready, ready.actors
    vote = signed_vote(suite, a.approver2, decision=Decision.REJECT, nonce=11)
    receipt = suite.transact(registry.functions.voteBySig([vote]), a.outsider)
    assert [e["approver"] for e in events(receipt, registry, "ArtifactRejected")] == [a.approver2]
    assert check(suite) == released(Gate.REJECTED_BY, int(a.approver2, 16))


def test_voteBySig_empty_batch_is_noop(suite, registry):
    assert registry.functions.voteBySig([]).call() == 0
    assert suite.transact(registry.functions.voteBySig([]), suite.actors.outsider).logs == []


def _skipped(suite, votes, sender=None) -> list[tuple]:
    """Submits votes; the (index, reason) of every skipped one."""
    receipt = suite.transact(suite.registry.functions.voteBySig(votes), sender or suite.actors.outsider)
    return [(e["index"], e["reason"]) for e in events(receipt, suite.registry, "SignedVoteSkipped")]


def test_voteBySig_replay_is_skipped(ready, registry):
    suite, a = ready, ready.actors
    vote = signed_vote(suite, a.approver1, nonce=5)
    assert _skipped(suite, [vote]) == []
    advance(suite.w3, 1)
    suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), a.approver1)
    assert _skipped(suite, [vote]) == [(0, Skip.NONCE_USED)]  # a withdrawn vote does not come back
    assert vote_of(suite, a.approver1) == (Decision.NONE, 0)


def test_voteBySig_expired_and_deadline_inclusive(ready, registry, w3):
    suite, a = ready, ready.actors
    signed_at = latest_ts(w3) - 10
    late = signed_vote(suite, a.approver1, nonce=1, signed_at=signed_at, deadline=signed_at + 5)
    assert _skipped(suite, [late]) == [(0, Skip.EXPIRED)]
    assert registry.functions.nonceUsed(a.approver1, 1).call() is False
    deadline = latest_ts(w3) + 100
    vote = signed_vote(suite, a.approver1, nonce=2, deadline=deadline)
    w3.provider.make_request("evm_setNextBlockTimestamp", [deadline])
    assert _skipped(suite, [vote]) == []
    assert vote_of(suite, a.approver1)[0] == Decision.APPROVE


def test_voteBySig_signed_in_future(ready, registry, w3):
    vote = signed_vote(ready, ready.actors.approver1, signed_at=latest_ts(w3) + 1_000)
    assert _skipped(ready, [vote]) == [(0, Skip.SIGNED_IN_FUTURE)]


@pytest.mark.parametrize("domain", [{"chain_id": 1}, {"contract": "ledger"}, {"name": "shipledger-test"}, {"version": "1"}],
                         ids=["wrong-chain-id", "wrong-verifying-contract", "wrong-name", "v1-version"])
def test_voteBySig_wrong_domain(ready, registry, domain):
    if domain.get("contract") == "ledger":
        domain = {"contract": ready.ledger.address}
    assert _skipped(ready, [signed_vote(ready, ready.actors.approver1, **domain)]) == [(0, Skip.BAD_SIGNATURE)]


@pytest.mark.parametrize("field", ["signer", "digest", "environment", "decision", "nonce", "signedAt", "deadline",
                                   "signature"])
def test_voteBySig_tampered_vote(ready, registry, field):
    vote = list(signed_vote(ready, ready.actors.approver1, nonce=3))
    index = ["signer", "digest", "service", "environment", "decision", "nonce", "signedAt", "deadline",
             "signature"].index(field)
    vote[index] = {"signer": ready.actors.approver2, "digest": sha256("else"), "environment": "staging",
                   "decision": Decision.REJECT, "nonce": 4, "signedAt": vote[6] - 1, "deadline": vote[7] - 1,
                   "signature": b"\x00" * 65}[field]
    assert _skipped(ready, [tuple(vote)]) == [(0, Skip.BAD_SIGNATURE)]


def test_voteBySig_malleable_signature(ready, registry):
    """The high-s twin of a valid signature (same signer under plain ecrecover) is refused."""
    vote = list(signed_vote(ready, ready.actors.approver1))
    sig = vote[8]
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    vote[8] = sig[:32] + (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + bytes([55 - sig[64]])
    assert _skipped(ready, [tuple(vote)]) == [(0, Skip.BAD_SIGNATURE)]


def test_voteBySig_signer_not_approver_or_removed(ready, registry):
    suite, a = ready, ready.actors
    assert _skipped(suite, [signed_vote(suite, a.outsider)]) == [(0, Skip.NOT_APPROVER)]
    vote = signed_vote(suite, a.approver3)  # signed while still an approver
    suite.transact(registry.functions.removeMember(a.approver3), a.steward3)
    assert _skipped(suite, [vote]) == [(0, Skip.NOT_APPROVER)]


def test_voteBySig_decision_none_and_refused_votes(ready, registry):
    suite, a = ready, ready.actors
    votes = [signed_vote(suite, a.approver1, decision=Decision.NONE, nonce=1),
             signed_vote(suite, a.approver1, environment="staging", nonce=2),  # no policy there
             signed_vote(suite, a.approver1, digest=sha256("unknown"), nonce=3)]
    assert _skipped(suite, votes) == [(0, Skip.REFUSED), (1, Skip.REFUSED), (2, Skip.REFUSED)]


def test_voteBySig_same_signer_twice_in_a_batch(ready, registry):
    """v1 reverted the whole batch; v2 records the first and skips the second as stale (not newer)."""
    suite, a = ready, ready.actors
    signed_at = latest_ts(suite.w3)
    votes = [signed_vote(suite, a.approver2, nonce=1, signed_at=signed_at),
             signed_vote(suite, a.approver1, nonce=1, signed_at=signed_at),
             signed_vote(suite, a.approver1, nonce=2, signed_at=signed_at, decision=Decision.REJECT)]
    assert _skipped(suite, votes) == [(2, Skip.STALE)]
    assert [registry.functions.nonceUsed(s, n).call() for s, n in ((a.approver2, 1), (a.approver1, 1), (a.approver1, 2))] == [
        True, True, False]
    assert vote_of(suite, a.approver1) == (Decision.APPROVE, signed_at)


def test_voteBySig_latest_action_wins(ready, registry, w3):
    suite, a = ready, ready.actors
    receipt = approve(suite, a.approver1)
    approved_at = block_ts(w3, receipt)
    same_time = signed_vote(suite, a.approver1, decision=Decision.REJECT, nonce=1, signed_at=approved_at)
    assert _skipped(suite, [same_time]) == [(0, Skip.STALE)]
    advance(w3, 1)
    newer = signed_vote(suite, a.approver1, decision=Decision.REJECT, nonce=2)
    assert _skipped(suite, [newer]) == []
    assert vote_of(suite, a.approver1) == (Decision.REJECT, newer[6])
    assert check(suite) == released(Gate.REJECTED_BY, int(a.approver1, 16))


def test_voteBySig_invalidated_unordered_and_extreme_nonces(ready, registry):
    suite, a = ready, ready.actors
    quick_policy(suite, environment="staging")
    advance(suite.w3, 1)
    suite.transact(registry.functions.invalidateNonce(9), a.approver1)
    assert _skipped(suite, [signed_vote(suite, a.approver1, nonce=9)]) == [(0, Skip.NONCE_USED)]
    later = signed_vote(suite, a.approver1, nonce=7)
    earlier = signed_vote(suite, a.approver1, nonce=3, environment="staging")
    extreme = signed_vote(suite, a.approver2, nonce=2**256 - 1)
    assert _skipped(suite, [later, earlier, extreme]) == []
    assert [n for n in range(10) if registry.functions.nonceUsed(a.approver1, n).call()] == [3, 7, 9]
    assert registry.functions.nonceUsed(a.approver2, 2**256 - 1).call() is True
    assert registry.functions.nonceUsed(a.approver2, 2**256 - 2).call() is False
    assert check(suite) == check(suite, environment="staging") == released(Gate.ALLOWED)


def test_invalidateNonce_burns_nonce_per_signer(suite, registry):
    a = suite.actors
    receipt = suite.transact(registry.functions.invalidateNonce(42), a.outsider)  # anyone, for their own nonces
    assert events(receipt, registry, "NonceInvalidated") == [{"signer": a.outsider, "nonce": 42}]
    assert registry.functions.nonceUsed(a.outsider, 42).call() is True
    assert registry.functions.nonceUsed(a.approver1, 42).call() is False
    receipt = suite.transact(registry.functions.invalidateNonce(42), a.outsider)  # burning again is harmless
    assert events(receipt, registry, "NonceInvalidated") == [{"signer": a.outsider, "nonce": 42}]


# ================================================================================ checkRelease


def test_checkRelease_unknown_revoked_no_policy(suite, registry):
    quick_policy(suite)
    assert check(suite) == released(Gate.UNKNOWN_ARTIFACT)
    register(suite)
    assert check(suite, environment="staging") == released(Gate.NO_POLICY)
    suite.transact(registry.functions.revoke(DIGEST, SERVICE, "bad"), suite.actors.registrar)
    assert check(suite, environment="staging") == released(Gate.ARTIFACT_REVOKED)  # before the missing policy


def test_checkRelease_rejected_by(ready, registry):
    suite, a = ready, ready.actors
    quick_policy(suite, min_wait=3600)  # a rejection is reported before the waiting period
    approve(suite, a.approver1)
    reject(suite, a.approver3)
    assert check(suite) == released(Gate.REJECTED_BY, int(a.approver3, 16))
    quick_policy(suite, environment="staging")
    approve(suite, a.approver1, environment="staging")
    assert check(suite, environment="staging") == released(Gate.ALLOWED)


def test_checkRelease_waiting_period(suite, registry, w3):
    register(suite)
    quick_policy(suite, min_wait=3600)
    approve(suite, suite.actors.approver1)
    registered_at = registry.functions.getArtifact(DIGEST, SERVICE).call()[1]
    assert check(suite) == released(Gate.WAITING_PERIOD, registered_at + 3600, latest_ts(w3))
    mine_at(w3, registered_at + 3599)
    assert check(suite) == released(Gate.WAITING_PERIOD, registered_at + 3600, registered_at + 3599)
    mine_at(w3, registered_at + 3600)
    assert check(suite) == released(Gate.ALLOWED)


def test_checkRelease_not_enough_approvals(ready, registry):
    suite, a = ready, ready.actors
    quick_policy(suite, threshold=3)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 0, 3)
    approve(suite, a.approver1)
    approve(suite, a.approver2)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 2, 3)
    quick_policy(suite, environment="staging")
    approve(suite, a.approver3, environment="staging")
    register(suite, artifact(DIGEST, service="worker"))
    quick_policy(suite, service="worker")
    approve(suite, a.approver3, service="worker", digest=DIGEST)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 2, 3)


def test_checkRelease_approvals_expired(ready, registry, w3):
    suite, a = ready, ready.actors
    quick_policy(suite, threshold=2, ttl=100)
    cast_at = block_ts(w3, approve(suite, a.approver1))
    approve(suite, a.approver2)
    mine_at(w3, cast_at + 100)  # signedAt + ttl: still valid
    assert check(suite) == released(Gate.ALLOWED)
    advance(w3, 1_000)
    assert check(suite) == released(Gate.APPROVALS_EXPIRED, 0, 2)
    approve(suite, a.approver3)
    assert check(suite) == released(Gate.APPROVALS_EXPIRED, 1, 2)
    quick_policy(suite, threshold=2, ttl=0)  # ttl 0: approvals never expire
    assert check(suite) == released(Gate.ALLOWED)


def test_checkRelease_expired_not_enough_even_if_fresh(ready, registry, w3):
    suite, a = ready, ready.actors
    quick_policy(suite, threshold=3, ttl=100)
    approve(suite, a.approver1)
    advance(w3, 1_000)
    approve(suite, a.approver2)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 1, 3)


def test_checkRelease_not_enough_organisations(ready, registry, w3):
    suite, a = ready, ready.actors
    quick_policy(suite, threshold=2, min_organisations=2, ttl=100)
    approve(suite, a.approver2)  # org 2, will expire
    advance(w3, 1_000)
    approve(suite, a.approver1)  # org 1
    assert check(suite) == released(Gate.APPROVALS_EXPIRED, 1, 2)
    approve(suite, a.approver4)  # org 1: enough fresh approvals, one organisation among them
    assert check(suite) == released(Gate.NOT_ENOUGH_ORGANISATIONS, 1, 2)
    reject(suite, a.approver2)
    suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), a.approver2)
    approve(suite, a.approver2)
    assert check(suite) == released(Gate.ALLOWED)


def test_checkRelease_missing_attestation(ready, registry):
    suite, a = ready, ready.actors
    quick_policy(suite, attestations=("sbom", "provenance"))
    approve(suite, a.approver1)
    assert check(suite) == released(Gate.MISSING_ATTESTATION, int.from_bytes(key("sbom")))
    suite.transact(registry.functions.attest(DIGEST, SERVICE, "sbom", sha256("s"), ""), a.registrar)
    assert check(suite) == released(Gate.MISSING_ATTESTATION, int.from_bytes(key("provenance")))
    suite.transact(registry.functions.attest(DIGEST, SERVICE, "provenance", sha256("p"), ""), a.registrar)
    assert check(suite) == released(Gate.ALLOWED)


def test_checkRelease_allowed_reports_prior_and_freeze(ready, registry):
    quick_policy(ready, freeze_severity=2, prior="staging")
    approve(ready, ready.actors.approver1)
    assert check(ready) == released(Gate.ALLOWED, prior=key("staging"), freeze=2)


def test_checkRelease_votes_survive_policy_change(ready, registry):
    """Votes are per (artifact, target), not per policy version: tightening the policy keeps them."""
    suite, a = ready, ready.actors
    approve(suite, a.approver1)
    quick_policy(suite, threshold=2)
    assert check(suite) == released(Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    approve(suite, a.approver2)
    assert check(suite) == released(Gate.ALLOWED)


# ================================================================================ properties

names = st.text(min_size=1, max_size=16)  # at most 4 UTF-8 bytes a character: always 1..64 bytes
digests = st.binary(min_size=32, max_size=32).filter(lambda d: d != ZERO32)


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(service=names, version=names, digest=digests, kind=st.sampled_from(list(Kind)))
def test_register_round_trip_property(suite, service, version, digest, kind):
    w3, registry = suite.w3, suite.registry
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        item = artifact(digest, service, version, kind=kind)
        receipt = register(suite, item)
        [event] = events(receipt, registry, "ArtifactRegistered")
        assert (event["digest"], event["service"], event["version"], event["kind"]) == (digest, service, version, kind)
        assert (event["serviceKey"], event["versionKey"], event["recordHash"]) == (key(service), key(version), record_hash(item))
        assert registry.functions.recordOf(service, version).call() == record_hash(item)
        assert tuple(registry.functions.getArtifact(digest, service).call()) == (
            suite.actors.registrar, block_ts(w3, receipt), False, kind)
    finally:
        w3.provider.make_request("evm_revert", [snapshot])


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40))
def test_register_name_length_property(suite, name):
    """A name is valid exactly when its UTF-8 encoding is 1..64 bytes long."""
    fn = suite.registry.functions.register(artifact(DIGEST, service=name))
    if 1 <= len(name.encode()) <= 64:
        assert fn.call({"from": suite.actors.registrar}) is True
    else:
        assert suite.revert_of(fn, suite.actors.registrar) == ("InvalidName", {"name": name})


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(signer=st.binary(min_size=20, max_size=20), digest=st.binary(min_size=32, max_size=32),
       service=st.text(max_size=80), environment=st.text(max_size=80), decision=st.sampled_from(list(Decision)),
       nonce=st.integers(0, 2**256 - 1), signed_at=st.integers(0, 2**64 - 1), deadline=st.integers(0, 2**64 - 1))
def test_voteHash_property(suite, signer, digest, service, environment, decision, nonce, signed_at, deadline):
    registry, w3 = suite.registry, suite.w3
    signer = Web3.to_checksum_address(signer)
    args = (signer, digest, service, environment, int(decision), nonce, signed_at, deadline)
    assert registry.functions.voteHash(*args).call() == eip712_vote_hash(w3.eth.chain_id, registry.address, *args)

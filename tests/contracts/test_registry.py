"""ReleaseRegistry: consortium, artifacts, policies, votes (by transaction and EIP-712 signature),
the registry side of the gate (`checkRelease`), and who may call what.

Every revert test asserts the exact custom error and its arguments; every state-change test asserts
the event arguments and the resulting state. The `suite` fixture reverts the chain after each test.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

import pytest
from eth_abi import encode
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3

from shipledger._internal import artifacts

# web3 warns about every log of a receipt that is not the event asked for (e.g. RoleGranted next to
# ApproverSlotAssigned); the tests compare the full event lists, so the warning is only noise.
pytestmark = pytest.mark.filterwarnings("ignore:The log with transaction hash:UserWarning")

# ---------------------------------------------------------------------------------------- constants

ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20

ROLES = {
    "ADMIN": ZERO32,
    "REGISTRAR": Web3.keccak(text="REGISTRAR_ROLE"),
    "APPROVER": Web3.keccak(text="APPROVER_ROLE"),
    "DEPLOYER": Web3.keccak(text="DEPLOYER_ROLE"),
    "RESPONDER": Web3.keccak(text="RESPONDER_ROLE"),
}
VOTE_TYPE = "Vote(bytes32 digest,string service,string environment,uint8 decision,uint256 nonce,uint256 deadline)"
VOTE_TYPEHASH = Web3.keccak(text=VOTE_TYPE)
DOMAIN_TYPEHASH = Web3.keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")

SERVICE = "api"
ENV = "prod"
NEWCOMER = Web3.to_checksum_address("0x00000000000000000000000000000000c0ffee01")


class Decision(IntEnum):
    NONE = 0
    APPROVE = 1
    REJECT = 2


class Gate(IntEnum):
    ALLOWED = 0
    UNKNOWN_ARTIFACT = 1
    ARTIFACT_REVOKED = 2
    NO_POLICY = 3
    REJECTED_BY = 4
    WAITING_PERIOD = 5
    NOT_ENOUGH_APPROVALS = 6
    APPROVALS_EXPIRED = 7
    NOT_ENOUGH_ORGANISATIONS = 8


# ---------------------------------------------------------------------------------------- helpers


def sha256(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


DIGEST = sha256("api 1.0.0")


def key(name: str) -> bytes:
    """keccak256 of a service, environment or version name (Keys.name)."""
    return Web3.keccak(name.encode())


def artifact_id(service: str, digest: bytes) -> bytes:
    return Web3.keccak(encode(["bytes32", "bytes32"], [key(service), digest]))


def target(service: str, environment: str) -> bytes:
    return Web3.keccak(encode(["bytes32", "bytes32"], [key(service), key(environment)]))


def artifact(
    digest: bytes = DIGEST,
    service: str = SERVICE,
    version: str = "1.0.0",
    *,
    commit: bytes = bytes.fromhex("a1" * 20) + b"\x00" * 12,
    committed_at: int = 1_700_000_000,
    provenance: bytes = b"\x0b" * 32,
    sbom: bytes = b"\x0c" * 32,
    uri: str = "oci://registry.example/api@sha256",
) -> tuple:
    """An ArtifactInput tuple."""
    return (digest, service, version, commit, committed_at, provenance, sbom, uri)


def policy(threshold=1, min_organisations=0, ttl=0, min_wait=0, freeze_severity=0, prior="") -> tuple:
    """A PolicyInput tuple."""
    return (threshold, min_organisations, ttl, min_wait, freeze_severity, prior)


def gate(reason: Gate, a: int = 0, b: int = 0, prior: bytes = ZERO32, freeze: int = 0) -> tuple:
    """The ReleaseCheck tuple checkRelease returns."""
    return (int(reason), a, b, prior, freeze)


def latest_ts(w3) -> int:
    return w3.eth.get_block("latest").timestamp


def mine_at(w3, timestamp: int) -> None:
    w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
    w3.provider.make_request("evm_mine", [])


def advance(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def register(suite, *inputs):
    for item in inputs or (artifact(),):
        suite.transact(suite.registry.functions.register(item), suite.actors.registrar)


def set_policy(suite, service=SERVICE, environment=ENV, **kwargs):
    return suite.transact(suite.registry.functions.setPolicy(service, environment, policy(**kwargs)), suite.actors.admin)


def approve(suite, approver, digest=DIGEST, service=SERVICE, environment=ENV, comment=""):
    return suite.transact(suite.registry.functions.approve(digest, service, environment, comment), approver)


def reject(suite, approver, digest=DIGEST, service=SERVICE, environment=ENV, reason="no"):
    return suite.transact(suite.registry.functions.reject(digest, service, environment, reason), approver)


def check(suite, digest=DIGEST, service=SERVICE, environment=ENV) -> tuple:
    return tuple(suite.registry.functions.checkRelease(artifact_id(service, digest), target(service, environment)).call())


def vote_of(suite, approver, digest=DIGEST, service=SERVICE, environment=ENV) -> tuple:
    return tuple(suite.registry.functions.voteOf(digest, service, environment, approver).call())


def send_failing(suite, fn, sender):
    """Actually mine a transaction that reverts (explicit gas skips estimation); return its receipt."""
    receipt = suite.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "gas": 3_000_000, "gasPrice": suite.w3.eth.gas_price}))
    assert receipt.status == 0
    return receipt


def send_many(suite, calls, sender, gas=300_000):
    """Send many registry transactions through bare JSON-RPC (no per-call estimation); all must succeed."""
    registry = suite.registry
    hashes = []
    for name, args in calls:
        reply = suite.w3.provider.make_request(
            "eth_sendTransaction",
            [{"from": sender, "to": registry.address, "gas": hex(gas), "gasPrice": hex(suite.w3.eth.gas_price),
              "data": registry.encode_abi(name, args)}],
        )
        assert "result" in reply, reply
        hashes.append(reply["result"])
    # anvil mines asynchronously; once the last transaction (highest nonce) is in, all of them are
    suite.w3.eth.wait_for_transaction_receipt(hashes[-1], poll_latency=0.01)
    for tx_hash in hashes:
        receipt = suite.w3.provider.make_request("eth_getTransactionReceipt", [tx_hash])["result"]
        assert int(receipt["status"], 16) == 1, tx_hash


def eip712_vote_hash(chain_id, contract, digest, service, environment, decision, nonce, deadline) -> bytes:
    """The EIP-712 digest of a Vote, computed from first principles (not with eth_account)."""
    domain = Web3.keccak(encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [DOMAIN_TYPEHASH, Web3.keccak(text="shipledger"), Web3.keccak(text="1"), chain_id, contract],
    ))
    struct = Web3.keccak(encode(
        ["bytes32", "bytes32", "bytes32", "bytes32", "uint8", "uint256", "uint256"],
        [VOTE_TYPEHASH, digest, key(service), key(environment), int(decision), nonce, deadline],
    ))
    return Web3.keccak(b"\x19\x01" + domain + struct)


def vote_typed_data(chain_id, contract, digest, service, environment, decision, nonce, deadline,
                    name="shipledger", version="1") -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Vote": [
                {"name": "digest", "type": "bytes32"},
                {"name": "service", "type": "string"},
                {"name": "environment", "type": "string"},
                {"name": "decision", "type": "uint8"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Vote",
        "domain": {"name": name, "version": version, "chainId": chain_id, "verifyingContract": contract},
        "message": {
            "digest": digest, "service": service, "environment": environment,
            "decision": int(decision), "nonce": nonce, "deadline": deadline,
        },
    }


def signed_vote(suite, signer, *, digest=DIGEST, service=SERVICE, environment=ENV, decision=Decision.APPROVE,
                nonce=0, deadline=None, private_key=None, chain_id=None, contract=None, name="shipledger",
                version="1") -> tuple:
    """A SignedVote tuple signed by `signer` (its dev key unless `private_key` is given). The domain
    defaults to the real one; chain_id, contract, name and version override it for negative tests."""
    if deadline is None:
        deadline = latest_ts(suite.w3) + 3600
    data = vote_typed_data(
        suite.w3.eth.chain_id if chain_id is None else chain_id,
        contract or suite.registry.address,
        digest, service, environment, decision, nonce, deadline, name=name, version=version,
    )
    signature = Account.sign_typed_data(private_key or suite.actors.key(signer), full_message=data).signature
    return (signer, digest, service, environment, int(decision), nonce, deadline, bytes(signature))


def vote_event(approver, org, *, by_signature=False, note="", policy_version=1, digest=DIGEST,
               service=SERVICE, environment=ENV, rejected=False) -> dict:
    """The arguments of the ArtifactApproved (or, with rejected=True, ArtifactRejected) event."""
    return {
        "digest": digest, "serviceKey": key(service), "environmentKey": key(environment), "approver": approver,
        "org": org, "policyVersion": policy_version, "bySignature": by_signature, "service": service,
        "environment": environment, ("reason" if rejected else "comment"): note,
    }


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def registry(suite):
    return suite.registry


@pytest.fixture
def ready(suite):
    """DIGEST registered for api 1.0.0 by the registrar, and a policy (api, prod) of threshold 1."""
    register(suite)
    set_policy(suite)
    return suite


# ================================================================================ consortium


def test_constructor_zero_admin(suite, w3):
    art = artifacts.load("ReleaseRegistry")
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    assert suite.revert_of(factory.constructor(ZERO_ADDRESS), suite.actors.admin) == ("ZeroAddress", {})


def test_constructor_initial_state(registry, actors, w3):
    fns = registry.functions
    assert fns.hasRole(ROLES["ADMIN"], actors.admin).call()
    assert fns.ADMIN_ROLE().call() == fns.DEFAULT_ADMIN_ROLE().call() == ZERO32
    for role in ("REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER"):
        assert getattr(fns, f"{role}_ROLE")().call() == ROLES[role]
        assert fns.getRoleAdmin(ROLES[role]).call() == ZERO32
    assert fns.VOTE_TYPEHASH().call() == VOTE_TYPEHASH
    fields, name, version, chain_id, contract, salt, extensions = fns.eip712Domain().call()
    assert (fields, name, version, chain_id, contract, salt, extensions) == (
        b"\x0f", "shipledger", "1", w3.eth.chain_id, registry.address, ZERO32, []
    )


def test_addOrganisation_appends_sequential_id(suite, registry, actors):
    fn = registry.functions.addOrganisation("hooli")
    assert fn.call({"from": actors.admin}) == 4
    receipt = suite.transact(fn, actors.admin)
    assert suite.events(receipt, registry, "OrganisationAdded") == [{"org": 4, "name": "hooli"}]
    assert registry.functions.organisationCount().call() == 4


def test_addOrganisation_max_length_name(suite, registry, actors):
    name = "x" * 64
    receipt = suite.transact(registry.functions.addOrganisation(name), actors.admin)
    assert suite.events(receipt, registry, "OrganisationAdded") == [{"org": 4, "name": name}]


@pytest.mark.parametrize("name", ["", "x" * 65, "é" * 33], ids=["empty", "65-bytes", "66-utf8-bytes"])
def test_addOrganisation_invalid_name(suite, registry, actors, name):
    assert suite.revert_of(registry.functions.addOrganisation(name), actors.admin) == ("InvalidName", {"name": name})


def test_addOrganisation_too_many_organisations(suite, registry, actors):
    """255 organisations fit (ids 1..255); the 256th reverts. Org 255 (the top bit of the gate's
    organisation bitmask) counts as an organisation in checkRelease."""
    send_many(suite, [("addOrganisation", [f"org{i}"]) for i in range(4, 256)], actors.admin)
    assert registry.functions.organisationCount().call() == 255
    assert suite.revert_of(registry.functions.addOrganisation("one-too-many"), actors.admin) == (
        "TooManyOrganisations", {}
    )
    # A member of organisation 255 approves by signature; with approver1 (org 1) that is 2 organisations.
    member = Account.create()
    suite.transact(registry.functions.addMember(255, member.address), actors.admin)
    suite.transact(registry.functions.grantRole(ROLES["APPROVER"], member.address), actors.admin)
    register(suite)
    set_policy(suite, threshold=2, min_organisations=2)
    approve(suite, actors.approver1)
    receipt = suite.transact(
        registry.functions.voteBySig([signed_vote(suite, member.address, private_key=member.key)]), actors.outsider
    )
    assert suite.events(receipt, registry, "ArtifactApproved") == [vote_event(member.address, 255, by_signature=True)]
    assert check(suite) == gate(Gate.ALLOWED)


def test_addMember_records_organisation(suite, registry, actors):
    receipt = suite.transact(registry.functions.addMember(2, NEWCOMER), actors.admin)
    assert suite.events(receipt, registry, "MemberAdded") == [{"account": NEWCOMER, "org": 2}]
    assert registry.functions.organisationOf(NEWCOMER).call() == 2
    assert not registry.functions.hasRole(ROLES["APPROVER"], NEWCOMER).call()


def test_addMember_zero_address(suite, registry, actors):
    assert suite.revert_of(registry.functions.addMember(1, ZERO_ADDRESS), actors.admin) == ("ZeroAddress", {})


@pytest.mark.parametrize("org", [0, 4, 255])
def test_addMember_unknown_organisation(suite, registry, actors, org):
    assert suite.revert_of(registry.functions.addMember(org, NEWCOMER), actors.admin) == (
        "OrganisationUnknown", {"org": org}
    )


def test_addMember_already_member(suite, registry, actors):
    assert suite.revert_of(registry.functions.addMember(2, actors.approver4), actors.admin) == (
        "AlreadyMember", {"account": actors.approver4, "org": 1}
    )


def test_removeMember_revokes_approver(suite, registry, actors):
    receipt = suite.transact(registry.functions.removeMember(actors.approver2), actors.admin)
    assert suite.events(receipt, registry, "RoleRevoked") == [
        {"role": ROLES["APPROVER"], "account": actors.approver2, "sender": actors.admin}
    ]
    assert suite.events(receipt, registry, "MemberRemoved") == [{"account": actors.approver2, "org": 2}]
    assert registry.functions.organisationOf(actors.approver2).call() == 0
    assert not registry.functions.hasRole(ROLES["APPROVER"], actors.approver2).call()
    register(suite)
    set_policy(suite)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), actors.approver2) == (
        "AccessControlUnauthorizedAccount", {"account": actors.approver2, "neededRole": ROLES["APPROVER"]}
    )


def test_removeMember_plain_member_emits_no_role_event(suite, registry, actors):
    suite.transact(registry.functions.addMember(3, NEWCOMER), actors.admin)
    receipt = suite.transact(registry.functions.removeMember(NEWCOMER), actors.admin)
    assert suite.events(receipt, registry, "RoleRevoked") == []
    assert suite.events(receipt, registry, "MemberRemoved") == [{"account": NEWCOMER, "org": 3}]
    # and the account may join another organisation afterwards
    suite.transact(registry.functions.addMember(2, NEWCOMER), actors.admin)
    assert registry.functions.organisationOf(NEWCOMER).call() == 2


def test_removeMember_not_member(suite, registry, actors):
    assert suite.revert_of(registry.functions.removeMember(actors.outsider), actors.admin) == (
        "NotMember", {"account": actors.outsider}
    )


def test_removeMember_approvals_stop_counting(ready, registry, actors):
    suite = ready
    set_policy(suite, threshold=2)
    approve(suite, actors.approver1)
    approve(suite, actors.approver2)
    assert check(suite) == gate(Gate.ALLOWED)
    suite.transact(registry.functions.removeMember(actors.approver2), actors.admin)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    # the vote itself is still on record, it just no longer counts
    assert vote_of(suite, actors.approver2)[0] == Decision.APPROVE


def test_removeMember_rejection_stops_counting(ready, registry, actors):
    suite = ready
    approve(suite, actors.approver1)
    reject(suite, actors.approver2)
    assert check(suite) == gate(Gate.REJECTED_BY, int(actors.approver2, 16))
    suite.transact(registry.functions.removeMember(actors.approver2), actors.admin)
    assert check(suite) == gate(Gate.ALLOWED)


# ================================================================================ roles


def test_grantRole_approver_assigns_vote_slot(suite, registry, actors):
    suite.transact(registry.functions.addMember(2, NEWCOMER), actors.admin)
    receipt = suite.transact(registry.functions.grantRole(ROLES["APPROVER"], NEWCOMER), actors.admin)
    # approver1..4 took slots 0..3 in the fixture
    assert suite.events(receipt, registry, "ApproverSlotAssigned") == [{"account": NEWCOMER, "index": 4, "org": 2}]
    assert suite.events(receipt, registry, "RoleGranted") == [
        {"role": ROLES["APPROVER"], "account": NEWCOMER, "sender": actors.admin}
    ]
    assert registry.functions.hasRole(ROLES["APPROVER"], NEWCOMER).call()


def test_grantRole_approver_needs_membership(suite, registry, actors):
    assert suite.revert_of(registry.functions.grantRole(ROLES["APPROVER"], actors.outsider), actors.admin) == (
        "NotMember", {"account": actors.outsider}
    )


def test_grantRole_approver_again_is_noop(suite, registry, actors):
    receipt = suite.transact(registry.functions.grantRole(ROLES["APPROVER"], actors.approver1), actors.admin)
    assert receipt.logs == []


@pytest.mark.parametrize("role", ["REGISTRAR", "DEPLOYER", "RESPONDER", "ADMIN"])
def test_grantRole_other_roles_need_no_membership(suite, registry, actors, role):
    receipt = suite.transact(registry.functions.grantRole(ROLES[role], actors.outsider), actors.admin)
    assert suite.events(receipt, registry, "RoleGranted") == [
        {"role": ROLES[role], "account": actors.outsider, "sender": actors.admin}
    ]
    assert registry.functions.organisationOf(actors.outsider).call() == 0


def test_grantRole_readmitted_approver_keeps_slot(suite, registry, actors):
    """Removal keeps the vote slot for life: re-admission (even to another organisation) assigns none."""
    suite.transact(registry.functions.removeMember(actors.approver3), actors.admin)
    suite.transact(registry.functions.addMember(2, actors.approver3), actors.admin)
    receipt = suite.transact(registry.functions.grantRole(ROLES["APPROVER"], actors.approver3), actors.admin)
    assert suite.events(receipt, registry, "ApproverSlotAssigned") == []
    assert len(suite.events(receipt, registry, "RoleGranted")) == 1
    # a genuinely new approver still gets the next free slot (4), not 2 again
    suite.transact(registry.functions.addMember(3, NEWCOMER), actors.admin)
    receipt = suite.transact(registry.functions.grantRole(ROLES["APPROVER"], NEWCOMER), actors.admin)
    assert suite.events(receipt, registry, "ApproverSlotAssigned") == [{"account": NEWCOMER, "index": 4, "org": 3}]


def test_grantRole_readmitted_approver_old_votes_count_again(ready, registry, actors):
    """Documents current behaviour (see the report): votes are kept in the slot, so re-granting
    APPROVER revives them, and they now count for the approver's *new* organisation although the
    ArtifactApproved event recorded the old one."""
    suite = ready
    set_policy(suite, threshold=2, min_organisations=2)
    receipt = approve(suite, actors.approver1)  # org 1
    assert suite.events(receipt, registry, "ArtifactApproved")[0]["org"] == 1
    approve(suite, actors.approver4)  # org 1
    assert check(suite) == gate(Gate.NOT_ENOUGH_ORGANISATIONS, 1, 2)
    suite.transact(registry.functions.removeMember(actors.approver1), actors.admin)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    suite.transact(registry.functions.addMember(3, actors.approver1), actors.admin)
    suite.transact(registry.functions.grantRole(ROLES["APPROVER"], actors.approver1), actors.admin)
    assert check(suite) == gate(Gate.ALLOWED)  # the org-1 approval now counts as org 3


def test_revokeRole_approver_votes_stop_counting(ready, registry, actors):
    suite = ready
    approve(suite, actors.approver1)
    assert check(suite) == gate(Gate.ALLOWED)
    receipt = suite.transact(registry.functions.revokeRole(ROLES["APPROVER"], actors.approver1), actors.admin)
    assert suite.events(receipt, registry, "RoleRevoked") == [
        {"role": ROLES["APPROVER"], "account": actors.approver1, "sender": actors.admin}
    ]
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 0, 1)
    assert registry.functions.organisationOf(actors.approver1).call() == 1  # still a member
    suite.transact(registry.functions.grantRole(ROLES["APPROVER"], actors.approver1), actors.admin)
    assert check(suite) == gate(Gate.ALLOWED)


def test_renounceRole_approver_votes_stop_counting(ready, registry, actors):
    suite = ready
    approve(suite, actors.approver1)
    suite.transact(registry.functions.renounceRole(ROLES["APPROVER"], actors.approver1), actors.approver1)
    assert not registry.functions.hasRole(ROLES["APPROVER"], actors.approver1).call()
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 0, 1)


def test_grantRole_too_many_approvers(suite, registry, actors):
    """256 vote slots: approver1..4 hold 0..3, 252 more fill 4..255, the 257th approver reverts.
    The approver in slot 255 (top bit of the active-approver mask) votes and counts."""
    last = Account.from_key(b"\x5a" * 32)  # slot 255 signs, so it needs a key; the others only need addresses
    accounts = [Web3.to_checksum_address((0xA000 + i).to_bytes(20, "big")) for i in range(251)] + [last.address]
    calls = []
    for i, account in enumerate(accounts):
        calls.append(("addMember", [1 + i % 3, account]))
        calls.append(("grantRole", [ROLES["APPROVER"], account]))
    send_many(suite, calls, actors.admin)
    suite.transact(registry.functions.addMember(2, NEWCOMER), actors.admin)
    assert suite.revert_of(registry.functions.grantRole(ROLES["APPROVER"], NEWCOMER), actors.admin) == (
        "TooManyApprovers", {}
    )
    # an existing approver keeps its slot, so re-granting still works when all slots are taken
    suite.transact(registry.functions.revokeRole(ROLES["APPROVER"], actors.approver1), actors.admin)
    suite.transact(registry.functions.grantRole(ROLES["APPROVER"], actors.approver1), actors.admin)
    # slot 255 approves alone
    register(suite)
    set_policy(suite)
    suite.transact(registry.functions.voteBySig([signed_vote(suite, last.address, private_key=last.key)]), actors.outsider)
    assert check(suite) == gate(Gate.ALLOWED)
    suite.transact(registry.functions.revokeRole(ROLES["APPROVER"], last.address), actors.admin)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 0, 1)


# ================================================================================ artifacts


def test_register_records_artifact(suite, registry, actors):
    item = artifact()
    assert registry.functions.register(item).call({"from": actors.registrar}) is True
    receipt = suite.transact(registry.functions.register(item), actors.registrar)
    ts = suite.w3.eth.get_block(receipt.blockNumber).timestamp
    assert suite.events(receipt, registry, "ArtifactRegistered") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "versionKey": key("1.0.0"), "service": SERVICE,
        "version": "1.0.0", "commit": item[3], "committedAt": item[4], "provenance": item[5], "sbom": item[6],
        "uri": item[7], "registrant": actors.registrar,
    }]
    assert tuple(registry.functions.getArtifact(DIGEST, SERVICE).call()) == (actors.registrar, ts, False)
    assert registry.functions.digestOf(SERVICE, "1.0.0").call() == DIGEST
    assert registry.functions.isRevoked(artifact_id(SERVICE, DIGEST)).call() is False


def test_register_identical_record_is_noop(suite, registry, actors):
    register(suite)
    before = tuple(registry.functions.getArtifact(DIGEST, SERVICE).call())
    # identical (digest, service, version); the metadata that only reaches the event may even differ
    again = artifact(uri="https://elsewhere.example", commit=b"\x01" * 32)
    assert registry.functions.register(again).call({"from": actors.registrar}) is False
    receipt = suite.transact(registry.functions.register(again), actors.registrar)
    assert receipt.logs == []
    assert tuple(registry.functions.getArtifact(DIGEST, SERVICE).call()) == before


def test_register_same_digest_other_service(suite, registry, actors):
    register(suite, artifact(), artifact(service="worker"))
    assert registry.functions.digestOf("worker", "1.0.0").call() == DIGEST
    assert artifact_id("worker", DIGEST) != artifact_id(SERVICE, DIGEST)
    suite.transact(registry.functions.revoke(DIGEST, "worker", "bad"), actors.registrar)
    assert registry.functions.isRevoked(artifact_id("worker", DIGEST)).call() is True
    assert registry.functions.isRevoked(artifact_id(SERVICE, DIGEST)).call() is False


def test_register_invalid_digest(suite, registry, actors):
    assert suite.revert_of(registry.functions.register(artifact(digest=ZERO32)), actors.registrar) == (
        "InvalidDigest", {}
    )


@pytest.mark.parametrize(
    "field, value",
    [("service", ""), ("service", "s" * 65), ("version", ""), ("version", "v" * 65)],
    ids=["empty-service", "long-service", "empty-version", "long-version"],
)
def test_register_invalid_name(suite, registry, actors, field, value):
    item = artifact(**{field: value})
    assert suite.revert_of(registry.functions.register(item), actors.registrar) == ("InvalidName", {"name": value})


def test_register_max_length_names(suite, registry, actors):
    service, version = "s" * 64, "v" * 64
    register(suite, artifact(service=service, version=version))
    assert registry.functions.digestOf(service, version).call() == DIGEST


def test_register_version_already_registered(suite, registry, actors):
    register(suite)
    other = sha256("api 1.0.0 rebuilt")
    assert suite.revert_of(registry.functions.register(artifact(digest=other)), actors.registrar) == (
        "VersionAlreadyRegistered", {"service": SERVICE, "version": "1.0.0", "existingDigest": DIGEST}
    )


def test_register_artifact_already_registered(suite, registry, actors):
    register(suite)
    assert suite.revert_of(registry.functions.register(artifact(version="1.0.1")), actors.registrar) == (
        "ArtifactAlreadyRegistered", {"digest": DIGEST, "service": SERVICE}
    )


def test_registerBatch_returns_count(suite, registry, actors):
    items = [artifact(sha256(f"api {v}"), version=v, uri=f"oci://api:{v}") for v in ("1.0.0", "1.1.0", "2.0.0")]
    assert registry.functions.registerBatch(items).call({"from": actors.registrar}) == 3
    receipt = suite.transact(registry.functions.registerBatch(items), actors.registrar)
    events = suite.events(receipt, registry, "ArtifactRegistered")
    assert [(e["digest"], e["version"], e["uri"], e["registrant"]) for e in events] == [
        (item[0], item[2], item[7], actors.registrar) for item in items
    ]
    for item in items:
        assert registry.functions.digestOf(SERVICE, item[2]).call() == item[0]


def test_registerBatch_mixed_new_and_identical(suite, registry, actors):
    register(suite)
    new1 = artifact(sha256("api 1.1.0"), version="1.1.0")
    new2 = artifact(sha256("web 1.0.0"), service="web")
    batch = [artifact(), new1, new1, new2]  # an already-registered record, and a duplicate inside the batch
    assert registry.functions.registerBatch(batch).call({"from": actors.registrar}) == 2
    receipt = suite.transact(registry.functions.registerBatch(batch), actors.registrar)
    assert [(e["digest"], e["service"]) for e in suite.events(receipt, registry, "ArtifactRegistered")] == [
        (new1[0], SERVICE), (new2[0], "web")
    ]


def test_registerBatch_all_identical_emits_nothing(suite, registry, actors):
    register(suite)
    assert registry.functions.registerBatch([artifact()]).call({"from": actors.registrar}) == 0
    assert suite.transact(registry.functions.registerBatch([artifact()]), actors.registrar).logs == []


def test_registerBatch_empty(suite, registry, actors):
    assert suite.revert_of(registry.functions.registerBatch([]), actors.registrar) == ("EmptyBatch", {})


def test_registerBatch_bad_last_item_registers_nothing(suite, registry, actors):
    register(suite)
    good1 = artifact(sha256("api 1.1.0"), version="1.1.0")
    good2 = artifact(sha256("api 1.2.0"), version="1.2.0")
    bad = artifact(sha256("api 1.0.0 rebuilt"), version="1.0.0")  # version taken by DIGEST
    fn = registry.functions.registerBatch([good1, good2, bad])
    assert suite.revert_of(fn, actors.registrar) == (
        "VersionAlreadyRegistered", {"service": SERVICE, "version": "1.0.0", "existingDigest": DIGEST}
    )
    receipt = send_failing(suite, fn, actors.registrar)
    assert receipt.logs == []
    for item in (good1, good2):
        assert registry.functions.digestOf(SERVICE, item[2]).call() == ZERO32
        assert suite.revert_of(registry.functions.getArtifact(item[0], SERVICE), actors.registrar) == (
            "ArtifactNotFound", {"digest": item[0], "service": SERVICE}
        )


def test_revoke_quarantines_artifact(ready, registry, actors):
    suite = ready
    approve(suite, actors.approver1)
    receipt = suite.transact(registry.functions.revoke(DIGEST, SERVICE, "CVE-2024-0001"), actors.registrar)
    assert suite.events(receipt, registry, "ArtifactRevoked") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "service": SERVICE, "reason": "CVE-2024-0001",
        "revoker": actors.registrar,
    }]
    registrant, _, revoked = registry.functions.getArtifact(DIGEST, SERVICE).call()
    assert (registrant, revoked) == (actors.registrar, True)
    assert registry.functions.isRevoked(artifact_id(SERVICE, DIGEST)).call() is True
    assert check(suite) == gate(Gate.ARTIFACT_REVOKED)
    # a revoked artifact still counts as registered: its version is taken, re-registering is a no-op
    assert registry.functions.register(artifact()).call({"from": actors.registrar}) is False


def test_revoke_unknown_artifact(suite, registry, actors):
    assert suite.revert_of(registry.functions.revoke(DIGEST, SERVICE, "x"), actors.registrar) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": SERVICE}
    )


def test_revoke_already_revoked(suite, registry, actors):
    register(suite)
    suite.transact(registry.functions.revoke(DIGEST, SERVICE, "first"), actors.registrar)
    assert suite.revert_of(registry.functions.revoke(DIGEST, SERVICE, "second"), actors.registrar) == (
        "ArtifactIsRevoked", {"digest": DIGEST, "service": SERVICE}
    )


def test_revoke_invalid_service_name(suite, registry, actors):
    assert suite.revert_of(registry.functions.revoke(DIGEST, "", "x"), actors.registrar) == (
        "InvalidName", {"name": ""}
    )


def test_getArtifact_unknown(suite, registry, actors):
    register(suite)
    assert suite.revert_of(registry.functions.getArtifact(DIGEST, "worker"), actors.outsider) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": "worker"}
    )


def test_digestOf_unknown_is_zero(registry):
    assert registry.functions.digestOf(SERVICE, "9.9.9").call() == ZERO32
    assert registry.functions.isRevoked(artifact_id(SERVICE, DIGEST)).call() is False


# ================================================================================ policies


def test_setPolicy_first_version(suite, registry, actors):
    receipt = set_policy(suite, threshold=3, min_organisations=2, ttl=86_400, min_wait=600, freeze_severity=2,
                         prior="staging")
    new = {"threshold": 3, "minOrganisations": 2, "ttl": 86_400, "minWait": 600, "freezeSeverity": 2, "version": 1,
           "priorEnvironment": key("staging")}
    old = {"threshold": 0, "minOrganisations": 0, "ttl": 0, "minWait": 0, "freezeSeverity": 0, "version": 0,
           "priorEnvironment": ZERO32}
    [event] = suite.events(receipt, registry, "PolicySet")
    assert {**event, "oldPolicy": dict(event["oldPolicy"]), "newPolicy": dict(event["newPolicy"])} == {
        "serviceKey": key(SERVICE), "environmentKey": key(ENV), "service": SERVICE, "environment": ENV,
        "oldPolicy": old, "newPolicy": new, "priorEnvironment": "staging",
    }
    assert tuple(registry.functions.getPolicy(SERVICE, ENV).call()) == tuple(new.values())


def test_setPolicy_update_bumps_version(suite, registry, actors):
    set_policy(suite, threshold=2, min_organisations=1, prior="staging")
    receipt = set_policy(suite, threshold=1, freeze_severity=4)
    [event] = suite.events(receipt, registry, "PolicySet")
    assert dict(event["oldPolicy"]) == {"threshold": 2, "minOrganisations": 1, "ttl": 0, "minWait": 0,
                                        "freezeSeverity": 0, "version": 1, "priorEnvironment": key("staging")}
    assert dict(event["newPolicy"]) == {"threshold": 1, "minOrganisations": 0, "ttl": 0, "minWait": 0,
                                        "freezeSeverity": 4, "version": 2, "priorEnvironment": ZERO32}
    assert event["priorEnvironment"] == ""
    assert tuple(registry.functions.getPolicy(SERVICE, ENV).call()) == (1, 0, 0, 0, 4, 2, ZERO32)
    # other targets are independent
    set_policy(suite, environment="staging")
    assert registry.functions.getPolicy(SERVICE, "staging").call()[5] == 1


def test_setPolicy_boundaries_accepted(suite, registry):
    set_policy(suite, threshold=255, min_organisations=255, ttl=2**32 - 1, min_wait=2**32 - 1, freeze_severity=4,
               prior="p" * 64)
    assert tuple(registry.functions.getPolicy(SERVICE, ENV).call()) == (
        255, 255, 2**32 - 1, 2**32 - 1, 4, 1, key("p" * 64)
    )


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"threshold": 0, "min_organisations": 0}, "threshold must be at least 1"),
        ({"threshold": 2, "min_organisations": 3}, "minOrganisations cannot exceed threshold"),
        ({"freeze_severity": 5}, "freezeSeverity must be 0 (off) or 1..4"),
        ({"prior": ENV}, "priorEnvironment must differ from environment"),
    ],
    ids=["threshold-zero", "orgs-above-threshold", "freeze-severity-5", "prior-is-self"],
)
def test_setPolicy_invalid_policy(suite, registry, actors, kwargs, why):
    fn = registry.functions.setPolicy(SERVICE, ENV, policy(**kwargs))
    assert suite.revert_of(fn, actors.admin) == ("InvalidPolicy", {"why": why})


@pytest.mark.parametrize(
    "service, environment, prior, bad",
    [("", ENV, "", ""), ("s" * 65, ENV, "", "s" * 65), (SERVICE, "", "", ""), (SERVICE, "e" * 65, "", "e" * 65),
     (SERVICE, ENV, "p" * 65, "p" * 65)],
    ids=["empty-service", "long-service", "empty-env", "long-env", "long-prior"],
)
def test_setPolicy_invalid_name(suite, registry, actors, service, environment, prior, bad):
    fn = registry.functions.setPolicy(service, environment, policy(prior=prior))
    assert suite.revert_of(fn, actors.admin) == ("InvalidName", {"name": bad})


def test_getPolicy_not_found(suite, registry, actors):
    set_policy(suite, environment="staging")
    assert suite.revert_of(registry.functions.getPolicy(SERVICE, ENV), actors.outsider) == (
        "PolicyNotFound", {"service": SERVICE, "environment": ENV}
    )


# ================================================================================ votes


def test_approve_records_vote(ready, registry, actors):
    suite = ready
    receipt = approve(suite, actors.approver2, comment="lgtm")
    ts = suite.w3.eth.get_block(receipt.blockNumber).timestamp
    assert suite.events(receipt, registry, "ArtifactApproved") == [vote_event(actors.approver2, 2, note="lgtm")]
    assert vote_of(suite, actors.approver2) == (Decision.APPROVE, ts)
    assert vote_of(suite, actors.approver1) == (Decision.NONE, 0)
    assert vote_of(suite, actors.approver2, environment="staging") == (Decision.NONE, 0)
    assert check(suite) == gate(Gate.ALLOWED)


def test_approve_carries_policy_version(ready, registry, actors):
    suite = ready
    set_policy(suite, threshold=2)
    receipt = approve(suite, actors.approver1)
    assert suite.events(receipt, registry, "ArtifactApproved")[0]["policyVersion"] == 2


def test_approve_twice(ready, registry, actors):
    suite = ready
    approve(suite, actors.approver1)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), actors.approver1) == (
        "VoteAlreadyCast", {"digest": DIGEST, "environment": ENV, "approver": actors.approver1,
                            "decision": Decision.APPROVE}
    )


def test_approve_after_reject_replaces_vote(ready, registry, actors):
    suite = ready
    reject(suite, actors.approver1)
    assert check(suite) == gate(Gate.REJECTED_BY, int(actors.approver1, 16))
    receipt = approve(suite, actors.approver1, comment="fixed")
    assert suite.events(receipt, registry, "ArtifactApproved") == [vote_event(actors.approver1, 1, note="fixed")]
    assert vote_of(suite, actors.approver1)[0] == Decision.APPROVE
    assert check(suite) == gate(Gate.ALLOWED)


def test_approve_unknown_artifact(suite, registry, actors):
    set_policy(suite)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), actors.approver1) == (
        "ArtifactNotFound", {"digest": DIGEST, "service": SERVICE}
    )


def test_approve_revoked_artifact(ready, registry, actors):
    suite = ready
    suite.transact(registry.functions.revoke(DIGEST, SERVICE, "bad"), actors.registrar)
    for fn in (registry.functions.approve(DIGEST, SERVICE, ENV, ""), registry.functions.reject(DIGEST, SERVICE, ENV, "")):
        assert suite.revert_of(fn, actors.approver1) == ("ArtifactIsRevoked", {"digest": DIGEST, "service": SERVICE})


def test_approve_without_policy(suite, registry, actors):
    register(suite)
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), actors.approver1) == (
        "PolicyNotFound", {"service": SERVICE, "environment": ENV}
    )


@pytest.mark.parametrize("environment", ["", "e" * 65], ids=["empty", "65-bytes"])
def test_approve_invalid_environment_name(ready, registry, actors, environment):
    fn = ready.registry.functions.approve(DIGEST, SERVICE, environment, "")
    assert ready.revert_of(fn, actors.approver1) == ("InvalidName", {"name": environment})


def test_approve_registrant_cannot_approve(suite, registry, actors):
    suite.transact(registry.functions.addMember(2, actors.registrar), actors.admin)
    suite.transact(registry.functions.grantRole(ROLES["APPROVER"], actors.registrar), actors.admin)
    register(suite)
    set_policy(suite)
    expected = ("RegistrantCannotApprove", {"digest": DIGEST, "approver": actors.registrar})
    assert suite.revert_of(registry.functions.approve(DIGEST, SERVICE, ENV, ""), actors.registrar) == expected
    by_sig = registry.functions.voteBySig([signed_vote(suite, actors.registrar)])
    assert suite.revert_of(by_sig, actors.outsider) == expected
    # separation of duties only forbids approving: the registrant may still veto its own artifact
    receipt = reject(suite, actors.registrar, reason="pulled")
    assert suite.events(receipt, registry, "ArtifactRejected") == [
        vote_event(actors.registrar, 2, note="pulled", rejected=True)
    ]


def test_reject_records_veto(ready, registry, actors):
    suite = ready
    receipt = reject(suite, actors.approver3, reason="failing canary")
    ts = suite.w3.eth.get_block(receipt.blockNumber).timestamp
    assert suite.events(receipt, registry, "ArtifactRejected") == [
        vote_event(actors.approver3, 3, note="failing canary", rejected=True)
    ]
    assert vote_of(suite, actors.approver3) == (Decision.REJECT, ts)


def test_reject_twice(ready, registry, actors):
    suite = ready
    reject(suite, actors.approver1)
    assert suite.revert_of(registry.functions.reject(DIGEST, SERVICE, ENV, "again"), actors.approver1) == (
        "VoteAlreadyCast", {"digest": DIGEST, "environment": ENV, "approver": actors.approver1,
                            "decision": Decision.REJECT}
    )


@pytest.mark.parametrize("decision", [Decision.APPROVE, Decision.REJECT])
def test_withdraw_clears_vote(ready, registry, actors, decision):
    suite = ready
    (approve if decision == Decision.APPROVE else reject)(suite, actors.approver1)
    receipt = suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), actors.approver1)
    assert suite.events(receipt, registry, "VoteWithdrawn") == [{
        "digest": DIGEST, "serviceKey": key(SERVICE), "environmentKey": key(ENV), "approver": actors.approver1,
        "previous": decision, "service": SERVICE, "environment": ENV,
    }]
    assert vote_of(suite, actors.approver1) == (Decision.NONE, 0)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 0, 1)
    # a fresh vote is possible afterwards
    approve(suite, actors.approver1)
    assert check(suite) == gate(Gate.ALLOWED)


def test_withdraw_leaves_other_slots_alone(ready, registry, actors):
    """approver1..4 share one packed storage word; withdrawing one must not touch the others."""
    suite = ready
    approve(suite, actors.approver1)
    reject(suite, actors.approver2)
    approve(suite, actors.approver3)
    approve(suite, actors.approver4)
    before = {a: vote_of(suite, a) for a in (actors.approver1, actors.approver3, actors.approver4)}
    suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), actors.approver2)
    assert {a: vote_of(suite, a) for a in before} == before
    assert vote_of(suite, actors.approver2) == (Decision.NONE, 0)


def test_withdraw_no_vote(ready, registry, actors):
    assert ready.revert_of(registry.functions.withdraw(DIGEST, SERVICE, ENV), actors.approver1) == (
        "NoVoteToWithdraw", {"digest": DIGEST, "environment": ENV, "approver": actors.approver1}
    )


def test_voteOf_account_without_slot(ready, registry, actors):
    assert vote_of(ready, actors.outsider) == (Decision.NONE, 0)


# ================================================================================ EIP-712 votes


def test_voteHash_matches_eip712(ready, registry, actors, w3):
    deadline = latest_ts(w3) + 3600
    args = (DIGEST, SERVICE, ENV, Decision.APPROVE, 7, deadline)
    ours = eip712_vote_hash(w3.eth.chain_id, registry.address, *args)
    data = vote_typed_data(w3.eth.chain_id, registry.address, *args)
    assert Account.sign_typed_data(actors.key(actors.approver1), full_message=data).message_hash == ours
    assert registry.functions.voteHash(DIGEST, SERVICE, ENV, 1, 7, deadline).call() == ours


def test_voteBySig_three_signers_submitted_by_outsider(ready, registry, actors):
    suite = ready
    set_policy(suite, threshold=3, min_organisations=3)
    votes = [signed_vote(suite, a, nonce=n) for n, a in enumerate((actors.approver1, actors.approver2, actors.approver3))]
    receipt = suite.transact(registry.functions.voteBySig(votes), actors.outsider)
    ts = suite.w3.eth.get_block(receipt.blockNumber).timestamp
    assert suite.events(receipt, registry, "ArtifactApproved") == [
        vote_event(actors.approver1, 1, by_signature=True, policy_version=2),
        vote_event(actors.approver2, 2, by_signature=True, policy_version=2),
        vote_event(actors.approver3, 3, by_signature=True, policy_version=2),
    ]
    for n, a in enumerate((actors.approver1, actors.approver2, actors.approver3)):
        assert registry.functions.nonceUsed(a, n).call() is True
        assert vote_of(suite, a) == (Decision.APPROVE, ts)
    assert check(suite) == gate(Gate.ALLOWED)


def test_voteBySig_reject(ready, registry, actors):
    suite = ready
    vote = signed_vote(suite, actors.approver2, decision=Decision.REJECT, nonce=11)
    receipt = suite.transact(registry.functions.voteBySig([vote]), actors.outsider)
    assert suite.events(receipt, registry, "ArtifactRejected") == [
        vote_event(actors.approver2, 2, by_signature=True, rejected=True)
    ]
    assert check(suite) == gate(Gate.REJECTED_BY, int(actors.approver2, 16))


def test_voteBySig_empty_batch_is_noop(suite, registry, actors):
    assert suite.transact(registry.functions.voteBySig([]), actors.outsider).logs == []


def test_voteBySig_replay(ready, registry, actors):
    suite = ready
    vote = signed_vote(suite, actors.approver1, nonce=5)
    suite.transact(registry.functions.voteBySig([vote]), actors.outsider)
    suite.transact(registry.functions.withdraw(DIGEST, SERVICE, ENV), actors.approver1)
    # even with the vote withdrawn, the same signature cannot bring it back
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "NonceAlreadyUsed", {"signer": actors.approver1, "nonce": 5}
    )


def test_voteBySig_expired(ready, registry, actors, w3):
    suite = ready
    deadline = latest_ts(w3) - 1
    vote = signed_vote(suite, actors.approver1, deadline=deadline)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "SignatureExpired", {"signer": actors.approver1, "deadline": deadline, "timestamp": latest_ts(w3)}
    )


def test_voteBySig_deadline_is_inclusive(ready, registry, actors, w3):
    suite = ready
    deadline = latest_ts(w3) + 100
    vote = signed_vote(suite, actors.approver1, deadline=deadline)
    w3.provider.make_request("evm_setNextBlockTimestamp", [deadline])
    receipt = suite.transact(registry.functions.voteBySig([vote]), actors.outsider)
    assert w3.eth.get_block(receipt.blockNumber).timestamp == deadline
    assert len(suite.events(receipt, registry, "ArtifactApproved")) == 1


@pytest.mark.parametrize(
    "domain",
    [{"chain_id": 1}, {"contract": "ledger"}, {"name": "shipledger-test"}, {"version": "2"}],
    ids=["wrong-chain-id", "wrong-verifying-contract", "wrong-name", "wrong-version"],
)
def test_voteBySig_wrong_domain(ready, registry, actors, domain):
    suite = ready
    if domain.get("contract") == "ledger":
        domain = {"contract": suite.ledger.address}
    vote = signed_vote(suite, actors.approver1, **domain)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "InvalidSignature", {"signer": actors.approver1}
    )


@pytest.mark.parametrize("field", ["signer", "digest", "environment", "decision", "nonce", "deadline", "signature"])
def test_voteBySig_tampered_vote(ready, registry, actors, field):
    suite = ready
    signer, digest, service, environment, decision, nonce, deadline, signature = signed_vote(suite, actors.approver1)
    if field == "signer":
        signer = actors.approver2
    elif field == "digest":
        digest = sha256("something else")
    elif field == "environment":
        environment = "staging"
    elif field == "decision":
        decision = Decision.REJECT
    elif field == "nonce":
        nonce = 1
    elif field == "deadline":
        deadline += 1
    else:
        signature = b"\x00" * 65
    vote = (signer, digest, service, environment, decision, nonce, deadline, signature)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "InvalidSignature", {"signer": signer}
    )


def test_voteBySig_malleable_signature(ready, registry, actors):
    """The high-s twin of a valid signature (same signer under plain ecrecover) is refused."""
    suite = ready
    vote = list(signed_vote(suite, actors.approver1))
    sig = vote[7]
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s_value = int.from_bytes(sig[32:64], "big")
    vote[7] = sig[:32] + (n - s_value).to_bytes(32, "big") + bytes([55 - sig[64]])  # 27 <-> 28
    assert suite.revert_of(registry.functions.voteBySig([tuple(vote)]), actors.outsider) == (
        "InvalidSignature", {"signer": actors.approver1}
    )


def test_voteBySig_signer_not_approver(ready, registry, actors):
    suite = ready
    vote = signed_vote(suite, actors.outsider)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.approver1) == (
        "SignerNotApprover", {"signer": actors.outsider}
    )


def test_voteBySig_removed_approver(ready, registry, actors):
    suite = ready
    vote = signed_vote(suite, actors.approver3)  # signed while still an approver
    suite.transact(registry.functions.removeMember(actors.approver3), actors.admin)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "SignerNotApprover", {"signer": actors.approver3}
    )


def test_voteBySig_decision_none(ready, registry, actors):
    suite = ready
    vote = signed_vote(suite, actors.approver1, decision=Decision.NONE)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "InvalidDecision", {"decision": Decision.NONE}
    )


def test_voteBySig_duplicate_signer_reverts_whole_batch(ready, registry, actors):
    suite = ready
    votes = [
        signed_vote(suite, actors.approver2, nonce=1),
        signed_vote(suite, actors.approver1, nonce=1),
        signed_vote(suite, actors.approver1, nonce=2),
    ]
    fn = registry.functions.voteBySig(votes)
    assert suite.revert_of(fn, actors.outsider) == (
        "VoteAlreadyCast", {"digest": DIGEST, "environment": ENV, "approver": actors.approver1,
                            "decision": Decision.APPROVE}
    )
    assert send_failing(suite, fn, actors.outsider).logs == []
    for signer, nonce in ((actors.approver2, 1), (actors.approver1, 1), (actors.approver1, 2)):
        assert registry.functions.nonceUsed(signer, nonce).call() is False
    assert vote_of(suite, actors.approver1) == vote_of(suite, actors.approver2) == (Decision.NONE, 0)


def test_voteBySig_invalidated_nonce(ready, registry, actors):
    suite = ready
    vote = signed_vote(suite, actors.approver1, nonce=9)
    suite.transact(registry.functions.invalidateNonce(9), actors.approver1)
    assert suite.revert_of(registry.functions.voteBySig([vote]), actors.outsider) == (
        "NonceAlreadyUsed", {"signer": actors.approver1, "nonce": 9}
    )


def test_voteBySig_unordered_nonces(ready, registry, actors):
    suite = ready
    set_policy(suite, environment="staging")
    later = signed_vote(suite, actors.approver1, nonce=7)
    earlier = signed_vote(suite, actors.approver1, nonce=3, environment="staging")
    suite.transact(registry.functions.voteBySig([later]), actors.outsider)
    receipt = suite.transact(registry.functions.voteBySig([earlier]), actors.outsider)
    assert suite.events(receipt, registry, "ArtifactApproved") == [
        vote_event(actors.approver1, 1, by_signature=True, environment="staging")
    ]
    used = [n for n in range(10) if registry.functions.nonceUsed(actors.approver1, n).call()]
    assert used == [3, 7]
    assert check(suite) == check(suite, environment="staging") == gate(Gate.ALLOWED)


def test_voteBySig_extreme_nonce(ready, registry, actors):
    suite = ready
    nonce = 2**256 - 1
    suite.transact(registry.functions.voteBySig([signed_vote(suite, actors.approver1, nonce=nonce)]), actors.outsider)
    assert registry.functions.nonceUsed(actors.approver1, nonce).call() is True
    assert registry.functions.nonceUsed(actors.approver1, nonce - 1).call() is False


def test_invalidateNonce_burns_nonce(suite, registry, actors):
    receipt = suite.transact(registry.functions.invalidateNonce(42), actors.approver1)
    assert suite.events(receipt, registry, "NonceInvalidated") == [{"signer": actors.approver1, "nonce": 42}]
    assert registry.functions.nonceUsed(actors.approver1, 42).call() is True
    # nonces are per signer
    assert registry.functions.nonceUsed(actors.approver2, 42).call() is False


def test_invalidateNonce_already_used(suite, registry, actors):
    suite.transact(registry.functions.invalidateNonce(42), actors.approver1)
    assert suite.revert_of(registry.functions.invalidateNonce(42), actors.approver1) == (
        "NonceAlreadyUsed", {"signer": actors.approver1, "nonce": 42}
    )


# ================================================================================ checkRelease


def test_checkRelease_unknown_artifact(suite):
    set_policy(suite)
    assert check(suite) == gate(Gate.UNKNOWN_ARTIFACT)


def test_checkRelease_artifact_revoked(suite, registry, actors):
    register(suite)  # no policy either: revocation is reported first
    suite.transact(registry.functions.revoke(DIGEST, SERVICE, "bad"), actors.registrar)
    assert check(suite) == gate(Gate.ARTIFACT_REVOKED)


def test_checkRelease_no_policy(suite):
    register(suite)
    set_policy(suite, environment="staging")
    assert check(suite) == gate(Gate.NO_POLICY)


def test_checkRelease_rejected_by(ready, registry, actors):
    suite = ready
    set_policy(suite, min_wait=3600)  # a rejection is reported before the waiting period
    approve(suite, actors.approver1)
    reject(suite, actors.approver3)
    assert check(suite) == gate(Gate.REJECTED_BY, int(actors.approver3, 16))
    # the rejection is scoped to (artifact, prod): staging is unaffected
    set_policy(suite, environment="staging")
    approve(suite, actors.approver1, environment="staging")
    assert check(suite, environment="staging") == gate(Gate.ALLOWED)


def test_checkRelease_waiting_period(suite, registry, actors, w3):
    register(suite)
    set_policy(suite, min_wait=3600)
    approve(suite, actors.approver1)
    registered_at = registry.functions.getArtifact(DIGEST, SERVICE).call()[1]
    assert check(suite) == gate(Gate.WAITING_PERIOD, registered_at + 3600, latest_ts(w3))
    mine_at(w3, registered_at + 3599)
    assert check(suite) == gate(Gate.WAITING_PERIOD, registered_at + 3600, registered_at + 3599)
    mine_at(w3, registered_at + 3600)
    assert check(suite) == gate(Gate.ALLOWED)


def test_checkRelease_not_enough_approvals(ready, actors):
    suite = ready
    set_policy(suite, threshold=3)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 0, 3)
    approve(suite, actors.approver1)
    approve(suite, actors.approver2)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 2, 3)
    # approvals for another environment or another service do not count here
    set_policy(suite, environment="staging")
    approve(suite, actors.approver3, environment="staging")
    register(suite, artifact(service="worker"))
    set_policy(suite, service="worker")
    approve(suite, actors.approver3, service="worker")
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 2, 3)


def test_checkRelease_approvals_expired(ready, actors, w3):
    suite = ready
    set_policy(suite, threshold=2, ttl=100)
    cast_at = w3.eth.get_block(approve(suite, actors.approver1).blockNumber).timestamp
    approve(suite, actors.approver2)
    mine_at(w3, cast_at + 100)  # castAt + ttl: still valid
    assert check(suite) == gate(Gate.ALLOWED)
    advance(w3, 1_000)
    assert check(suite) == gate(Gate.APPROVALS_EXPIRED, 0, 2)
    approve(suite, actors.approver3)  # one fresh, two stale
    assert check(suite) == gate(Gate.APPROVALS_EXPIRED, 1, 2)
    set_policy(suite, threshold=2, ttl=0)  # ttl 0: approvals never expire
    assert check(suite) == gate(Gate.ALLOWED)


def test_checkRelease_expired_not_enough_even_if_fresh(ready, actors, w3):
    """Fewer approvals than the threshold in total is NotEnoughApprovals even when some expired."""
    suite = ready
    set_policy(suite, threshold=3, ttl=100)
    approve(suite, actors.approver1)
    advance(w3, 1_000)
    approve(suite, actors.approver2)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 1, 3)


def test_checkRelease_not_enough_organisations(ready, actors):
    suite = ready
    set_policy(suite, threshold=2, min_organisations=2)
    approve(suite, actors.approver1)  # org 1
    approve(suite, actors.approver4)  # org 1
    assert check(suite) == gate(Gate.NOT_ENOUGH_ORGANISATIONS, 1, 2)
    approve(suite, actors.approver2)  # org 2
    assert check(suite) == gate(Gate.ALLOWED)


def test_checkRelease_expired_approvals_do_not_count_organisations(ready, actors, w3):
    suite = ready
    set_policy(suite, threshold=2, min_organisations=2, ttl=100)
    approve(suite, actors.approver2)  # org 2, will expire
    advance(w3, 1_000)
    approve(suite, actors.approver1)  # org 1
    assert check(suite) == gate(Gate.APPROVALS_EXPIRED, 1, 2)
    approve(suite, actors.approver4)  # org 1: enough fresh approvals, but only one organisation among them
    assert check(suite) == gate(Gate.NOT_ENOUGH_ORGANISATIONS, 1, 2)


def test_checkRelease_allowed_reports_prior_and_freeze(ready, actors):
    suite = ready
    set_policy(suite, threshold=1, freeze_severity=2, prior="staging")
    approve(suite, actors.approver1)
    assert check(suite) == gate(Gate.ALLOWED, prior=key("staging"), freeze=2)


def test_checkRelease_removed_approver_stops_counting(ready, registry, actors):
    suite = ready
    approve(suite, actors.approver4)
    assert check(suite) == gate(Gate.ALLOWED)
    suite.transact(registry.functions.removeMember(actors.approver4), actors.admin)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 0, 1)


def test_checkRelease_votes_survive_policy_change(ready, actors):
    """Votes are per (artifact, target), not per policy version: tightening the policy keeps them."""
    suite = ready
    approve(suite, actors.approver1)
    set_policy(suite, threshold=2)
    assert check(suite) == gate(Gate.NOT_ENOUGH_APPROVALS, 1, 2)
    approve(suite, actors.approver2)
    assert check(suite) == gate(Gate.ALLOWED)


# ================================================================================ access control

ACTOR_ROLES = {
    "admin": "ADMIN",
    "registrar": "REGISTRAR",
    "deployer": "DEPLOYER",
    "responder": "RESPONDER",
    "approver1": "APPROVER",
    "outsider": None,
}


def _access_case(suite, function):
    """(role needed, call, verify) for one state-changing function, with its preconditions set up."""
    fns, a = suite.registry.functions, suite.actors
    if function in ("revoke", "approve", "reject", "withdraw"):
        register(suite)
        set_policy(suite)
    if function == "withdraw":
        approve(suite, a.approver1)
    if function == "setPolicy":
        set_policy(suite, environment="qa")  # so that getPolicy answers before the change
    new_item = artifact(sha256("api 2.0.0"), version="2.0.0")
    cases = {
        "addOrganisation": ("ADMIN", fns.addOrganisation("hooli"),
                            lambda: fns.organisationCount().call() == 4),
        "addMember": ("ADMIN", fns.addMember(2, NEWCOMER), lambda: fns.organisationOf(NEWCOMER).call() == 2),
        "removeMember": ("ADMIN", fns.removeMember(a.approver3), lambda: fns.organisationOf(a.approver3).call() == 0),
        "register": ("REGISTRAR", fns.register(new_item), lambda: fns.digestOf(SERVICE, "2.0.0").call() == new_item[0]),
        "registerBatch": ("REGISTRAR", fns.registerBatch([new_item]),
                          lambda: fns.digestOf(SERVICE, "2.0.0").call() == new_item[0]),
        "revoke": ("REGISTRAR", fns.revoke(DIGEST, SERVICE, "bad"),
                   lambda: fns.isRevoked(artifact_id(SERVICE, DIGEST)).call()),
        "setPolicy": ("ADMIN", fns.setPolicy(SERVICE, "qa", policy(2)), lambda: fns.getPolicy(SERVICE, "qa").call()[0] == 2),
        "approve": ("APPROVER", fns.approve(DIGEST, SERVICE, ENV, ""),
                    lambda: vote_of(suite, a.approver1)[0] == Decision.APPROVE),
        "reject": ("APPROVER", fns.reject(DIGEST, SERVICE, ENV, ""),
                   lambda: vote_of(suite, a.approver1)[0] == Decision.REJECT),
        "withdraw": ("APPROVER", fns.withdraw(DIGEST, SERVICE, ENV), lambda: vote_of(suite, a.approver1) == (0, 0)),
        "invalidateNonce": ("APPROVER", fns.invalidateNonce(42), lambda: fns.nonceUsed(a.approver1, 42).call()),
        "grantRole": ("ADMIN", fns.grantRole(ROLES["RESPONDER"], a.outsider),
                      lambda: fns.hasRole(ROLES["RESPONDER"], a.outsider).call()),
        "revokeRole": ("ADMIN", fns.revokeRole(ROLES["DEPLOYER"], a.deployer),
                       lambda: not fns.hasRole(ROLES["DEPLOYER"], a.deployer).call()),
    }
    return cases[function]


ACCESS_FUNCTIONS = [
    "addOrganisation", "addMember", "removeMember", "register", "registerBatch", "revoke", "setPolicy",
    "approve", "reject", "withdraw", "invalidateNonce", "grantRole", "revokeRole",
]


@pytest.mark.parametrize("actor", list(ACTOR_ROLES))
@pytest.mark.parametrize("function", ACCESS_FUNCTIONS)
def test_access_control_matrix(suite, function, actor):
    """Every state-changing function x every actor: the holder of the needed role changes the state;
    anyone else gets AccessControlUnauthorizedAccount(account, neededRole), also when the transaction
    is actually mined, and the state stays as it was."""
    role, call, verify = _access_case(suite, function)
    sender = getattr(suite.actors, actor)
    if ACTOR_ROLES[actor] == role:
        assert not verify()
        suite.transact(call, sender)
        assert verify()
    else:
        assert suite.revert_of(call, sender) == (
            "AccessControlUnauthorizedAccount", {"account": sender, "neededRole": ROLES[role]}
        )
        assert send_failing(suite, call, sender).logs == []
        assert not verify()


# ================================================================================ properties

names = st.text(min_size=1, max_size=16)  # at most 4 UTF-8 bytes a character: always 1..64 bytes
digests = st.binary(min_size=32, max_size=32).filter(lambda d: d != ZERO32)


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(service=names, version=names, digest=digests)
def test_register_round_trip_property(suite, service, version, digest):
    w3, registry = suite.w3, suite.registry
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        receipt = suite.transact(registry.functions.register(artifact(digest, service, version)), suite.actors.registrar)
        [event] = suite.events(receipt, registry, "ArtifactRegistered")
        assert (event["digest"], event["service"], event["version"]) == (digest, service, version)
        assert (event["serviceKey"], event["versionKey"]) == (key(service), key(version))
        assert registry.functions.digestOf(service, version).call() == digest
        registrant, registered_at, revoked = registry.functions.getArtifact(digest, service).call()
        assert (registrant, registered_at, revoked) == (
            suite.actors.registrar, w3.eth.get_block(receipt.blockNumber).timestamp, False
        )
        assert registry.functions.isRevoked(artifact_id(service, digest)).call() is False
    finally:
        w3.provider.make_request("evm_revert", [snapshot])


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40))
def test_register_name_length_property(suite, name):
    """A name is valid exactly when its UTF-8 encoding is 1..64 bytes long."""
    fn = suite.registry.functions.register(artifact(service=name))
    if 1 <= len(name.encode()) <= 64:
        assert fn.call({"from": suite.actors.registrar}) is True
    else:
        assert suite.revert_of(fn, suite.actors.registrar) == ("InvalidName", {"name": name})


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    digest=st.binary(min_size=32, max_size=32),
    service=st.text(max_size=80),
    environment=st.text(max_size=80),
    decision=st.sampled_from(list(Decision)),
    nonce=st.integers(0, 2**256 - 1),
    deadline=st.integers(0, 2**256 - 1),
)
def test_voteHash_property(suite, digest, service, environment, decision, nonce, deadline):
    registry, w3 = suite.registry, suite.w3
    ours = eip712_vote_hash(w3.eth.chain_id, registry.address, digest, service, environment, decision, nonce, deadline)
    assert registry.functions.voteHash(digest, service, environment, int(decision), nonce, deadline).call() == ours

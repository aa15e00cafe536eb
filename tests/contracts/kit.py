"""What the contract tests of suite v2 share: the numbers of the contracts' enums, storage keys computed
from first principles, input tuples, governance as the consortium runs it, EIP-712 votes signed here,
and the history head recomputed from the raw logs. Nothing here asserts a result: the tests do."""

from __future__ import annotations

import hashlib
from enum import IntEnum

from eth_abi import encode
from eth_account import Account
from web3 import Web3

from shipledger.client import SKIP_REASONS

ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
GOVERNANCE_DELAY = 60  # seconds, as tests/conftest.py deploys the suite
MAX_SIGNATURE_VALIDITY = 30 * 24 * 3600
ROLE_NAMES = ("REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER", "ATTESTOR")
ROLES = {name: Web3.keccak(text=f"{name}_ROLE") for name in ROLE_NAMES}
DEFAULT_ADMIN = ZERO32
# Which organisation each dev actor belongs to in the conftest bootstrap (1 acme, 2 globex, 3 initech).
ORG = {"approver1": 1, "approver2": 2, "approver3": 3, "approver4": 1, "registrar": 1, "deployer": 1,
       "responder": 2, "steward1": 1, "steward2": 2, "steward3": 3}


# The contracts' enums, as the SDK declares them (tests/contracts/test_enums.py checks each against the
# Solidity declaration), under the short names the contract tests use.
from shipledger._internal.gatecall import GateReason as Gate  # noqa: E402
from shipledger.models import ArtifactKind as Kind, Decision, IncidentStatus as Incident, ProposalState as Proposal  # noqa: E402
from shipledger.models import DeploymentStatus as Status, Verdict  # noqa: E402

Skip = IntEnum("Skip", [(name.upper(), number) for number, name in enumerate(SKIP_REASONS)])


# ---------------------------------------------------------------------------------------- keys


def sha256(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def key(name: str) -> bytes:
    """keccak256 of a service, environment, version or type name (Keys.name)."""
    return Web3.keccak(name.encode())


def artifact_id(service: str, digest: bytes) -> bytes:
    return Web3.keccak(encode(["bytes32", "bytes32"], [key(service), digest]))


def target(service: str, environment: str) -> bytes:
    return Web3.keccak(encode(["bytes32", "bytes32"], [key(service), key(environment)]))


def scoped_role(role: str, scope: str = "") -> bytes:
    """The AccessControl role id of a role for one scope; "" is the role itself."""
    if not scope:
        return ROLES[role]
    return Web3.keccak(encode(["bytes32", "bytes32"], [ROLES[role], key(scope)]))


def as_int(address: str) -> int:
    return int(address, 16)


# ---------------------------------------------------------------------------------------- inputs

ARTIFACT_TYPE = "(bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string)"


def artifact(digest: bytes | None = None, service: str = "api", version: str = "1.0.0", *, kind: int = Kind.BUILD,
             commit: bytes = bytes.fromhex("a1" * 20) + b"\x00" * 12, committed_at: int = 1_700_000_000,
             provenance: bytes = b"\x0b" * 32, sbom: bytes = b"\x0c" * 32, uri: str | None = None) -> tuple:
    """An ArtifactInput tuple (digest defaults to sha256 of "service version")."""
    digest = sha256(f"{service} {version}") if digest is None else digest
    uri = f"oci://registry.example/{service}:{version}" if uri is None else uri
    return (digest, service, version, int(kind), commit, committed_at, provenance, sbom, uri)


def record_hash(item: tuple) -> bytes:
    """keccak256(abi.encode(ArtifactInput)), computed here."""
    return Web3.keccak(encode([ARTIFACT_TYPE], [item]))


def policy(threshold=1, min_organisations=0, ttl=0, min_wait=0, freeze_severity=0, resolve_quorum=1, prior="",
           attestations=()) -> tuple:
    """A PolicyInput tuple."""
    return (threshold, min_organisations, ttl, min_wait, freeze_severity, resolve_quorum, prior, list(attestations))


def stored_policy(threshold=1, min_organisations=0, ttl=0, min_wait=0, freeze_severity=0, resolve_quorum=1,
                  version=1, prior="", attestations=()) -> tuple:
    """The Policy tuple getPolicy returns."""
    return (threshold, min_organisations, ttl, min_wait, freeze_severity, resolve_quorum, version,
            key(prior) if prior else ZERO32, [key(t) for t in attestations])


# ---------------------------------------------------------------------------------------- chain


def latest_ts(w3) -> int:
    return w3.eth.get_block("latest").timestamp


def mine_at(w3, timestamp: int) -> None:
    w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
    w3.provider.make_request("evm_mine", [])


def advance(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def block_ts(w3, receipt) -> int:
    return w3.eth.get_block(receipt.blockNumber).timestamp


def events(receipt, contract, name: str) -> list[dict]:
    """Decoded arguments of every `name` log the receipt holds from this contract's address only
    (web3's process_receipt decodes any address's logs with a matching topic)."""
    event = getattr(contract.events, name)()
    return [dict(event.process_log(log)["args"]) for log in receipt.logs
            if log["address"] == contract.address and log["topics"]
            and log["topics"][0] == Web3.keccak(text=_signature(event))]


def _signature(event) -> str:
    from shipledger._internal.revert import canonical_type

    return f"{event.abi['name']}({','.join(canonical_type(i) for i in event.abi['inputs'])})"


def send_failing(suite, fn, sender, gas=3_000_000):
    """Mine a transaction that reverts (explicit gas skips estimation); return its receipt."""
    tx_hash = fn.transact({"from": sender, "gas": gas, "gasPrice": suite.w3.eth.gas_price})
    receipt = suite.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt.status == 0
    return receipt


def send_many(suite, contract, calls, sender, gas=400_000):
    """Send many transactions through bare JSON-RPC (no per-call estimation); all must succeed."""
    hashes = []
    for name, args in calls:
        reply = suite.w3.provider.make_request("eth_sendTransaction", [{
            "from": sender, "to": contract.address, "gas": hex(gas), "gasPrice": hex(suite.w3.eth.gas_price),
            "data": contract.encode_abi(name, args)}])
        assert "result" in reply, reply
        hashes.append(reply["result"])
    suite.w3.eth.wait_for_transaction_receipt(hashes[-1], poll_latency=0.01)
    for tx_hash in hashes:
        receipt = suite.w3.provider.make_request("eth_getTransactionReceipt", [tx_hash])["result"]
        assert int(receipt["status"], 16) == 1, tx_hash


# ---------------------------------------------------------------------------------------- governance


def calldata(fn) -> bytes:
    """The call data of a contract function call."""
    return bytes.fromhex(fn._encode_transaction_data().removeprefix("0x"))


def propose(suite, fn, steward=None) -> tuple[int, object]:
    """Proposes the call fn (a registry or governance function) as a steward; (id, receipt)."""
    receipt = suite.transact(suite.governance.functions.propose(fn.address, fn._encode_transaction_data()),
                             steward or suite.actors.steward1)
    return events(receipt, suite.governance, "ProposalCreated")[0]["id"], receipt


def governed(suite, fn, stewards=None):
    """Runs fn through governance as the consortium does: the first steward proposes, the others
    approve until K, and a weakening change waits out the delay and is executed by an outsider.
    Returns the receipt of the transaction in which the change ran."""
    a = suite.actors
    stewards = stewards or (a.steward1, a.steward2)
    proposal_id, receipt = propose(suite, fn, stewards[0])
    for steward in stewards[1:]:
        receipt = suite.transact(suite.governance.functions.approveProposal(proposal_id), steward)
    state = suite.governance.functions.getProposal(proposal_id).call()[1]
    if state == Proposal.SCHEDULED:
        advance(suite.w3, suite.governance.functions.delay().call())
        receipt = suite.transact(suite.governance.functions.executeProposal(proposal_id), a.outsider)
    assert suite.governance.functions.getProposal(proposal_id).call()[1] == Proposal.EXECUTED
    return receipt


def set_policy(suite, service="api", environment="prod", **kwargs):
    return governed(suite, suite.registry.functions.setPolicy(service, environment, policy(**kwargs)))


def grant(suite, role: str, account: str, scope: str = ""):
    return governed(suite, suite.registry.functions.grantScopedRole(ROLES[role], scope, account))


def add_member(suite, account: str, approver: bool = False, steward=None):
    return suite.transact(suite.registry.functions.addMember(account, approver), steward or suite.actors.steward1)


# ---------------------------------------------------------------------------------------- votes

VOTE_TYPE = ("Vote(address signer,bytes32 digest,string service,string environment,uint8 decision,uint256 nonce,"
             "uint64 signedAt,uint64 deadline)")
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"


def vote_struct_hash(signer, digest, service, environment, decision, nonce, signed_at, deadline) -> bytes:
    return Web3.keccak(encode(
        ["bytes32", "address", "bytes32", "bytes32", "bytes32", "uint8", "uint256", "uint64", "uint64"],
        [Web3.keccak(text=VOTE_TYPE), signer, digest, key(service), key(environment), int(decision), nonce,
         signed_at, deadline]))


def eip712_vote_hash(chain_id, contract, signer, digest, service, environment, decision, nonce, signed_at, deadline,
                     name="shipledger", version="2") -> bytes:
    """The EIP-712 digest of a Vote, computed from first principles."""
    domain = Web3.keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"], [
        Web3.keccak(text=DOMAIN_TYPE), Web3.keccak(text=name), Web3.keccak(text=version), chain_id, contract]))
    struct = vote_struct_hash(signer, digest, service, environment, decision, nonce, signed_at, deadline)
    return Web3.keccak(b"\x19\x01" + domain + struct)


def signed_vote(suite, signer, *, digest=None, service="api", environment="prod", decision=Decision.APPROVE,
                nonce=0, signed_at=None, deadline=None, private_key=None, chain_id=None, contract=None,
                name="shipledger", version="2") -> tuple:
    """A SignedVote tuple signed by signer's dev key (or private_key). signedAt defaults to the latest
    block's time, the deadline to an hour later; the domain to the real one unless overridden."""
    digest = sha256(f"{service} 1.0.0") if digest is None else digest
    signed_at = latest_ts(suite.w3) if signed_at is None else signed_at
    deadline = signed_at + 3600 if deadline is None else deadline
    message_hash = eip712_vote_hash(suite.w3.eth.chain_id if chain_id is None else chain_id,
                                    contract or suite.registry.address, signer, digest, service, environment,
                                    decision, nonce, signed_at, deadline, name=name, version=version)
    signature = Account.unsafe_sign_hash(message_hash, private_key or suite.actors.key(signer)).signature
    return (signer, digest, service, environment, int(decision), nonce, signed_at, deadline, bytes(signature))


def vote_event(approver, org, *, submitter=None, signed_at, by_signature=False, nonce=0, deadline=0, note="",
               policy_version=1, digest=None, service="api", environment="prod", rejected=False) -> dict:
    """The arguments of ArtifactApproved (or ArtifactRejected with rejected=True)."""
    digest = sha256(f"{service} 1.0.0") if digest is None else digest
    return {
        "digest": digest, "serviceKey": key(service), "environmentKey": key(environment), "approver": approver,
        "org": org, "policyVersion": policy_version, "bySignature": by_signature, "signedAt": signed_at,
        "nonce": nonce, "deadline": deadline, "submitter": submitter or approver, "service": service,
        "environment": environment, ("reason" if rejected else "comment"): note,
    }


# ---------------------------------------------------------------------------------------- history

# Governance is a TimelockController: its own events (CallScheduled, CallExecuted, CallSalt, Cancelled,
# MinDelayChange, RoleGranted) come from the same address but are not records.
GOVERNANCE_RECORDS = ("ProposalCreated", "ProposalApproved", "ProposalScheduled", "ProposalExecuted",
                      "ProposalCancelled", "SettingsChanged")


def record_topics(contract, names) -> set[bytes]:
    return {Web3.keccak(text=_signature(getattr(contract.events, n)())) for n in names}


def history_from_logs(w3, address: str, only: set[bytes] | None = None) -> tuple[bytes, int]:
    """(head as the getter returns it, count) recomputed from every log of address, in log order:
    record = keccak(topics ‖ data), head' = first 24 bytes of keccak(head ‖ record)."""
    logs = w3.eth.get_logs({"address": address, "fromBlock": 0, "toBlock": "latest"})
    logs = sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))
    head, count = b"\x00" * 24, 0
    for log in logs:
        if only is not None and bytes(log["topics"][0]) not in only:
            continue
        record = Web3.keccak(b"".join(bytes(t) for t in log["topics"]) + bytes(log["data"]))
        head = Web3.keccak(head + record)[:24]
        count += 1
    return head + b"\x00" * 8, count


# ---------------------------------------------------------------------------------------- ledger


def register(suite, *items, registrar=None):
    """Registers each ArtifactInput (default: api 1.0.0) as the registrar; the last receipt."""
    receipt = None
    for item in items or (artifact(),):
        receipt = suite.transact(suite.registry.functions.register(item), registrar or suite.actors.registrar)
    return receipt


def approve(suite, approver, digest=None, service="api", environment="prod", comment=""):
    digest = sha256(f"{service} 1.0.0") if digest is None else digest
    return suite.transact(suite.registry.functions.approve(digest, service, environment, comment), approver)


def reject(suite, approver, digest=None, service="api", environment="prod", reason="no"):
    digest = sha256(f"{service} 1.0.0") if digest is None else digest
    return suite.transact(suite.registry.functions.reject(digest, service, environment, reason), approver)


def gate(suite, digest, service="api", environment="prod") -> tuple:
    return tuple(suite.ledger.functions.gate(digest, service, environment).call())


def start(suite, digest, service="api", environment="prod", percent=100) -> tuple[int, object]:
    """Starts a rollout as the deployer; (deployment id, receipt)."""
    receipt = suite.transact(suite.ledger.functions.start(digest, service, environment, percent), suite.actors.deployer)
    return events(receipt, suite.ledger, "DeploymentStarted")[0]["id"], receipt


def incident_input(service="api", environment="prod", severity=2, suspects=(), title="5xx spike") -> tuple:
    return (service, environment, severity, list(suspects), title, sha256("incident details"),
            "https://status.example/incidents/42")


def open_incident(suite, service="api", environment="prod", severity=2, suspects=(), responder=None) -> int:
    receipt = suite.transact(suite.ledger.functions.openIncident(incident_input(service, environment, severity, suspects)),
                             responder or suite.actors.responder)
    return events(receipt, suite.ledger, "IncidentOpened")[0]["id"]


def snapshot(w3) -> str:
    return w3.provider.make_request("evm_snapshot", [])["result"]


def revert_to(w3, snap: str) -> None:
    assert w3.provider.make_request("evm_revert", [snap])["result"] is True


def as_governance(suite, fn):
    """Sends fn from the Governance contract's address (anvil impersonation): for the registry's own
    rules on calls only governance may make, without a proposal each time. Governance itself is
    tested in test_governance.py; this only skips the vote."""
    address = suite.governance.address
    suite.w3.provider.make_request("anvil_impersonateAccount", [address])
    suite.w3.provider.make_request("anvil_setBalance", [address, hex(10**20)])
    try:
        return suite.transact(fn, address)
    finally:
        suite.w3.provider.make_request("anvil_stopImpersonatingAccount", [address])


def quick_policy(suite, service="api", environment="prod", **kwargs):
    """set_policy without the vote (see as_governance)."""
    return as_governance(suite, suite.registry.functions.setPolicy(service, environment, policy(**kwargs)))

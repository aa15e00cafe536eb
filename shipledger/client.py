"""The SDK: `Ledger` speaks to a deployed shipledger suite over plain JSON-RPC."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3.utils.address import get_create_address
from web3 import Web3
from web3._utils.events import get_event_data
from web3.logs import DISCARD

from shipledger._internal import artifacts
from shipledger._internal.batch import RegistrationBatch
from shipledger._internal.book import load_address_book
from shipledger._internal.chain import TxSender, call, connect, raise_decoded
from shipledger._internal.revert import canonical_type
from shipledger._internal.rpc import LOG_RANGE, log_ranges  # noqa: F401 - LOG_RANGE was defined here
from shipledger._internal.endpoints import HEAD_TIMEOUT, in_sync, split_urls, write_order
from shipledger._internal.freshness import check_block_age, max_block_age
from shipledger._internal.gatecall import decode_gate_result, encode_gate_call, policy_name_of_key
from shipledger._internal.names import check_name, format_digest, parse_address, parse_digest
from shipledger.errors import AddressBookError, ConnectionFailed, Denied, NoSigner, UsageError, revert_error
from shipledger.models import (
    EVENT_KINDS,
    Artifact,
    ArtifactKind,
    ArtifactSpec,
    Bootstrap,
    BatchResult,
    Decision,
    Deployment,
    GateResult,
    HistoryEvent,
    Incident,
    Policy,
    Proposal,
    ProposalState,
    Resolution,
    SignedApproval,
    TargetState,
    TxReceipt,
    Verdict,
    Vote,
)

ROLES = ("REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER", "ATTESTOR")
SCOPED_ROLES = ("REGISTRAR", "ATTESTOR")  # granted for one service / attestation type, or "" for all
ARTIFACT_KINDS = tuple(k.name.lower() for k in ArtifactKind)
MAX_SIGNATURE_VALIDITY = 30 * 24 * 3600  # the registry's cap on a signature's deadline when the ttl is 0
MAX_URI_BYTES = 2048  # longer is not a portable URL; and one artifact must stay small next to a transaction
VOTE_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Vote": [
        {"name": "signer", "type": "address"},
        {"name": "digest", "type": "bytes32"},
        {"name": "service", "type": "string"},
        {"name": "environment", "type": "string"},
        {"name": "decision", "type": "uint8"},
        {"name": "nonce", "type": "uint256"},
        {"name": "signedAt", "type": "uint64"},
        {"name": "deadline", "type": "uint64"},
    ],
}


def role_id(role: str) -> bytes:
    role = role.upper().removesuffix("_ROLE")
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return Web3.keccak(text=f"{role}_ROLE")


def scoped_role_id(role: str, scope: str) -> bytes:
    """The AccessControl role id of `role` for one service or attestation type ("" for all)."""
    from eth_abi import encode

    return role_id(role) if not scope else Web3.keccak(encode(["bytes32", "bytes32"], [role_id(role), _name_key(scope)]))


SIGNED_VOTE_GAS = 100_000  # an upper bound on recording one signed vote (scripts/gas.py: ~55k by transaction)
SKIP_REASONS = ("none", "bad_signature", "not_approver", "nonce_used", "expired", "stale", "signed_in_future", "refused")


def record_hash(item: tuple) -> str:
    """keccak256(abi.encode(ArtifactInput)) of a validated artifact tuple: what the registry keeps
    per (service, version) to tell an identical registration from a conflicting one."""
    from eth_abi import encode

    return "0x" + Web3.keccak(encode(["(bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string)"], [item])).hex()


def policy_input(
    service: str,
    environment: str,
    *,
    threshold: int,
    min_organisations: int = 0,
    ttl: int = 0,
    min_wait: int = 0,
    prior_environment: str = "",
    freeze_severity: int = 0,
    resolve_quorum: int = 1,
    required_attestations: Iterable[str] = (),
) -> tuple:
    """A policy as the contract's PolicyInput tuple, each field checked."""
    check_name("service", service)
    check_name("environment", environment)
    if prior_environment:
        check_name("prior environment", prior_environment)
    required = [check_name("attestation type", t) for t in required_attestations]
    for label, value, low, top in (("threshold", threshold, 1, 255), ("min-orgs", min_organisations, 0, 255),
                                   ("ttl", ttl, 0, 2**32 - 1), ("wait", min_wait, 0, 2**32 - 1),
                                   ("freeze severity", freeze_severity, 0, 4), ("resolve quorum", resolve_quorum, 1, 255)):
        if not low <= value <= top:
            raise UsageError(f"{label} {value} must be between {low} and {top}")
    return (threshold, min_organisations, ttl, min_wait, freeze_severity, resolve_quorum, prior_environment, required)


def encode_bootstrap(b: Bootstrap) -> tuple:
    """The registry constructor's Bootstrap tuple."""
    org_ids = {name: n for n, (name, _) in enumerate(b.organisations, start=1)}
    unknown = sorted({org for _, org, _ in b.members} - set(org_ids))
    if unknown:
        raise UsageError(f"bootstrap members name organisations that are not in it: {', '.join(unknown)}")
    return (
        [name for name, _ in b.organisations],
        [parse_address(steward) for _, steward in b.organisations],
        [parse_address(address) for address, _, _ in b.members],
        [org_ids[org] for _, org, _ in b.members],
        [bool(approver) for _, _, approver in b.members],
        [role_id(role) for role, _, _ in b.roles],
        [scope for _, scope, _ in b.roles],
        [parse_address(address) for _, _, address in b.roles],
        [service for service, _, _ in b.policies],
        [environment for _, environment, _ in b.policies],
        [policy_input(service, environment, **policy) for service, environment, policy in b.policies],
    )


def gate_reason_sentence(code: int, detail_a: int, detail_b: int) -> tuple[str, str]:
    """(reason name, sentence) of a gate reason code and its two numbers, for StepDenied as for GateDenied."""
    from shipledger.errors import GATE_SENTENCES, gate_details, gate_sentence

    names = list(GATE_SENTENCES)
    if code < len(names):
        reason = names[code]
        try:
            return reason, gate_sentence(reason, gate_details(reason, detail_a, detail_b))
        except (KeyError, IndexError, ValueError):
            pass
    else:
        reason = {11: "rollout_in_progress", 12: "missing_attestation"}.get(code, f"reason {code}")
    # the reasons suite v2 added, until the shared gate sentences name them
    return reason, {
        "frozen_by_incident": f"deployments are frozen by {detail_a} open incident(s), the most severe of severity {detail_b}",
        "rollout_in_progress": f"deployment {detail_a} is still rolling out in this environment",
        "missing_attestation": f"a required attestation is missing (type 0x{detail_a:064x})",
    }.get(reason, f"the gate denies it ({reason}, {detail_a}, {detail_b})")


def step_sentence(error_name: str, arguments: dict) -> str | None:
    """The sentence for the ledger's refusal of a rollout step (promote, complete, rollback), None for
    other errors. The contract re-checks the gate and the canary at every step."""
    if error_name == "StepDenied":
        _, why = gate_reason_sentence(int(arguments["reason"]), int(arguments["detailA"]), int(arguments["detailB"]))
        return f"deployment {arguments['id']} cannot go on: {why}"
    if error_name == "CanaryBlocks":
        verdict = Verdict(int(arguments["verdict"])).name.lower()
        if verdict == "fail":
            return (f"deployment {arguments['id']} cannot go on: its canary verdict is fail, which blocks it for good "
                    "(roll it back, or fail it)")
        return (f"deployment {arguments['id']} cannot go on: its last canary verdict is {verdict}; "
                "it needs a later pass")
    if error_name == "RestoresRevokedArtifact":
        artifact = arguments["artifactId"]
        artifact = "0x" + bytes(artifact).hex() if isinstance(artifact, (bytes, bytearray)) else artifact
        return (f"rolling back deployment {arguments['id']} would make deployment {arguments['restoredId']} live again, "
                f"whose artifact {artifact} is revoked; a rollout in progress can be ended with `deploy fail` instead")
    return None


def _name_key(value: str) -> bytes:
    return Web3.keccak(text=value)


def _pair_key(a: bytes, b: bytes) -> bytes:
    return Web3.keccak(a + b)  # abi.encode of two bytes32 is their concatenation


def target_key(service: str, environment: str) -> bytes:
    return _pair_key(_name_key(service), _name_key(environment))


def _optional_digest(value: str) -> bytes:
    return parse_digest(value) if value else b"\0" * 32


def _commit_bytes(commit: str) -> bytes:
    commit = commit.lower().removeprefix("0x")
    if not commit:
        return b"\0" * 32
    if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        raise UsageError(f"commit {commit!r} must be a 40- or 64-digit hex SHA")
    return bytes.fromhex(commit).ljust(32, b"\0")


def _json_value(value):
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def sign_approval(
    signer: LocalAccount,
    *,
    chain_id: int,
    registry: str,
    digest: str,
    service: str,
    environment: str,
    decision: str = "approve",
    nonce: int | None = None,
    signed_at: int | None = None,
    deadline: int | None = None,
) -> SignedApproval:
    """Sign a vote offline (EIP-712); needs no RPC, only the chain id and the registry address. The
    vote names its signer and the time it was signed (now): the registry counts a signer's latest
    action, and refuses a deadline later than the policy ttl after signing (30 days when the ttl is
    0). The default deadline is 7 days."""
    check_name("service", service)
    check_name("environment", environment)
    try:
        code = Decision[decision.upper()]
    except KeyError:
        raise UsageError(f"decision {decision!r} must be approve or reject") from None
    if code is Decision.NONE:
        raise UsageError("decision must be approve or reject")
    nonce = secrets.randbits(128) if nonce is None else nonce  # unordered: any unused number
    signed_at = int(time.time()) if signed_at is None else signed_at
    deadline = signed_at + 7 * 24 * 3600 if deadline is None else deadline
    message = {
        "types": VOTE_TYPES,
        "primaryType": "Vote",
        "domain": {
            "name": "shipledger",
            "version": "2",
            "chainId": chain_id,
            "verifyingContract": Web3.to_checksum_address(registry),
        },
        "message": {
            "signer": signer.address,
            "digest": parse_digest(digest),
            "service": service,
            "environment": environment,
            "decision": int(code),
            "nonce": nonce,
            "signedAt": signed_at,
            "deadline": deadline,
        },
    }
    signed = signer.sign_message(encode_typed_data(full_message=message))
    return SignedApproval(
        signer=signer.address,
        digest=digest,
        service=service,
        environment=environment,
        decision=int(code),
        nonce=nonce,
        signed_at=signed_at,
        deadline=deadline,
        chain_id=chain_id,
        registry=Web3.to_checksum_address(registry),
        signature="0x" + bytes(signed.signature).hex(),
    )


class Ledger:
    """A connection to one deployed suite, optionally with a signer for transactions."""

    def __init__(self, w3: Web3, book: dict, signer: LocalAccount | None = None, receipt_timeout: float = 120):
        self.w3 = w3
        self.book = book
        self.chain_id = int(book["chain_id"])
        self.registry = w3.eth.contract(
            address=Web3.to_checksum_address(book["contracts"]["ReleaseRegistry"]["address"]),
            abi=artifacts.abi("ReleaseRegistry"),
        )
        self.ledger = w3.eth.contract(
            address=Web3.to_checksum_address(book["contracts"]["DeploymentLedger"]["address"]),
            abi=artifacts.abi("DeploymentLedger"),
        )
        self.governance = w3.eth.contract(
            address=Web3.to_checksum_address(book["contracts"]["Governance"]["address"]),
            abi=artifacts.abi("Governance"),
        )
        self._sender = TxSender(w3, signer, self.chain_id, receipt_timeout, fee_mode=book.get("fees")) if signer else None

    # ------------------------------------------------------------------ connecting

    rpc_timeout: float | None = None  # seconds per request, if connect() was given one
    last_receipt: TxReceipt | None = None  # of the last transaction this Ledger sent

    @classmethod
    def connect(
        cls, rpc_url: str, deployment: str | Path | dict, signer: LocalAccount | str | None = None, *,
        rpc_timeout: float | None = None, **options
    ) -> "Ledger":
        """Connect and check the address book: same chain id, code at every address. rpc_timeout:
        the most any request waits for the node, not retried (default 15 s, retried by web3)."""
        book = load_address_book(deployment)
        urls = split_urls(rpc_url) if isinstance(rpc_url, str) else list(rpc_url)
        reads = in_sync(urls, rpc_timeout or HEAD_TIMEOUT) if len(urls) > 1 else urls
        rpc_url = ",".join(urls)  # for messages
        w3 = connect(urls, rpc_timeout)
        if len(urls) > 1:
            w3.provider.reads = reads  # the writes keep every node, in the given order until the signer is known
        try:
            chain_id = w3.eth.chain_id
        except Exception as exc:  # noqa: BLE001
            raise ConnectionFailed(f"cannot reach the JSON-RPC node at {rpc_url}: {exc.__class__.__name__}") from None
        if chain_id != int(book["chain_id"]):
            raise AddressBookError(
                f"the address book is for chain {book['chain_id']} but {rpc_url} is chain {chain_id}"
            )
        for name in artifacts.SUITE:
            address = book["contracts"][name]["address"]
            if len(w3.eth.get_code(Web3.to_checksum_address(address))) == 0:
                raise AddressBookError(f"no contract code at {address} ({name}) on chain {chain_id}")
        if isinstance(signer, str):
            signer = Account.from_key(signer)
        ledger = cls(w3, book, signer, **options)
        ledger.rpc_timeout = rpc_timeout
        if len(urls) > 1 and signer is not None:
            w3.provider.writes = write_order(urls, book, ledger._organisation_name(signer.address))
        return ledger

    def _organisation_name(self, address: str) -> str | None:
        """The name of the organisation `address` is a member of (as the book's nodes[].org names
        it), None for none. Only a signer with several endpoints asks: its writes go to its own node."""
        org = self.organisation_of(address) or self.steward_organisation(address)
        if not org:
            return None
        added = self.events("OrganisationAdded", org.to_bytes(32, "big"))
        return added[-1]["name"] if added else None

    @classmethod
    def deploy_suite(
        cls, rpc_url: str, signer: LocalAccount, bootstrap: Bootstrap, out: str | Path | None = None
    ) -> "Ledger":
        """Deploy ReleaseRegistry (with the bootstrap consortium), its Governance and the
        DeploymentLedger. The signer pays and keeps no role. Writes the address book to `out`."""
        w3 = connect(rpc_url)
        try:
            chain_id = w3.eth.chain_id
        except Exception as exc:  # noqa: BLE001
            raise ConnectionFailed(f"cannot reach the JSON-RPC node at {rpc_url}: {exc.__class__.__name__}") from None
        sender = TxSender(w3, signer, chain_id)
        contracts = {}

        def deploy(name: str, *args):
            artifact = artifacts.load(name)
            factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
            receipt, raw = sender.transact(factory.constructor(*args))
            contracts[name] = {"address": raw.contractAddress, "block": receipt.block_number, "tx": receipt.tx_hash}
            return raw.contractAddress

        # The registry names its governance before that exists: the address the signer's next
        # contract creation gets. Governance's constructor checks it, so a wrong guess fails here.
        governance = get_create_address(signer.address, sender.next_nonce() + 1)
        registry = deploy("ReleaseRegistry", governance, encode_bootstrap(bootstrap))
        deploy("Governance", registry, bootstrap.organisations_needed, bootstrap.delay)
        deploy("DeploymentLedger", registry)
        book = {
            "chain_id": chain_id,
            "contracts": contracts,
            "compiler": artifacts.load("ReleaseRegistry")["compiler"],
            "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "deployer": signer.address,
        }
        if out is not None:
            out = Path(out)
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(book, indent=2) + "\n")
                tmp.replace(out)  # never leave a half-written address book
            except OSError as exc:  # the contracts exist now: say where, or they are lost
                where = ", ".join(f"{name} {c['address']}" for name, c in contracts.items())
                raise AddressBookError(f"the suite is deployed on chain {chain_id} ({where}) but its address book "
                                       f"{out} could not be written: {exc.strerror or exc}") from None
        return cls(w3, book, signer)

    @property
    def signer_address(self) -> str | None:
        return self._sender.address if self._sender else None

    def _tx(self, fn, gas: int | None = None) -> tuple[TxReceipt, object]:
        if self._sender is None:
            raise NoSigner("this needs a signer: set SHIPLEDGER_PRIVATE_KEY or pass --keystore")
        receipt, raw = self._sender.transact(fn, gas)
        self.last_receipt = receipt  # for calls that return something else (propose returns the Proposal)
        return receipt, raw

    def _events(self, raw_receipt, contract, name: str) -> list[dict]:
        # DISCARD: the receipt's other events (a rollout step's own, historyHead's) are not this one
        return [dict(e["args"]) for e in getattr(contract.events, name)().process_receipt(raw_receipt, errors=DISCARD)]

    # ------------------------------------------------------------------ consortium

    def add_member(self, address: str, approver: bool = False) -> TxReceipt:
        """As a steward: make `address` a member of the steward's organisation (and an approver)."""
        return self._tx(self.registry.functions.addMember(self._address(address), approver))[0]

    def remove_member(self, address: str) -> TxReceipt:
        """As the member's steward: remove it and every role it holds."""
        return self._tx(self.registry.functions.removeMember(self._address(address)))[0]

    def set_approver(self, address: str, approver: bool) -> TxReceipt:
        return self._tx(self.registry.functions.setApprover(self._address(address), approver))[0]

    def has_role(self, role: str, address: str, scope: str = "") -> bool:
        """Whether `address` holds `role` for `scope` (a service or attestation type), or everywhere."""
        scope_key = _name_key(check_name("scope", scope)) if scope else b"\0" * 32
        return call(self.registry.functions.hasScopedRole(role_id(role), scope_key, self._address(address)))

    def organisation_of(self, address: str) -> int:
        return call(self.registry.functions.organisationOf(self._address(address)))

    def steward_organisation(self, address: str) -> int:
        return call(self.registry.functions.stewardOrganisation(self._address(address)))

    def members(self) -> list[dict]:
        """Current members with organisation and roles, rebuilt from events."""
        orgs, members = {}, {}
        for event in self.history():
            f = event.fields
            if event.kind == "organisation-added":
                orgs[f["org"]] = f["name"]
            elif event.kind == "member-added":
                members[f["account"]] = {"address": f["account"], "org": f["org"], "organisation": orgs.get(f["org"])}
            elif event.kind == "member-removed":
                members.pop(f["account"], None)
        for member in members.values():
            member["roles"] = [r for r in ROLES if self.has_role(r, member["address"])]  # held everywhere (scope "")
        return list(members.values())

    # ------------------------------------------------------------------ governance

    def change_policy(self, service: str, environment: str, **policy) -> tuple[str, bytes]:
        """The governance change that sets a policy: (target, call data). See set_policy for the fields."""
        args = policy_input(service, environment, **policy)
        return self.registry.address, self._calldata(self.registry, "setPolicy", [service, environment, args])

    def change_org_add(self, name: str, steward: str) -> tuple[str, bytes]:
        return self.registry.address, self._calldata(
            self.registry, "addOrganisation", [check_name("organisation", name), self._address(steward)])

    def change_steward(self, org: int, steward: str) -> tuple[str, bytes]:
        return self.registry.address, self._calldata(self.registry, "setSteward", [org, self._address(steward)])

    def change_role(self, grant: bool, role: str, address: str, scope: str = "") -> tuple[str, bytes]:
        if scope:
            check_name("scope", scope)
        fn = "grantScopedRole" if grant else "revokeScopedRole"
        return self.registry.address, self._calldata(self.registry, fn, [role_id(role), scope, self._address(address)])

    def change_member_remove(self, address: str) -> tuple[str, bytes]:
        return self.registry.address, self._calldata(self.registry, "removeMember", [self._address(address)])

    def change_settings(self, organisations_needed: int, delay: int) -> tuple[str, bytes]:
        if not 1 <= organisations_needed <= 255 or not 0 <= delay < 2**32:
            raise UsageError("organisations needed must be 1..255 and the delay 0..2**32-1 seconds")
        return self.governance.address, self._calldata(self.governance, "setSettings", [organisations_needed, delay])

    @staticmethod
    def _calldata(contract, name: str, args: list) -> bytes:
        return bytes.fromhex(contract.encode_abi(name, args).removeprefix("0x"))

    def propose(self, change: tuple[str, bytes]) -> Proposal:
        """As a steward: propose a change; the steward's organisation is its first approval."""
        target, data = change
        _, raw = self._tx(self.governance.functions.propose(target, data))
        return self.proposal(self._events(raw, self.governance, "ProposalCreated")[0]["id"])

    def approve_proposal(self, proposal_id: int) -> Proposal:
        self._tx(self.governance.functions.approveProposal(proposal_id))
        return self.proposal(proposal_id)

    def execute_proposal(self, proposal_id: int) -> Proposal:
        self._tx(self.governance.functions.executeProposal(proposal_id))
        return self.proposal(proposal_id)

    def cancel_proposal(self, proposal_id: int) -> Proposal:
        self._tx(self.governance.functions.cancelProposal(proposal_id))
        return self.proposal(proposal_id)

    def proposal(self, proposal_id: int) -> Proposal:
        p = call(self.governance.functions.getProposal(proposal_id))
        target, state, weakening, _, created_at, executable_at, orgs, data = p
        organisations = tuple(o for o in range(256) if (orgs >> o) & 1)
        kind, summary = self.describe_change(target, bytes(data))
        state = ProposalState(state)
        return Proposal(
            id=proposal_id, kind=kind, state=state.name.lower(), approvals=len(organisations),
            needed=call(self.governance.functions.organisationsNeeded()), organisations=organisations,
            weakening=weakening if state in (ProposalState.SCHEDULED, ProposalState.EXECUTED) or executable_at else None,
            executable_at=executable_at, created_at=created_at, target=target, data="0x" + bytes(data).hex(),
            summary=summary,
        )

    def proposals(self, pending_only: bool = False) -> list[Proposal]:
        count = call(self.governance.functions.proposalCount())
        found = [self.proposal(i) for i in range(1, count + 1)]
        return [p for p in found if p.state in ("pending", "scheduled")] if pending_only else found

    def describe_change(self, target: str, data: bytes) -> tuple[str, dict]:
        """(kind, decoded arguments) of a governance change."""
        contract = self.governance if Web3.to_checksum_address(target) == self.governance.address else self.registry
        fn, args = contract.decode_function_input(data)
        kinds = {"setPolicy": "policy-set", "addOrganisation": "org-add", "setSteward": "steward-set",
                 "grantScopedRole": "role-grant", "revokeScopedRole": "role-revoke", "removeMember": "member-remove",
                 "setSettings": "settings"}
        return kinds.get(fn.fn_name, fn.fn_name), _json_value(dict(args))

    def governance_settings(self) -> dict:
        return {"organisations_needed": call(self.governance.functions.organisationsNeeded()),
                "delay": call(self.governance.functions.delay())}

    @staticmethod
    def _address(address: str) -> str:
        return parse_address(address)  # a mixed-case address with a wrong checksum is refused

    # ------------------------------------------------------------------ policies

    def set_policy(self, service: str, environment: str, **policy) -> Proposal:
        """As a steward: propose the policy (threshold, min_organisations, ttl, min_wait,
        prior_environment, freeze_severity, resolve_quorum, required_attestations); the steward's
        organisation approves it. It executes once K organisations approve (after the delay if it weakens)."""
        return self.propose(self.change_policy(service, environment, **policy))

    def policy(self, service: str, environment: str) -> Policy | None:
        from shipledger.errors import ContractRevert

        try:
            p = call(self.registry.functions.getPolicy(check_name("service", service), check_name("environment", environment)))
        except ContractRevert as exc:
            if exc.error_name == "PolicyNotFound":
                return None
            raise
        return Policy.from_call(service, environment, p)

    def policy_names(self) -> tuple[set[str], set[str]]:
        """(services, environments) named by any policy ever set, prior environments included: the
        names the gate's answers depend on. One eth_getLogs of the PolicySet events (policies change
        rarely, so this stays small however long the history is)."""
        event = self.registry.events.PolicySet()
        try:
            logs = self._get_logs({"address": self.registry.address, "topics": [event.topic]})
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        services, environments = set(), set()
        for log in logs:
            args = event.process_log(log)["args"]
            services.add(args["service"])
            environments.update(name for name in (args["environment"], args["priorEnvironment"]) if name)
        return services, environments

    # ------------------------------------------------------------------ artifacts

    @staticmethod
    def validate_spec(spec: ArtifactSpec) -> tuple:
        """Check every field of an artifact (types included: specs come from JSON too); return it as
        the contract's ArtifactInput tuple."""
        for key in ("digest", "service", "version", "commit", "provenance", "sbom", "uri", "kind"):
            value = getattr(spec, key)
            if not isinstance(value, str):
                raise UsageError(f"{key} {value!r} must be a string")
            try:
                value.encode()
            except UnicodeEncodeError:
                raise UsageError(f"{key} {value!r} is not valid text (it holds a lone surrogate)") from None
        if len(spec.uri.encode()) > MAX_URI_BYTES:
            raise UsageError(f"uri is {len(spec.uri.encode())} bytes; at most {MAX_URI_BYTES} are allowed")
        at = spec.committed_at
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**64:
            raise UsageError(f"committed_at {at!r} must be a whole number of unix seconds from 0 to 2**64 - 1")
        check_name("service", spec.service)
        check_name("version", spec.version)
        if spec.kind not in ARTIFACT_KINDS:
            raise UsageError(f"kind {spec.kind!r} must be one of {', '.join(ARTIFACT_KINDS)}")
        if not 0 <= int(spec.committed_at) < 2**64:
            raise UsageError(f"commit time {spec.committed_at} must be unix seconds from 0 (0: unknown)")
        return (
            parse_digest(spec.digest),
            spec.service,
            spec.version,
            int(ArtifactKind[spec.kind.upper()]),
            _commit_bytes(spec.commit),
            at,
            _optional_digest(spec.provenance),
            _optional_digest(spec.sbom),
            spec.uri,
        )

    def register(self, spec: ArtifactSpec) -> TxReceipt | None:
        """Register one artifact; None (and no transaction) if this exact record is already there."""
        item = self.validate_spec(spec)
        # "pending" also sees our own earlier attempt still waiting in the node's pool (a retry after a crash)
        if "0x" + call(self.registry.functions.recordOf(spec.service, spec.version), block="pending").hex() == record_hash(item):
            return None  # a retried registration: this exact record is already on the ledger
        return self._tx(self.registry.functions.register(item))[0]

    def batch_registration(self, specs: list[ArtifactSpec], labels: list[str] | None = None) -> RegistrationBatch:
        """Validate every artifact and check the batch against itself and the ledger, sending nothing:
        what is registered identically is left out; a version or digest twice in the batch raises
        UsageError, one that conflicts with the ledger its Denied error, each named by its label
        (default "artifact N"). Then .send() registers the rest; see RegistrationBatch."""
        if self._sender is None:
            raise NoSigner("registering needs a signer")
        labels = list(labels) if labels is not None else [f"artifact {n}" for n in range(1, len(specs) + 1)]
        items = []
        for spec, label in zip(specs, labels, strict=True):
            try:
                items.append(self.validate_spec(spec))
            except UsageError as exc:
                raise UsageError(f"{label}: {exc}") from None
        url = getattr(self.w3.provider, "endpoint_uri", None)
        if not url:
            raise UsageError("batch registration needs an HTTP JSON-RPC endpoint")
        urls = list(getattr(self.w3.provider, "reads", [str(url)]))  # several nodes: the batch fails over too
        return RegistrationBatch(self._sender, self.registry.address, urls, items, labels, self._sender.receipt_timeout)

    def register_many(
        self, specs: list[ArtifactSpec], progress: Callable[[int], None] | None = None, labels: list[str] | None = None
    ) -> BatchResult:
        """Register many artifacts in registerBatch transactions (sized by gas and bytes, each estimated),
        a few in flight at a time. Only what is missing is sent, so running the same batch again after
        an interruption finishes it, and once everything is there sends nothing."""
        return self.batch_registration(specs, labels).send(progress)

    def revoke(self, digest: str, service: str, reason: str) -> TxReceipt:
        check_name("service", service)
        return self._tx(self.registry.functions.revoke(parse_digest(digest), service, reason))[0]

    def artifact(self, digest: str, service: str) -> Artifact | None:
        from shipledger.errors import ContractRevert

        try:
            a = call(self.registry.functions.getArtifact(parse_digest(digest), check_name("service", service)))
        except ContractRevert as exc:
            if exc.error_name == "ArtifactNotFound":
                return None
            raise
        return Artifact(digest=digest, service=service, registrant=a[0], registered_at=a[1], revoked=a[2],
                        kind=ArtifactKind(a[3]).name.lower())

    def digest_of(self, service: str, version: str) -> str | None:
        """The digest registered for (service, version), from its ArtifactRegistered event (the
        registry keeps only the hash of the whole record per version); None if none."""
        keys = ["0x" + _name_key(check_name(label, name)).hex() for label, name in (("service", service), ("version", version))]
        found = self.events("ArtifactRegistered", None, *keys)
        return format_digest(found[-1]["digest"]) if found else None

    def record_of(self, service: str, version: str) -> str | None:
        """The record hash registered for (service, version), None if none."""
        raw = call(self.registry.functions.recordOf(check_name("service", service), check_name("version", version)))
        return None if raw == b"\0" * 32 else "0x" + raw.hex()

    def attest(self, digest: str, service: str, attestation_type: str, document_digest: str, uri: str = "") -> TxReceipt:
        """As an ATTESTOR of the type: record that a document (its sha256) attests the artifact."""
        if len(uri.encode()) > MAX_URI_BYTES:
            raise UsageError(f"uri is {len(uri.encode())} bytes; at most {MAX_URI_BYTES} are allowed")
        return self._tx(self.registry.functions.attest(
            parse_digest(digest), check_name("service", service), check_name("attestation type", attestation_type),
            parse_digest(document_digest), uri))[0]

    def attestation_of(self, digest: str, service: str, attestation_type: str) -> str | None:
        raw = call(self.registry.functions.attestationOf(
            parse_digest(digest), check_name("service", service), check_name("attestation type", attestation_type)))
        return None if raw == b"\0" * 32 else format_digest(raw)

    # ------------------------------------------------------------------ votes

    def _vote_args(self, digest: str, service: str, environment: str) -> tuple:
        return parse_digest(digest), check_name("service", service), check_name("environment", environment)

    def approve(self, digest: str, service: str, environment: str, comment: str = "") -> TxReceipt | None:
        """Approve; None (and no transaction) if this approver's approval already stands."""
        return self._cast(Decision.APPROVE, digest, service, environment, comment)

    def reject(self, digest: str, service: str, environment: str, reason: str) -> TxReceipt | None:
        """Veto until withdrawn; None if this approver's rejection already stands."""
        return self._cast(Decision.REJECT, digest, service, environment, reason)

    def _cast(self, decision: Decision, digest: str, service: str, environment: str, note: str):
        args = self._vote_args(digest, service, environment)
        if self._sender:
            # "pending" also sees our own earlier attempt still waiting in the node's pool (a retry after a crash)
            standing, _ = call(self.registry.functions.voteOf(*args, self._sender.address), block="pending")
            if standing == decision:
                return None  # a retried vote: already recorded once
        fn = self.registry.functions.approve if decision is Decision.APPROVE else self.registry.functions.reject
        return self._tx(fn(*args, note))[0]

    def withdraw(self, digest: str, service: str, environment: str) -> TxReceipt:
        return self._tx(self.registry.functions.withdraw(*self._vote_args(digest, service, environment)))[0]

    def sign_approval(self, digest: str, service: str, environment: str, decision: str = "approve", **kw) -> SignedApproval:
        if self._sender is None:
            raise NoSigner("signing needs a key")
        return sign_approval(
            self._sender.account, chain_id=self.chain_id, registry=self.registry.address,
            digest=digest, service=service, environment=environment, decision=decision, **kw,
        )

    @classmethod
    def validate_approval(cls, a: SignedApproval) -> tuple:
        """Check every field of an offline vote (it comes from a file anyone may have edited); return it as
        the contract's SignedVote tuple."""
        for name in ("digest", "service", "environment", "registry", "signature"):
            if not isinstance(getattr(a, name), str):
                raise UsageError(f"{name} {getattr(a, name)!r} must be text")
        for name, top in (("decision", 2**8), ("nonce", 2**256), ("signed_at", 2**64), ("deadline", 2**64),
                          ("chain_id", 2**256)):
            value = getattr(a, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
                raise UsageError(f"{name} {value!r} must be a whole number from 0 to {top - 1}")
        if a.decision not in (Decision.APPROVE, Decision.REJECT):
            raise UsageError(f"decision {a.decision!r} must be {int(Decision.APPROVE)} (approve) or {int(Decision.REJECT)} (reject)")
        cls._address(a.registry)
        try:
            signature = bytes.fromhex(a.signature.removeprefix("0x"))
        except ValueError:
            raise UsageError(f"signature {a.signature[:20]!r}... is not hex") from None
        if not signature:
            raise UsageError("the signature is empty")
        return (cls._address(a.signer), parse_digest(a.digest), check_name("service", a.service),
                check_name("environment", a.environment), a.decision, a.nonce, a.signed_at, a.deadline, signature)

    def submit_approvals(self, approvals: list[SignedApproval]) -> tuple[TxReceipt, list[dict]]:
        """Submit offline-signed votes in one voteBySig transaction (any account may submit). Returns
        the receipt and the votes the registry skipped: {"index", "signer", "nonce", "reason"}."""
        votes = [self.validate_approval(a) for a in approvals]
        for a in approvals:
            if a.chain_id != self.chain_id or Web3.to_checksum_address(a.registry) != self.registry.address:
                raise UsageError(
                    f"the vote by {a.signer} was signed for chain {a.chain_id} / {a.registry}, "
                    f"not this ledger (chain {self.chain_id} / {self.registry.address})"
                )
        fn = self.registry.functions.voteBySig(votes)
        # The estimate runs on the latest block, where a vote signed after that block's time is skipped
        # as signed_in_future, the cheap path; mined in a later block it is recorded. Leave room for that.
        head_time = self.w3.eth.get_block("latest")["timestamp"]
        later = sum(1 for a in approvals if a.signed_at > head_time)
        gas = self._sender.estimate(fn) + later * SIGNED_VOTE_GAS if later and self._sender is not None else None
        receipt, raw = self._tx(fn, gas)
        skipped = [{"index": e["index"], "signer": e["signer"], "nonce": e["nonce"], "reason": SKIP_REASONS[e["reason"]]}
                   for e in self._events(raw, self.registry, "SignedVoteSkipped")]
        return receipt, skipped

    def vote_of(self, digest: str, service: str, environment: str, approver: str) -> Vote:
        decision, cast_at = call(self.registry.functions.voteOf(*self._vote_args(digest, service, environment), self._address(approver)))
        return Vote(approver=self._address(approver), organisation=self.organisation_of(approver),
                    decision=Decision(decision).name.lower(), cast_at=cast_at)

    def votes(self, digest: str, service: str, environment: str) -> list[Vote]:
        """Standing votes of every approver that ever held a slot (once each: slots are freed and
        reused, approvers re-admitted) on one release. A revoked or re-admitted approver's old votes
        do not stand: voteOf answers none for them."""
        approvers = list(dict.fromkeys(e["account"] for e in self.events("ApproverSlotAssigned")))
        return [v for v in (self.vote_of(digest, service, environment, a) for a in approvers) if v.decision != "none"]

    # ------------------------------------------------------------------ gate

    def gate(self, digest: str, service: str, environment: str) -> GateResult:
        """The ledger's answer now. ChainStalled (never an answer) when the newest block is older than
        the address book's max_block_age: a stalled chain's nodes still answer, from a stale head."""
        data = encode_gate_call(parse_digest(digest), check_name("service", service), check_name("environment", environment))
        limit = max_block_age(self.book)
        try:
            if limit is not None:
                check_block_age(self.w3.eth.get_block("latest")["timestamp"], limit)
            answer = self.w3.eth.call({"to": self.ledger.address, "data": data})
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        result = decode_gate_result(bytes(answer))
        return replace(result, details=self._named_details(service, environment, result.details))

    def _named_details(self, service: str, environment: str, details: dict) -> dict:
        """Gate details with the prior environment's or the attestation type's name for its hash."""
        if "environment_key" in details:
            return {**details, "environment": self.prior_environment_name(service, environment, details["environment_key"])}
        if "attestation_key" in details:
            return {**details, "attestation_type": self.attestation_type_name(service, environment, details["attestation_key"])}
        return details

    def _policy_name(self, service: str, environment: str, key: str, which: str) -> str:
        def get_logs(query: dict) -> list:
            return self._get_logs({k: v for k, v in query.items() if k not in ("fromBlock", "toBlock")})

        try:
            return policy_name_of_key(get_logs, self.registry.address, self._start_block(), service, environment, key, which)
        except Exception:  # noqa: BLE001 - a name for a message: without it the hash is still right
            return key

    def prior_environment_name(self, service: str, environment: str, key: str) -> str:
        """The name of the prior environment the policy of (service, environment) requires, from its
        PolicySet events (the policy and the gate hold only its hash `key`); `key` when not found."""
        return self._policy_name(service, environment, key, "prior")

    def attestation_type_name(self, service: str, environment: str, key: str) -> str:
        """The name of an attestation type the policy of (service, environment) requires (by hash
        `key`), from its PolicySet events; `key` when not found."""
        return self._policy_name(service, environment, key, "attestation")

    # ------------------------------------------------------------------ deployments

    def start_deployment(self, digest: str, service: str, environment: str, percent: int = 100) -> int:
        return self.start_deployment_tx(digest, service, environment, percent)[0]

    def start_deployment_tx(self, digest: str, service: str, environment: str, percent: int = 100) -> tuple[int, TxReceipt]:
        """Start a rollout if the gate allows it; (deployment id, receipt)."""
        if not 1 <= percent <= 100:
            raise UsageError(f"percent {percent} must be 1 to 100")
        try:
            receipt, raw = self._tx(self.ledger.functions.start(*self._vote_args(digest, service, environment), percent))
        except Denied as exc:
            details = exc.arguments.get("details") or {}
            if exc.error_name != "GateDenied" or not {"environment_key", "attestation_key"} & set(details):
                raise
            named = self._named_details(service, environment, details)
            plain = {k: exc.arguments[k] for k in ("reason", "detailA", "detailB")}
            raise revert_error("GateDenied", plain, prior_environment=named.get("environment"),
                               attestation_type=named.get("attestation_type")) from None
        return self._events(raw, self.ledger, "DeploymentStarted")[0]["id"], receipt

    def promote(self, deployment_id: int, percent: int) -> TxReceipt:
        """Raise the rollout; the ledger re-checks the gate and the canary first (StepDenied, CanaryBlocks)."""
        if not 1 <= percent <= 100:
            raise UsageError(f"percent {percent} must be 1 to 100")
        return self._step(self.ledger.functions.promote(deployment_id, percent))

    def record_analysis(
        self, deployment_id: int, score: float, verdict: str, report_digest: str = "", report_uri: str = "", judge: str = ""
    ) -> TxReceipt:
        if not 0 <= score <= 100:
            raise UsageError(f"score {score} must be 0 to 100")
        try:
            code = Verdict[verdict.upper()]
        except KeyError:
            raise UsageError(f"verdict {verdict!r} must be pass, marginal or fail") from None
        fn = self.ledger.functions.recordAnalysis(
            deployment_id, round(score * 100), int(code), _optional_digest(report_digest), report_uri, judge
        )
        return self._tx(fn)[0]

    def complete(self, deployment_id: int) -> TxReceipt:
        """Complete a rollout at 100%; re-checked like promote."""
        return self._step(self.ledger.functions.complete(deployment_id))

    def fail(self, deployment_id: int, reason: str) -> TxReceipt:
        return self._tx(self.ledger.functions.fail(deployment_id, reason))[0]

    def rollback(self, deployment_id: int, reason: str) -> int:
        """Roll back; returns the id of the deployment that is live again (0 for none)."""
        return self.rollback_tx(deployment_id, reason)[0]

    def rollback_tx(self, deployment_id: int, reason: str) -> tuple[int, TxReceipt]:
        """Roll back; (the id of the deployment live again, 0 for none; receipt). RestoresRevokedArtifact
        when that deployment's artifact is revoked: `fail` ends an in-progress rollout instead."""
        receipt, raw = self._step_tx(self.ledger.functions.rollback(deployment_id, reason))
        return self._events(raw, self.ledger, "DeploymentRolledBack")[0]["restored"], receipt

    def _step(self, fn) -> TxReceipt:
        return self._step_tx(fn)[0]

    def _step_tx(self, fn):
        """Send a rollout step; the ledger's refusals of a step get a sentence naming why."""
        try:
            return self._tx(fn)
        except Denied as exc:
            sentence = step_sentence(exc.error_name, exc.arguments)
            if sentence is None:
                raise
            raise type(exc)(exc.arguments, sentence) from None

    def deployment(self, deployment_id: int) -> Deployment:
        return Deployment.from_call(deployment_id, call(self.ledger.functions.getDeployment(deployment_id)))

    def target_state(self, service: str, environment: str) -> TargetState:
        live, active = call(self.ledger.functions.targetState(check_name("service", service), check_name("environment", environment)))
        return TargetState(service, environment, live, active)

    # ------------------------------------------------------------------ incidents

    def open_incident(
        self, service: str, environment: str, severity: int, title: str,
        suspects: Iterable[int] = (), details_digest: str = "", details_uri: str = "",
    ) -> int:
        return self.open_incident_tx(service, environment, severity, title, suspects, details_digest, details_uri)[0]

    def open_incident_tx(
        self, service: str, environment: str, severity: int, title: str,
        suspects: Iterable[int] = (), details_digest: str = "", details_uri: str = "",
    ) -> tuple[int, TxReceipt]:
        """Open an incident (RESPONDER); (incident id, receipt)."""
        check_name("service", service)
        check_name("environment", environment)
        if not 1 <= severity <= 4:
            raise UsageError(f"severity {severity} must be 1 (most severe) to 4")
        if not title.strip():
            raise UsageError("an incident needs a title")
        incident = (service, environment, severity, list(suspects), title, _optional_digest(details_digest), details_uri)
        receipt, raw = self._tx(self.ledger.functions.openIncident(incident))
        return self._events(raw, self.ledger, "IncidentOpened")[0]["id"], receipt

    def acknowledge(self, incident_id: int) -> TxReceipt:
        return self._tx(self.ledger.functions.acknowledge(incident_id))[0]

    def mitigate(self, incident_id: int, rollback_id: int = 0) -> TxReceipt:
        """Mark an incident mitigated (from open or acknowledged), optionally naming the rollback of
        the incident's own target that mitigated it."""
        if rollback_id:
            rolled_back = self.deployment(rollback_id)  # an unknown id: UnknownDeployment (bad input), not RollbackNotFound
        try:
            return self._tx(self.ledger.functions.mitigate(incident_id, rollback_id))[0]
        except Denied as exc:
            if exc.error_name != "RollbackNotFound":
                raise
            incident = self.incident(incident_id)
            why = (f"it is {rolled_back.status.replace('_', ' ')}, not rolled back" if rolled_back.status != "rolled_back"
                   else "it is a deployment of another service or environment than the incident's")
            raise type(exc)(exc.arguments, f"deployment {rollback_id} cannot mitigate incident {incident_id}: {why} "
                                           f"(incident target {incident.target})") from None

    def resolve(self, incident_id: int, postmortem_digest: str = "", postmortem_uri: str = "") -> Resolution:
        """Resolve as this responder's organisation. An incident that freezes its target needs
        responders of the policy's resolveQuorum organisations: until the last of them the incident
        stays open (Resolution.resolved False, and how many organisations have resolved it)."""
        receipt, raw = self._tx(self.ledger.functions.resolve(incident_id, _optional_digest(postmortem_digest), postmortem_uri))
        (approved,) = self._events(raw, self.ledger, "IncidentResolveApproved")
        resolved = bool(self._events(raw, self.ledger, "IncidentResolved"))
        return Resolution(incident_id=incident_id, resolved=resolved, organisations=approved["organisations"],
                          needed=approved["needed"], receipt=receipt)

    def attach_postmortem(self, incident_id: int, digest: str, uri: str = "") -> TxReceipt:
        """Attach (or replace) an incident's postmortem, at any time: its sha256 and where it lives."""
        if len(uri.encode()) > MAX_URI_BYTES:
            raise UsageError(f"uri is {len(uri.encode())} bytes; at most {MAX_URI_BYTES} are allowed")
        return self._tx(self.ledger.functions.attachPostmortem(incident_id, parse_digest(digest), uri))[0]

    def incident(self, incident_id: int) -> Incident:
        return Incident.from_call(incident_id, call(self.ledger.functions.getIncident(incident_id)))

    def open_incident_counts(self, service: str, environment: str) -> dict[int, int]:
        """Open (unresolved) incidents of the target by severity: {1: n, 2: n, 3: n, 4: n}."""
        counts = call(self.ledger.functions.openIncidentCounts(check_name("service", service),
                                                               check_name("environment", environment)))
        return {severity: int(n) for severity, n in enumerate(counts, start=1)}

    def open_incidents(self, service: str, environment: str) -> list[int]:
        """Ids of the incidents of (service, environment) not resolved, from the IncidentOpened and
        IncidentResolved events (the ledger keeps only counts)."""
        target = "0x" + target_key(check_name("service", service), check_name("environment", environment)).hex()
        opened = []
        for e in self._logs(["IncidentOpened", "IncidentResolved"]):
            if e.kind == "incident-opened" and "0x" + target_key(e.fields["service"], e.fields["environment"]).hex() == target:
                opened.append(e.fields["id"])
            elif e.kind == "incident-resolved" and e.fields["id"] in opened:
                opened.remove(e.fields["id"])
        return opened

    # ------------------------------------------------------------------ history

    def _event_abis(self, names: Iterable[str] | None = None) -> dict[bytes, tuple[object, dict]]:
        table = {}
        # history() reads the registry and the ledger; events() may name a Governance event too
        contracts = (self.registry, self.ledger) if names is None else (self.registry, self.ledger, self.governance)
        for contract in contracts:
            for item in contract.abi:
                if item["type"] == "event" and (names is None or item["name"] in names):
                    signature = f"{item['name']}({','.join(canonical_type(i) for i in item['inputs'])})"
                    table.setdefault(Web3.keccak(text=signature), (contract, item))  # the registry first (RoleGranted)
        return table

    def _start_block(self) -> int:
        """The block the suite was deployed in (the address book's), where its logs begin."""
        return min(int(c.get("block", 0)) for c in self.book["contracts"].values())

    def _get_logs(self, query: dict, start: int | None = None) -> list:
        """eth_getLogs of `query` (address, topics) from `start` (default: the suite's first block) to
        the head, in ranges of LOG_RANGE blocks: consortium nodes refuse wider ones (Besu: 5,000 by
        default). Every log read of the SDK goes through here."""
        start = self._start_block() if start is None else start
        logs = []
        for low, high in log_ranges(start, self.w3.eth.block_number):
            logs += self.w3.eth.get_logs({**query, "fromBlock": low, "toBlock": high})
        return logs

    def _logs(self, names: Iterable[str] | None = None) -> list[HistoryEvent]:
        table = self._event_abis(names)
        try:
            logs = self._get_logs({"address": [self.registry.address, self.ledger.address], "topics": [list(table)]})
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        timestamps: dict[int, int] = {}
        events = []
        for log in logs:
            contract, abi_item = table[bytes(log["topics"][0])]
            decoded = get_event_data(self.w3.codec, abi_item, log)
            block = log["blockNumber"]
            if block not in timestamps:
                timestamps[block] = self.w3.eth.get_block(block)["timestamp"]
            events.append(HistoryEvent(
                kind=EVENT_KINDS.get(abi_item["name"], abi_item["name"]),
                block_number=block,
                tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                log_index=log["logIndex"],
                timestamp=timestamps[block],
                service="",
                environment="",
                fields=_json_value(dict(decoded["args"])),
            ))
        return events

    def events(self, name: str, *topics) -> list[dict]:
        """Decoded `name` events of the suite whose indexed arguments match `topics` (32-byte values
        after topic 0; None matches anything), each with its block_number. The range is read in
        chunks of LOG_RANGE blocks, since consortium nodes refuse larger ones (Besu: 5,000)."""
        ((topic0, (contract, abi_item)),) = self._event_abis([name]).items()
        suite_name = {self.registry.address: "ReleaseRegistry", self.ledger.address: "DeploymentLedger",
                      self.governance.address: "Governance"}[contract.address]
        try:
            logs = self._get_logs({"address": contract.address, "topics": [topic0, *topics]},
                                  int(self.book["contracts"][suite_name].get("block", 0)))
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        return [dict(get_event_data(self.w3.codec, abi_item, log)["args"], block_number=log["blockNumber"]) for log in logs]

    def history(self, service: str | None = None, environment: str | None = None) -> list[HistoryEvent]:
        """Every event of the suite in chain order, with service and environment names filled in
        (events indexed by target or id take them from the deployment or incident they belong to)."""
        names_by_target: dict[str, tuple[str, str]] = {}
        out = []
        for event in self._logs():
            f = event.fields
            svc = f.get("service", "")
            env = f.get("environment", "")
            if event.kind in ("deployed", "incident-opened"):
                target = "0x" + target_key(svc, env).hex()
                names_by_target[target] = (svc, env)
            elif "target" in f:
                svc, env = names_by_target.get(f["target"], ("", ""))
            event = HistoryEvent(**{**event.__dict__, "service": svc, "environment": env})
            if (service is None or svc == service) and (environment is None or env == environment):
                out.append(event)
        return out

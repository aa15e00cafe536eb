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
from web3 import Web3
from web3._utils.events import get_event_data

from shipledger._internal import artifacts
from shipledger._internal.batch import RegistrationBatch
from shipledger._internal.book import load_address_book
from shipledger._internal.chain import TxSender, call, connect, raise_decoded
from shipledger._internal.revert import canonical_type
from shipledger._internal.rpc import LOG_RANGE, log_ranges  # noqa: F401 - LOG_RANGE was defined here
from shipledger._internal.gatecall import decode_gate_result, encode_gate_call, prior_environment_name as _prior_name
from shipledger._internal.names import check_name, format_digest, parse_address, parse_digest
from shipledger.errors import AddressBookError, ConnectionFailed, Denied, NoSigner, UsageError, revert_error
from shipledger.models import (
    EVENT_KINDS,
    Artifact,
    ArtifactSpec,
    BatchResult,
    Decision,
    Deployment,
    GateResult,
    HistoryEvent,
    Incident,
    Policy,
    SignedApproval,
    TargetState,
    TxReceipt,
    Verdict,
    Vote,
)

ROLES = ("ADMIN", "REGISTRAR", "APPROVER", "DEPLOYER", "RESPONDER")
MAX_URI_BYTES = 2048  # longer is not a portable URL; and one artifact must stay small next to a transaction
VOTE_TYPES = {
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
}


def role_id(role: str) -> bytes:
    role = role.upper().removesuffix("_ROLE")
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return b"\0" * 32 if role == "ADMIN" else Web3.keccak(text=f"{role}_ROLE")


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
    deadline: int | None = None,
) -> SignedApproval:
    """Sign a vote offline (EIP-712); needs no RPC, only the chain id and the registry address."""
    check_name("service", service)
    check_name("environment", environment)
    try:
        code = Decision[decision.upper()]
    except KeyError:
        raise UsageError(f"decision {decision!r} must be approve or reject") from None
    if code is Decision.NONE:
        raise UsageError("decision must be approve or reject")
    nonce = secrets.randbits(128) if nonce is None else nonce  # unordered: any unused number
    deadline = int(time.time()) + 7 * 24 * 3600 if deadline is None else deadline
    message = {
        "types": VOTE_TYPES,
        "primaryType": "Vote",
        "domain": {
            "name": "shipledger",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": Web3.to_checksum_address(registry),
        },
        "message": {
            "digest": parse_digest(digest),
            "service": service,
            "environment": environment,
            "decision": int(code),
            "nonce": nonce,
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
        self._sender = TxSender(w3, signer, self.chain_id, receipt_timeout) if signer else None

    # ------------------------------------------------------------------ connecting

    rpc_timeout: float | None = None  # seconds per request, if connect() was given one

    @classmethod
    def connect(
        cls, rpc_url: str, deployment: str | Path | dict, signer: LocalAccount | str | None = None, *,
        rpc_timeout: float | None = None, **options
    ) -> "Ledger":
        """Connect and check the address book: same chain id, code at every address. rpc_timeout:
        the most any request waits for the node, not retried (default 15 s, retried by web3)."""
        book = load_address_book(deployment)
        w3 = connect(rpc_url, rpc_timeout)
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
        return ledger

    @classmethod
    def deploy_suite(cls, rpc_url: str, signer: LocalAccount, out: str | Path | None = None) -> "Ledger":
        """Deploy ReleaseRegistry and DeploymentLedger; the signer becomes ADMIN. Writes the book to `out`."""
        w3 = connect(rpc_url)
        try:
            chain_id = w3.eth.chain_id
        except Exception as exc:  # noqa: BLE001
            raise ConnectionFailed(f"cannot reach the JSON-RPC node at {rpc_url}: {exc.__class__.__name__}") from None
        sender = TxSender(w3, signer, chain_id)
        contracts = {}
        constructor_args = {"ReleaseRegistry": [signer.address]}
        for name in artifacts.SUITE:
            artifact = artifacts.load(name)
            factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
            args = constructor_args.get(name) or [contracts["ReleaseRegistry"]["address"]]
            receipt, raw = sender.transact(factory.constructor(*args))
            contracts[name] = {"address": raw.contractAddress, "block": receipt.block_number, "tx": receipt.tx_hash}
        book = {
            "chain_id": chain_id,
            "contracts": contracts,
            "compiler": artifacts.load("ReleaseRegistry")["compiler"],
            "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "admin": signer.address,
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

    def _tx(self, fn) -> tuple[TxReceipt, object]:
        if self._sender is None:
            raise NoSigner("this needs a signer: set SHIPLEDGER_PRIVATE_KEY or pass --keystore")
        return self._sender.transact(fn)

    def _events(self, raw_receipt, contract, name: str) -> list[dict]:
        return [dict(e["args"]) for e in getattr(contract.events, name)().process_receipt(raw_receipt)]

    # ------------------------------------------------------------------ consortium

    def add_organisation(self, name: str) -> int:
        check_name("organisation", name)
        _, raw = self._tx(self.registry.functions.addOrganisation(name))
        return self._events(raw, self.registry, "OrganisationAdded")[0]["org"]

    def add_member(self, org: int, address: str, roles: Iterable[str] = ()) -> list[TxReceipt]:
        address = self._address(address)
        receipts = [self._tx(self.registry.functions.addMember(org, address))[0]]
        return receipts + [self.grant_role(role, address) for role in roles]

    def remove_member(self, address: str) -> TxReceipt:
        return self._tx(self.registry.functions.removeMember(self._address(address)))[0]

    def grant_role(self, role: str, address: str) -> TxReceipt:
        return self._tx(self.registry.functions.grantRole(role_id(role), self._address(address)))[0]

    def revoke_role(self, role: str, address: str) -> TxReceipt:
        return self._tx(self.registry.functions.revokeRole(role_id(role), self._address(address)))[0]

    def has_role(self, role: str, address: str) -> bool:
        return call(self.registry.functions.hasRole(role_id(role), self._address(address)))

    def organisation_of(self, address: str) -> int:
        return call(self.registry.functions.organisationOf(self._address(address)))

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
            member["roles"] = [r for r in ROLES if self.has_role(r, member["address"])]
        return list(members.values())

    @staticmethod
    def _address(address: str) -> str:
        return parse_address(address)  # a mixed-case address with a wrong checksum is refused

    # ------------------------------------------------------------------ policies

    def set_policy(
        self,
        service: str,
        environment: str,
        *,
        threshold: int,
        min_organisations: int = 0,
        ttl: int = 0,
        min_wait: int = 0,
        prior_environment: str = "",
        freeze_severity: int = 0,
    ) -> TxReceipt:
        check_name("service", service)
        check_name("environment", environment)
        if prior_environment:
            check_name("prior environment", prior_environment)
        for label, value, top in (("threshold", threshold, 255), ("min-orgs", min_organisations, 255),
                                  ("ttl", ttl, 2**32 - 1), ("wait", min_wait, 2**32 - 1),
                                  ("freeze severity", freeze_severity, 4)):
            if not 0 <= value <= top:
                raise UsageError(f"{label} {value} must be between 0 and {top}")
        policy = (threshold, min_organisations, ttl, min_wait, freeze_severity, prior_environment)
        return self._tx(self.registry.functions.setPolicy(service, environment, policy))[0]

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
        for key in ("digest", "service", "version", "commit", "provenance", "sbom", "uri"):
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
        if not 0 <= int(spec.committed_at) < 2**64:
            raise UsageError(f"commit time {spec.committed_at} must be unix seconds from 0 (0: unknown)")
        return (
            parse_digest(spec.digest),
            spec.service,
            spec.version,
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
        if call(self.registry.functions.digestOf(spec.service, spec.version), block="pending") == item[0]:
            return None  # a retried registration: already on the ledger
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
        return RegistrationBatch(self._sender, self.registry.address, str(url), items, labels, self._sender.receipt_timeout)

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
        return Artifact(digest=digest, service=service, registrant=a[0], registered_at=a[1], revoked=a[2])

    def digest_of(self, service: str, version: str) -> str | None:
        raw = call(self.registry.functions.digestOf(check_name("service", service), check_name("version", version)))
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
        for name in ("decision", "nonce", "deadline", "chain_id"):
            value = getattr(a, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
                raise UsageError(f"{name} {value!r} must be a whole number from 0 to 2**256-1")
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
                check_name("environment", a.environment), a.decision, a.nonce, a.deadline, signature)

    def submit_approvals(self, approvals: list[SignedApproval]) -> TxReceipt:
        """Submit offline-signed votes in one voteBySig transaction (any account may submit)."""
        votes = [self.validate_approval(a) for a in approvals]
        for a in approvals:
            if a.chain_id != self.chain_id or Web3.to_checksum_address(a.registry) != self.registry.address:
                raise UsageError(
                    f"the vote by {a.signer} was signed for chain {a.chain_id} / {a.registry}, "
                    f"not this ledger (chain {self.chain_id} / {self.registry.address})"
                )
        return self._tx(self.registry.functions.voteBySig(votes))[0]

    def vote_of(self, digest: str, service: str, environment: str, approver: str) -> Vote:
        decision, cast_at = call(self.registry.functions.voteOf(*self._vote_args(digest, service, environment), self._address(approver)))
        return Vote(approver=self._address(approver), organisation=self.organisation_of(approver),
                    decision=Decision(decision).name.lower(), cast_at=cast_at)

    def votes(self, digest: str, service: str, environment: str) -> list[Vote]:
        """Standing votes of every approver (slot holders) on one release."""
        approvers = [e["account"] for e in self.events("ApproverSlotAssigned")]
        return [v for v in (self.vote_of(digest, service, environment, a) for a in approvers) if v.decision != "none"]

    # ------------------------------------------------------------------ gate

    def gate(self, digest: str, service: str, environment: str) -> GateResult:
        data = encode_gate_call(parse_digest(digest), check_name("service", service), check_name("environment", environment))
        try:
            answer = self.w3.eth.call({"to": self.ledger.address, "data": data})
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        result = decode_gate_result(bytes(answer))
        if "environment_key" in result.details:
            name = self.prior_environment_name(service, environment, result.details["environment_key"])
            result = replace(result, details={**result.details, "environment": name})
        return result

    def prior_environment_name(self, service: str, environment: str, key: str) -> str:
        """The name of the prior environment the policy of (service, environment) requires, from its
        PolicySet events (the policy and the gate hold only its hash `key`); `key` when not found."""
        def get_logs(query: dict) -> list:
            return self._get_logs({k: v for k, v in query.items() if k not in ("fromBlock", "toBlock")})

        try:
            return _prior_name(get_logs, self.registry.address, self._start_block(), service, environment, key)
        except Exception:  # noqa: BLE001 - a name for a message: without it the hash is still right
            return key

    # ------------------------------------------------------------------ deployments

    def start_deployment(self, digest: str, service: str, environment: str, percent: int = 100) -> int:
        if not 1 <= percent <= 100:
            raise UsageError(f"percent {percent} must be 1 to 100")
        try:
            _, raw = self._tx(self.ledger.functions.start(*self._vote_args(digest, service, environment), percent))
        except Denied as exc:
            details = exc.arguments.get("details") or {}
            if exc.error_name != "GateDenied" or "environment_key" not in details:
                raise
            name = self.prior_environment_name(service, environment, details["environment_key"])
            plain = {k: exc.arguments[k] for k in ("reason", "detailA", "detailB")}
            raise revert_error("GateDenied", plain, prior_environment=name) from None
        return self._events(raw, self.ledger, "DeploymentStarted")[0]["id"]

    def promote(self, deployment_id: int, percent: int) -> TxReceipt:
        if not 1 <= percent <= 100:
            raise UsageError(f"percent {percent} must be 1 to 100")
        return self._tx(self.ledger.functions.promote(deployment_id, percent))[0]

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
        return self._tx(self.ledger.functions.complete(deployment_id))[0]

    def fail(self, deployment_id: int, reason: str) -> TxReceipt:
        return self._tx(self.ledger.functions.fail(deployment_id, reason))[0]

    def rollback(self, deployment_id: int, reason: str) -> int:
        """Roll back; returns the id of the deployment that is live again (0 for none)."""
        _, raw = self._tx(self.ledger.functions.rollback(deployment_id, reason))
        return self._events(raw, self.ledger, "DeploymentRolledBack")[0]["restored"]

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
        check_name("service", service)
        check_name("environment", environment)
        if not 1 <= severity <= 4:
            raise UsageError(f"severity {severity} must be 1 (most severe) to 4")
        if not title.strip():
            raise UsageError("an incident needs a title")
        incident = (service, environment, severity, list(suspects), title, _optional_digest(details_digest), details_uri)
        _, raw = self._tx(self.ledger.functions.openIncident(incident))
        return self._events(raw, self.ledger, "IncidentOpened")[0]["id"]

    def acknowledge(self, incident_id: int) -> TxReceipt:
        return self._tx(self.ledger.functions.acknowledge(incident_id))[0]

    def mitigate(self, incident_id: int, rollback_id: int = 0) -> TxReceipt:
        if rollback_id:
            self.deployment(rollback_id)  # an unknown id: UnknownDeployment (bad input), not RollbackNotFound
        return self._tx(self.ledger.functions.mitigate(incident_id, rollback_id))[0]

    def resolve(self, incident_id: int, postmortem_digest: str = "", postmortem_uri: str = "") -> TxReceipt:
        return self._tx(self.ledger.functions.resolve(incident_id, _optional_digest(postmortem_digest), postmortem_uri))[0]

    def incident(self, incident_id: int) -> Incident:
        return Incident.from_call(incident_id, call(self.ledger.functions.getIncident(incident_id)))

    def open_incidents(self, service: str, environment: str) -> list[int]:
        return list(call(self.ledger.functions.openIncidents(check_name("service", service), check_name("environment", environment))))

    # ------------------------------------------------------------------ history

    def _event_abis(self, names: Iterable[str] | None = None) -> dict[bytes, tuple[object, dict]]:
        table = {}
        for contract in (self.registry, self.ledger):
            for item in contract.abi:
                if item["type"] == "event" and (names is None or item["name"] in names):
                    signature = f"{item['name']}({','.join(canonical_type(i) for i in item['inputs'])})"
                    table[Web3.keccak(text=signature)] = (contract, item)
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
        suite_name = "ReleaseRegistry" if contract is self.registry else "DeploymentLedger"
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

"""Everything in the server that knows the shape of a vote or of the gate's answer: the gate cached
per block, the tally of a release from the index, what waits for an approver, and the relay of
signed votes (suite v2: a vote names its signer and when it was signed; the registry records what it
can of a batch and says why it skipped the rest).

The gate is asked with the same encoding as `shipledger gate` (shipledger/_internal/gatecall.py), at
the block the server last saw, so one answer per (block, artifact, target) is cached; any failure to
get and decode an answer raises, and the API turns that into 503: never an allowed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

from shipledger._internal.gatecall import decode_gate_answer, encode_gate_call
from shipledger._internal.names import check_name, format_digest, parse_digest
from shipledger.errors import ConnectionFailed, ShipledgerError, UsageError

# Gate reasons a vote can change: a release held by one of these is waiting for approvers.
VOTE_REASONS = frozenset({"not_enough_approvals", "not_enough_organisations", "approvals_expired"})
DECISIONS = {1: "approved", 2: "rejected"}  # the registry's Decision enum (0: none)
ALREADY_SUBMITTED = "already_submitted"  # a skip reason of the relay's own: this process sent the vote before
PENDING_PER_TARGET = 20  # newest never-deployed artifacts of a target looked at for the Inbox
MAX_VOTES_PER_RELAY = 64
CACHE_BLOCKS = 2  # gate answers of this many recent blocks are kept


@dataclass(frozen=True)
class GateAnswer:
    allowed: bool
    reason: str
    details: dict
    block: int

    def to_json(self) -> dict:
        return asdict(self)


class GateCache:
    """gate(digest, service, environment) at a block, each answer asked once. `rpc(calls)` sends a
    JSON-RPC batch and returns the results (raising ConnectionFailed on any error)."""

    def __init__(self, rpc, ledger: str, name_prior):
        self.rpc, self.ledger, self.name_prior = rpc, ledger, name_prior
        self._answers: dict[tuple, GateAnswer] = {}
        self._lock = threading.Lock()

    def cached(self, block: int, digest: str, service: str, environment: str) -> GateAnswer | None:
        return self._answers.get((block, digest, service, environment))

    def ask(self, block: int, digest: str, service: str, environment: str) -> GateAnswer:
        """The answer at `block` (the cache's, or the chain's). digest: sha256:<hex>, names checked."""
        key = (block, digest, service, environment)
        answer = self._answers.get(key)
        if answer is None:
            [answer] = self.ask_many(block, [(digest, service, environment)])
        return answer

    def ask_many(self, block: int, targets: list[tuple[str, str, str]]) -> list[GateAnswer]:
        missing = [t for t in dict.fromkeys(targets) if (block, *t) not in self._answers]
        if missing:
            calls = [("eth_call", [{"to": self.ledger, "data": "0x" + encode_gate_call(parse_digest(d), s, e).hex()}, hex(block)])
                     for d, s, e in missing]
            results = self.rpc(calls)
            fresh = {}
            for target, raw in zip(missing, results):
                if not isinstance(raw, str):
                    raise ConnectionFailed("the gate gave no answer")
                allowed, reason, details = decode_gate_answer(bytes.fromhex(raw.removeprefix("0x")))
                if "environment_key" in details:  # denied for a prior environment: name it, not its hash
                    details = {**details, "environment": self.name_prior(target[1], target[2], details["environment_key"])}
                if "attestation_key" in details:  # and a missing attestation by its type's name
                    details = {**details, "attestation_type": self.name_prior(target[1], target[2], details["attestation_key"],
                                                                              "attestation")}
                fresh[(block, *target)] = GateAnswer(allowed, reason, details, block)
            with self._lock:
                if self._answers and min(k[0] for k in self._answers) < block - CACHE_BLOCKS:
                    self._answers = {k: v for k, v in self._answers.items() if k[0] > block - CACHE_BLOCKS}
                self._answers.update(fresh)
        return [self._answers[(block, *t)] for t in targets]


def gate_target(digest: str, service: str, environment: str) -> tuple[str, str, str]:
    """The gate's inputs checked at the edge: (sha256:<hex>, service, environment); UsageError otherwise."""
    return format_digest(parse_digest(digest)), check_name("service", service), check_name("environment", environment)


# ---------------------------------------------------------------------- tallies and the Inbox, from the index

def policies(db) -> dict[tuple[str, str], dict]:
    """The policy in force per (service, environment), from the newest PolicySet of each."""
    rows = db.execute(
        "SELECT service, environment, new_policy_threshold AS threshold, new_policy_min_organisations AS min_organisations,"
        " new_policy_ttl AS ttl, new_policy_version AS version FROM policy_set ORDER BY block_number, log_index").fetchall()
    return {(r["service"], r["environment"]): dict(r) for r in rows}


def votes(db, digest_hex: str, service: str, environment: str) -> list[dict]:
    """Standing votes on one release, the latest action of each approver winning: approver, org,
    decision (approved|rejected), block, time, signed_at (when the vote was decided: the ttl runs from
    it), policy version, by signature. A freed vote slot (the approver was removed) drops its votes:
    a re-admitted approver starts with none, as on chain."""
    rows = db.execute(
        "SELECT 'approved' AS decision, approver, org, block_number, log_index, timestamp, policy_version, by_signature,"
        " signed_at FROM artifact_approved WHERE digest = ? AND service = ? AND environment = ?"
        " UNION ALL SELECT 'rejected', approver, org, block_number, log_index, timestamp, policy_version, by_signature,"
        " signed_at FROM artifact_rejected WHERE digest = ? AND service = ? AND environment = ?"
        " UNION ALL SELECT 'withdrawn', approver, 0, block_number, log_index, timestamp, 0, 0, 0"
        " FROM vote_withdrawn WHERE digest = ? AND service = ? AND environment = ?"
        " UNION ALL SELECT 'freed', account, 0, block_number, log_index, timestamp, 0, 0, 0 FROM approver_slot_freed"
        " ORDER BY 4, 5",
        (digest_hex, service, environment) * 3).fetchall()
    standing: dict[str, dict] = {}
    for r in rows:
        if r["decision"] in ("withdrawn", "freed"):
            standing.pop(r["approver"], None)
        else:
            standing[r["approver"]] = {"approver": r["approver"], "org": r["org"], "decision": r["decision"],
                                       "block": r["block_number"], "time": r["timestamp"],
                                       "signed_at": int(r["signed_at"] or r["timestamp"]),
                                       "policy_version": r["policy_version"], "by_signature": bool(r["by_signature"])}
    return list(standing.values())


def tally(db, digest_hex: str, service: str, environment: str, policy: dict | None, now: int) -> dict:
    """The votes against the policy, as the index holds them (the gate's answer is what decides):
    approvals under the current policy version and not expired, their organisations, vetoes."""
    standing = votes(db, digest_hex, service, environment)
    version, ttl = (policy or {}).get("version"), (policy or {}).get("ttl") or 0
    counted = [v for v in standing if v["decision"] == "approved" and v["policy_version"] == version
               and (not ttl or v["signed_at"] + ttl >= now)]
    return {
        "votes": standing,
        "approvals": len(counted),
        "organisations": len({v["org"] for v in counted}),
        "rejections": sum(v["decision"] == "rejected" for v in standing),
        "threshold": (policy or {}).get("threshold"),
        "min_organisations": (policy or {}).get("min_organisations"),
        "ttl": ttl,
        "expires_at": min((v["signed_at"] + ttl for v in counted), default=None) if ttl else None,
    }


def approvers(db) -> set[str]:
    """Accounts that hold an approver slot (ApproverSlotAssigned), as the index knows them."""
    return {r[0] for r in db.execute("SELECT account FROM approver_slot_assigned")}


def waiting_releases(db, gates: GateCache, block: int, now: int) -> list[dict]:
    """Every release held by a vote reason at `block`: the newest never-deployed artifacts of each
    target with a policy, each with its registration, tally and gate answer, oldest first."""
    from shipledger.compliance.trace import _commit, _sha

    targets = policies(db)
    candidates = []
    for (service, environment), policy in targets.items():
        rows = db.execute(
            "SELECT r.* FROM artifact_registered AS r WHERE r.service = ? AND NOT EXISTS (SELECT 1 FROM artifact_revoked AS v"
            " WHERE v.digest = r.digest) AND NOT EXISTS (SELECT 1 FROM deployment_started AS d WHERE d.digest = r.digest"
            " AND d.service = r.service AND d.environment = ?) ORDER BY r.block_number DESC, r.log_index DESC LIMIT ?",
            (service, environment, PENDING_PER_TARGET)).fetchall()
        candidates += [(row, environment, policy) for row in rows]
    answers = gates.ask_many(block, [(format_digest(bytes.fromhex(r["digest"][2:])), r["service"], e) for r, e, _ in candidates])
    waiting = []
    for (row, environment, policy), answer in zip(candidates, answers):
        if answer.reason not in VOTE_REASONS:
            continue
        waiting.append({
            "digest": format_digest(bytes.fromhex(row["digest"][2:])), "service": row["service"], "environment": environment,
            "version": row["version"], "kind": artifact_kind(row["kind"]),
            "commit": _commit(row["commit"]), "committed_at": row["committed_at"], "registrant": row["registrant"],
            "provenance": _sha(row["provenance"]), "sbom": _sha(row["sbom"]), "uri": row["uri"],
            "registered_at": row["timestamp"], "registered_block": row["block_number"],
            "tally": tally(db, row["digest"], row["service"], environment, policy, now),
            "gate": answer.to_json(),
        })
    waiting.sort(key=lambda w: (w["registered_block"], w["service"], w["environment"]))
    return waiting


def artifact_kind(value) -> str:
    """The registry's ArtifactKind (build, image, config, infrastructure) as the index stores it."""
    from shipledger.client import ARTIFACT_KINDS

    return ARTIFACT_KINDS[int(value)] if value is not None and 0 <= int(value) < len(ARTIFACT_KINDS) else str(value)


def pending_for(waiting: list[dict], approver: str) -> list[dict]:
    """The releases of `waiting` on which `approver` has no standing vote."""
    return [w for w in waiting if all(v["approver"] != approver for v in w["tally"]["votes"])]


# ---------------------------------------------------------------------- the relay

def parse_signed_votes(body) -> list:
    """The JSON `shipledger approve --sign-only` writes, one object or a list, as SignedApprovals,
    every field checked; UsageError naming the first bad one."""
    from shipledger.client import Ledger
    from shipledger.models import SignedApproval

    items = body if isinstance(body, list) else [body]
    if not items:
        raise UsageError("the body holds no signed vote")
    if len(items) > MAX_VOTES_PER_RELAY:
        raise UsageError(f"at most {MAX_VOTES_PER_RELAY} signed votes per request, not {len(items)}")
    votes_ = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise UsageError(f"signed vote {number} is not a JSON object")
        try:
            vote = SignedApproval(**item)
            Ledger.validate_approval(vote)
        except TypeError as exc:
            raise UsageError(f"signed vote {number} is not a signed approval: {exc}") from None
        except UsageError as exc:
            raise UsageError(f"signed vote {number} is not a valid signed approval: {exc}") from None
        votes_.append(vote)
    return votes_


class Relay:
    """Submits signed votes with the relayer's account, one submission at a time. The registry records
    what it can of a batch and skips the rest with a reason (bad_signature, expired, nonce_used, ...:
    client.SKIP_REASONS); the answer names the transaction, what it recorded and what it skipped and
    why. A vote whose nonce the chain has used, or that this relay has already sent, is not sent again:
    a client that retries after a lost answer gets the first transaction back, never a second one. A
    vote is the same one when its signature is too: a Safe's vote skipped for a combined signature
    that lacks an owner is sent again with the complete one (its nonce is still unused)."""

    def __init__(self, ledger, reader):
        self.ledger, self.reader = ledger, reader  # a Ledger with the relayer's signer; a Reader
        self._lock = threading.Lock()
        # (signer, nonce, signature) -> (tx hash, skip reason or None)
        self._sent: dict[tuple[str, int, str], tuple[str, str | None]] = {}

    @property
    def address(self) -> str:
        return self.ledger.signer_address

    def submit(self, signed: list) -> dict:
        for vote in signed:
            if vote.chain_id != self.ledger.chain_id or vote.registry.lower() != self.ledger.registry.address.lower():
                raise UsageError(f"the vote by {vote.signer} was signed for chain {vote.chain_id} / {vote.registry}, not this "
                                 f"ledger (chain {self.ledger.chain_id} / {self.ledger.registry.address})")
        with self._lock:
            used = self.reader.calls([("ReleaseRegistry", "nonceUsed", [v.signer, v.nonce]) for v in signed])
            fresh, skipped = [], []
            for vote, is_used in zip(signed, used):
                key = _sent_key(vote)
                if key in self._sent:  # the first answer's reason stands: recorded, or why the chain skipped it
                    tx_hash, reason = self._sent[key]
                    skipped.append(_skip(vote, reason or ALREADY_SUBMITTED, tx_hash))
                elif is_used:
                    skipped.append(_skip(vote, "nonce_used", None))
                elif key[:2] not in {_sent_key(v)[:2] for v in fresh}:  # one vote per signer and nonce a transaction
                    fresh.append(vote)
            if not fresh:
                return {"tx": None, "submitted": [], "skipped": skipped}
            receipt, refused = self.ledger.submit_approvals(fresh)  # a bad vote is skipped on chain, not reverted
            reasons = {int(r["index"]): r["reason"] for r in refused}
            for index, vote in enumerate(fresh):
                self._sent[_sent_key(vote)] = (receipt.tx_hash, reasons.get(index))
        recorded = [v for i, v in enumerate(fresh) if i not in reasons]
        skipped += [_skip(fresh[i], reason, receipt.tx_hash) for i, reason in sorted(reasons.items())]
        return {"tx": asdict(receipt), "skipped": skipped,
                "submitted": [{"signer": v.signer, "nonce": str(v.nonce), "digest": v.digest, "service": v.service,
                               "environment": v.environment, "decision": DECISIONS.get(v.decision, str(v.decision)),
                               "signed_at": v.signed_at} for v in recorded]}


def _sent_key(vote) -> tuple[str, int, str]:
    return vote.signer.lower(), vote.nonce, vote.signature.lower().removeprefix("0x")


def _skip(vote, reason: str, tx_hash: str | None) -> dict:
    return {"signer": vote.signer, "nonce": str(vote.nonce), "digest": vote.digest, "reason": reason, "tx_hash": tx_hash}


def relay_outcome(exc: BaseException | None) -> str:
    """The label of a relay submission in /metrics."""
    if exc is None:
        return "submitted"
    if isinstance(exc, UsageError):
        return "invalid"
    if isinstance(exc, ShipledgerError) and getattr(exc, "error_name", None):
        return "reverted"
    return "error"


def now() -> int:
    return int(time.time())

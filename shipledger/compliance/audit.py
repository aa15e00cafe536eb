"""`shipledger audit`: re-check the recorded history against the rules, independently of the contracts.

Nothing here calls the contracts' gate. The rules of ReleaseRegistry.checkRelease and
DeploymentLedger._gate/start/promote/complete/rollback are re-implemented in Python and replayed
over the index's events in chain order, so a suite whose code skips a rule is caught by what it
let through. Two more checks tie the answer to the chain: the runtime code at each suite address
must be the committed build (immutable parts masked), and the index must agree with the chain
(block hashes and logs of a sample of blocks, or of all of them with `full`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

from eth_utils import keccak

from shipledger._internal import artifacts
from shipledger._internal.logs import NotASuiteEvent, decode_log
from shipledger._internal.rpc import TIMEOUT as RPC_TIMEOUT, Rpc
from shipledger.errors import gate_sentence
from shipledger.models import DeploymentStatus, GateReason

APPROVER_ROLE = "0x" + keccak(text="APPROVER_ROLE").hex()
DEPLOYER_ROLE = "0x" + keccak(text="DEPLOYER_ROLE").hex()
RESPONDER_ROLE = "0x" + keccak(text="RESPONDER_ROLE").hex()
APPROVE, REJECT = 1, 2  # Decision
IN_PROGRESS, COMPLETED, FAILED, ROLLED_BACK = (
    DeploymentStatus.IN_PROGRESS, DeploymentStatus.COMPLETED, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK,
)
RESOLVED = 4  # IncidentStatus
DEFAULT_SAMPLE = 32  # blocks re-fetched from the chain when not --full
RPC_BATCH = 100  # JSON-RPC calls per batch request
LOG_RANGE = 2_000  # blocks per eth_getLogs in a --full scan


@dataclass(frozen=True)
class Finding:
    """One rule the history breaks. `rule` is a stable id such as "gate.not_enough_approvals"."""

    rule: str
    message: str
    block: int | None = None
    tx_hash: str | None = None
    deployment: int | None = None
    address: str | None = None
    service: str = ""
    environment: str = ""


@dataclass(frozen=True)
class AuditReport:
    findings: list[Finding]
    summary: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.findings


def audit(index, source, *, service: str | None = None, environment: str | None = None,
          full: bool = False, sample: int = DEFAULT_SAMPLE) -> AuditReport:
    """Every check; `index` is a synced shipledger.compliance.index.Index, `source` the node and suite to check
    against (an index Endpoint or a connected Ledger)."""
    from shipledger.compliance.index import Endpoint

    endpoint = Endpoint.of(source)
    replay = RuleReplay()
    replay.run(index.db, service)
    findings = [f for f in replay.findings
                if (service is None or f.service == service) and (environment is None or f.environment == environment)]
    url = endpoint.url
    suite = {"ReleaseRegistry": endpoint.registry, "DeploymentLedger": endpoint.ledger}
    findings += check_code(url, suite, timeout=endpoint.timeout)
    index_findings, blocks_checked = check_index(index.db, url, suite, full=full, sample=sample, timeout=endpoint.timeout)
    findings += index_findings
    summary = {
        **replay.counts,
        "contracts_checked": len(suite),
        "blocks_checked": blocks_checked,
        "full": full,
        "findings": len(findings),
        "by_rule": dict(Counter(f.rule for f in findings)),
    }
    return AuditReport(findings=findings, summary=summary)


# ====================================================================== the rules, replayed


@dataclass
class _Deployment:
    id: int
    service: str
    environment: str
    digest: str
    status: int
    percent: int
    live_before: int  # the deployment live in the target when this one started (what a rollback restores)


@dataclass
class _Target:
    live: int = 0
    active: int = 0
    open_incidents: list = field(default_factory=list)  # in EnumerableSet order (see _set_remove)


class RuleReplay:
    """The suite's state rebuilt event by event, with every deployment step checked as it comes."""

    def __init__(self):
        self.findings: list[Finding] = []
        self.counts = Counter(events=0, starts=0, promotions=0, completions=0, rollbacks=0)
        self.roles: set[tuple[str, str]] = set()  # (role id, account) held now
        self.member_org: dict[str, int] = {}
        self.slot: dict[str, int] = {}  # approver vote slot: the contract's tally walks votes in slot order
        self.artifacts: dict[tuple[str, str], dict] = {}  # (service, digest) -> registered_at, revoked
        self.policies: dict[tuple[str, str], dict] = {}  # (service, environment) -> Policy as emitted
        self.votes: dict[tuple[str, str, str], dict[str, tuple[int, int]]] = {}  # release -> approver -> (decision, cast_at)
        self.env_names: dict[str, str] = {}  # keccak of an environment name -> the name
        self.deployments: dict[int, _Deployment] = {}
        self.targets: dict[tuple[str, str], _Target] = {}
        self.completed: set[tuple[str, str, str]] = set()  # (service, digest, environment key): DeploymentLedger._completed
        self.incidents: dict[int, dict] = {}

    def run(self, db, service: str | None = None) -> None:
        sql = "SELECT block_number, log_index, tx_hash, timestamp, event, args FROM events"
        params: tuple = ()
        if service is not None:
            # Consortium events (roles, members) carry no service; everything else of S does.
            sql += " WHERE service IN ('', ?)"
            params = (service,)
        for row in db.execute(sql + " ORDER BY block_number, log_index", params):
            handler = getattr(self, "on_" + row["event"], None)
            self.counts["events"] += 1
            if handler:
                self._row = row
                handler(json.loads(row["args"]), row["timestamp"])

    def _find(self, rule: str, message: str, *, deployment: int | None = None, service: str = "", environment: str = ""):
        self.findings.append(Finding(
            rule=rule, message=message, block=self._row["block_number"], tx_hash=self._row["tx_hash"],
            deployment=deployment, service=service, environment=environment,
        ))

    def _target(self, service: str, environment: str) -> _Target:
        return self.targets.setdefault((service, environment), _Target())

    def _env_key(self, environment: str) -> str:
        key = "0x" + keccak(text=environment).hex()
        self.env_names[key] = environment
        return key

    # ---------------------------------------------------------------- consortium and artifacts

    def on_MemberAdded(self, a, _ts):
        self.member_org[a["account"]] = a["org"]

    def on_MemberRemoved(self, a, _ts):
        self.member_org[a["account"]] = 0

    def on_ApproverSlotAssigned(self, a, _ts):
        self.slot[a["account"]] = a["index"]

    def on_RoleGranted(self, a, _ts):
        self.roles.add((a["role"].lower(), a["account"]))

    def on_RoleRevoked(self, a, _ts):
        self.roles.discard((a["role"].lower(), a["account"]))

    def on_ArtifactRegistered(self, a, ts):
        self.artifacts[(a["service"], a["digest"])] = {"registered_at": ts, "revoked": False}

    def on_ArtifactRevoked(self, a, _ts):
        artifact = self.artifacts.get((a["service"], a["digest"]))
        if artifact is not None:
            artifact["revoked"] = True

    def on_PolicySet(self, a, _ts):
        self._env_key(a["environment"])
        if a.get("priorEnvironment"):
            self._env_key(a["priorEnvironment"])
        self.policies[(a["service"], a["environment"])] = a["newPolicy"]

    def on_ArtifactApproved(self, a, ts):
        # A vote overwrites the approver's earlier vote on the same release, whatever the policy
        # version then: the registry stores one entry per approver slot and ignores versions.
        self.votes.setdefault((a["service"], a["digest"], a["environment"]), {})[a["approver"]] = (APPROVE, ts)

    def on_ArtifactRejected(self, a, ts):
        self.votes.setdefault((a["service"], a["digest"], a["environment"]), {})[a["approver"]] = (REJECT, ts)

    def on_VoteWithdrawn(self, a, _ts):
        self.votes.get((a["service"], a["digest"], a["environment"]), {}).pop(a["approver"], None)

    # ---------------------------------------------------------------- the gate

    def gate(self, service: str, digest: str, environment: str, now: int) -> tuple[GateReason, dict]:
        """What ReleaseRegistry.checkRelease followed by DeploymentLedger._gate answer at time `now`,
        from the replayed state: the same checks in the same order, the first failing one reported."""
        artifact = self.artifacts.get((service, digest))
        if artifact is None:
            return GateReason.UNKNOWN_ARTIFACT, {}
        if artifact["revoked"]:
            return GateReason.ARTIFACT_REVOKED, {}
        policy = self.policies.get((service, environment))
        if policy is None:
            return GateReason.NO_POLICY, {}

        # ReleaseRegistry._tally: only votes of accounts holding APPROVER now count (a removed
        # approver's votes come back if the role is granted again); the first rejector in slot order
        # vetoes; approvals expire against the ttl of the policy in force now, whichever policy
        # version they were cast under; organisations are the approvers' organisations now.
        ttl = policy["ttl"]
        valid = expired = 0
        organisations: set[int] = set()
        rejector = None
        votes = self.votes.get((service, digest, environment), {})
        for approver in sorted(votes, key=lambda account: self.slot.get(account, 1 << 16)):
            decision, cast_at = votes[approver]
            if (APPROVER_ROLE, approver) not in self.roles:
                continue
            if decision == REJECT:
                rejector = rejector or approver
            elif ttl == 0 or cast_at + ttl >= now:
                valid += 1
                organisations.add(self.member_org.get(approver, 0))
            else:
                expired += 1
        if rejector is not None:
            return GateReason.REJECTED_BY, {"approver": rejector}
        ready_at = artifact["registered_at"] + policy["minWait"]
        if now < ready_at:
            return GateReason.WAITING_PERIOD, {"ready_at": ready_at, "now": now}
        if valid < policy["threshold"]:
            reason = GateReason.APPROVALS_EXPIRED if valid + expired >= policy["threshold"] else GateReason.NOT_ENOUGH_APPROVALS
            return reason, {"have": valid, "need": policy["threshold"]}
        if len(organisations) < policy["minOrganisations"]:
            return GateReason.NOT_ENOUGH_ORGANISATIONS, {"have": len(organisations), "need": policy["minOrganisations"]}

        prior = policy["priorEnvironment"].lower()
        if int(prior, 16) != 0 and (service, digest, prior) not in self.completed:
            return GateReason.MISSING_PRIOR_ENVIRONMENT, {"environment": self.env_names.get(prior, prior)}
        if policy["freezeSeverity"] != 0:
            for incident_id in self._target(service, environment).open_incidents:
                severity = self.incidents[incident_id]["severity"]
                if severity <= policy["freezeSeverity"]:
                    return GateReason.FROZEN_BY_INCIDENT, {"incident": incident_id, "severity": severity}
        return GateReason.ALLOWED, {}

    # ---------------------------------------------------------------- deployments

    def _check_role(self, role: str, account: str, what: str, **where):
        if (role, account) not in self.roles:
            name = {DEPLOYER_ROLE: "DEPLOYER", RESPONDER_ROLE: "RESPONDER"}[role]
            self._find("role.missing", f"{what} was sent by {account}, which did not hold {name}", **where)

    @staticmethod
    def _where(deployment: _Deployment) -> dict:
        return {"deployment": deployment.id, "service": deployment.service, "environment": deployment.environment}

    def _in_progress(self, deployment_id: int, action: str) -> _Deployment | None:
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            self._find("deployment.unknown", f"deployment {deployment_id} was {action} but was never started",
                       deployment=deployment_id)
            return None
        if deployment.status != IN_PROGRESS:
            status = DeploymentStatus(deployment.status).name.lower().replace("_", " ")
            self._find("deployment.state", f"deployment {deployment_id} was {action} while {status}",
                       **self._where(deployment))
        return deployment

    def on_DeploymentStarted(self, a, ts):
        self.counts["starts"] += 1
        service, environment, digest, deployment_id = a["service"], a["environment"], a["digest"], a["id"]
        where = {"deployment": deployment_id, "service": service, "environment": environment}
        self._env_key(environment)
        target = self._target(service, environment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the start of deployment {deployment_id}", **where)
        if not 1 <= a["percent"] <= 100:
            self._find("start.invalid_percent", f"deployment {deployment_id} started at {a['percent']}%", **where)
        if target.active:
            self._find("start.rollout_in_progress",
                       f"deployment {deployment_id} started while deployment {target.active} was still rolling out"
                       f" in {service}/{environment}", **where)
        reason, details = self.gate(service, digest, environment, ts)
        if reason is not GateReason.ALLOWED:
            name = reason.name.lower()
            self._find(f"gate.{name}",
                       f"deployment {deployment_id} of {service} sha256:{digest[2:14]}.. to {environment} was not"
                       f" allowed at block {self._row['block_number']}: {gate_sentence(name, details)}", **where)
        self.deployments[deployment_id] = _Deployment(
            id=deployment_id, service=service, environment=environment, digest=digest,
            status=IN_PROGRESS, percent=a["percent"], live_before=target.live,
        )
        target.active = deployment_id

    def on_DeploymentPromoted(self, a, _ts):
        self.counts["promotions"] += 1
        deployment = self._in_progress(a["id"], "promoted")
        if deployment is None:
            return
        where = self._where(deployment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the promotion of deployment {deployment.id}", **where)
        if not deployment.percent < a["toPercent"] <= 100:
            self._find("promotion.not_increasing",
                       f"deployment {deployment.id} was promoted from {deployment.percent}% to {a['toPercent']}%", **where)
        deployment.percent = a["toPercent"]

    def on_CanaryAnalysisRecorded(self, a, _ts):
        deployment = self._in_progress(a["id"], "given a canary verdict")
        if deployment is not None:
            self._check_role(DEPLOYER_ROLE, a["recorder"], f"the canary verdict on deployment {deployment.id}",
                             **self._where(deployment))

    def on_DeploymentCompleted(self, a, _ts):
        self.counts["completions"] += 1
        deployment = self._in_progress(a["id"], "completed")
        if deployment is None:
            return
        where = self._where(deployment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the completion of deployment {deployment.id}", **where)
        if deployment.percent != 100:
            self._find("complete.below_100", f"deployment {deployment.id} completed at {deployment.percent}%", **where)
        artifact = self.artifacts.get((deployment.service, deployment.digest))
        if artifact is not None and artifact["revoked"]:
            self._find("complete.revoked",
                       f"deployment {deployment.id} completed although its artifact sha256:{deployment.digest[2:14]}.."
                       " had been revoked", **where)
        target = self._target(deployment.service, deployment.environment)
        target.live, target.active = deployment.id, 0
        deployment.status = COMPLETED
        self.completed.add((deployment.service, deployment.digest, self._env_key(deployment.environment)))

    def on_DeploymentFailed(self, a, _ts):
        deployment = self._in_progress(a["id"], "marked failed")
        if deployment is None:
            return
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the failure of deployment {deployment.id}",
                         **self._where(deployment))
        deployment.status = FAILED
        self._target(deployment.service, deployment.environment).active = 0

    def on_DeploymentRolledBack(self, a, _ts):
        self.counts["rollbacks"] += 1
        deployment_id, restored = a["id"], a["restored"]
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            self._find("deployment.unknown", f"deployment {deployment_id} was rolled back but was never started",
                       deployment=deployment_id)
            return
        where = self._where(deployment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the rollback of deployment {deployment_id}", **where)
        target = self._target(deployment.service, deployment.environment)
        if deployment.status == IN_PROGRESS:
            expected = target.live  # an unfinished rollout: what was live stays live
            target.active = 0
        elif deployment.status == COMPLETED:
            expected = deployment.live_before
            if target.live != deployment_id:
                self._find("rollback.not_live",
                           f"deployment {deployment_id} was rolled back while deployment {target.live} was live", **where)
            if target.active:
                self._find("rollback.rollout_in_progress",
                           f"deployment {deployment_id} was rolled back while deployment {target.active} was rolling out",
                           **where)
            target.live = restored  # what the chain did; checked against `expected` below
            same_artifact = restored in self.deployments and self.deployments[restored].digest == deployment.digest
            if not same_artifact:
                self.completed.discard((deployment.service, deployment.digest, self._env_key(deployment.environment)))
        else:
            status = DeploymentStatus(deployment.status).name.lower().replace("_", " ")
            self._find("deployment.state", f"deployment {deployment_id} was rolled back while {status}", **where)
            expected = restored
        if restored != expected:
            self._find("rollback.wrong_restore",
                       f"the rollback of deployment {deployment_id} made deployment {restored} live, but deployment"
                       f" {expected} was live before it", **where)
        deployment.status = ROLLED_BACK

    # ---------------------------------------------------------------- incidents

    def on_IncidentOpened(self, a, _ts):
        self._check_role(RESPONDER_ROLE, a["responder"], f"the opening of incident {a['id']}",
                         service=a["service"], environment=a["environment"])
        self.incidents[a["id"]] = {"target": (a["service"], a["environment"]), "severity": a["severity"], "status": 1}
        self._target(a["service"], a["environment"]).open_incidents.append(a["id"])

    def on_IncidentResolved(self, a, _ts):
        incident = self.incidents.get(a["id"])
        if incident is None or incident["status"] == RESOLVED:
            return
        incident["status"] = RESOLVED
        _set_remove(self._target(*incident["target"]).open_incidents, a["id"])


def _set_remove(values: list, value) -> None:
    """OpenZeppelin EnumerableSet.remove: the last element takes the removed one's place. The gate
    names the first freezing incident in this order, so the order is mirrored."""
    position = values.index(value)
    last = values.pop()
    if last != value:
        values[position] = last


# ====================================================================== the code at the suite addresses


def _masked(code: bytes, references: dict) -> bytes:
    """The code with every immutable's bytes zeroed: they hold constructor-time values."""
    code = bytearray(code)
    for spans in references.values():
        for span in spans:
            start, length = span["start"], span["length"]
            code[start:start + length] = bytes(min(length, max(0, len(code) - start)))
    return bytes(code)


def check_code(url: str, suite: dict[str, str], *, timeout: float = RPC_TIMEOUT) -> list[Finding]:
    """The runtime code at each address equals the committed build's deployedBytecode."""
    codes = Rpc(url, timeout=timeout).fetch("eth_getCode", [[address, "latest"] for address in suite.values()], RPC_BATCH)
    findings = []
    for (name, address), code in zip(suite.items(), codes):
        artifact = artifacts.load(name)
        expected = bytes.fromhex(artifact["deployedBytecode"].removeprefix("0x"))
        actual = bytes.fromhex(code.removeprefix("0x"))
        references = artifact.get("immutableReferences", {})
        if not actual:
            findings.append(Finding("code.missing", f"there is no code at {address} ({name})", address=address))
        elif len(actual) != len(expected) or _masked(actual, references) != _masked(expected, references):
            findings.append(Finding(
                "code.mismatch",
                f"the code at {address} is not the committed {name} build ({len(actual)} bytes on chain,"
                f" {len(expected)} built): the rules it enforces are not the rules in this repository",
                address=address,
            ))
    return findings


# ====================================================================== the index against the chain


def _canonical(value):
    """Compare numbers as text: the index may hold large integers as decimal strings."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _log_key(block: int, log_index: int, block_hash: str, tx_hash: str, address: str, event: str, args: dict) -> tuple:
    return (block, log_index, block_hash.lower(), tx_hash.lower(), address.lower(), event,
            json.dumps(_canonical(args), sort_keys=True))


def check_index(db, url: str, suite: dict[str, str], *, full: bool = False,
                sample: int = DEFAULT_SAMPLE, timeout: float = RPC_TIMEOUT) -> tuple[list[Finding], int]:
    """Block hashes and logs of a sample of indexed blocks (all with `full`) against the chain.
    With `full` the whole indexed range is re-fetched, so a log the index lacks is found too."""
    rpc = Rpc(url, timeout=timeout)
    stored_hashes = {r[0]: r[1] for r in db.execute("SELECT number, hash FROM blocks")}
    if not stored_hashes:
        return [], 0
    numbers = sorted(stored_hashes)
    if not full and len(numbers) > sample:
        # The newest block always (a reorg shows there first), the rest at random.
        numbers = sorted([numbers[-1], *random.sample(numbers[:-1], sample - 1)])
    chain_blocks = rpc.fetch("eth_getBlockByNumber", [[hex(n), False] for n in numbers], RPC_BATCH)
    findings, good = [], []
    for number, block in zip(numbers, chain_blocks):
        chain_hash = block["hash"] if block else None
        if chain_hash is None or chain_hash.lower() != stored_hashes[number].lower():
            findings.append(Finding(
                "index.block_hash",
                f"the index holds block {number} as {stored_hashes[number]} but the chain has"
                f" {chain_hash or 'no such block'}: re-sync the index (shipledger index sync)",
                block=number,
            ))
        else:
            good.append(number)

    addresses = list(suite.values())
    if full:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        first = int(meta.get("start_block") or numbers[0])
        last = max(int(meta.get("checkpoint_block") or numbers[-1]), numbers[-1])
        ranges = [(lo, min(lo + LOG_RANGE - 1, last)) for lo in range(first, last + 1, LOG_RANGE)]
    else:
        ranges = [(n, n) for n in good]
    filters = [[{"address": addresses, "fromBlock": hex(lo), "toBlock": hex(hi)}] for lo, hi in ranges]
    on_chain: dict[int, set] = {}
    for logs in rpc.fetch("eth_getLogs", filters, RPC_BATCH):
        for log in logs:
            try:
                _, event, args = decode_log(log)
            except NotASuiteEvent:
                continue
            number = int(log["blockNumber"], 16)
            on_chain.setdefault(number, set()).add(_log_key(
                number, int(log["logIndex"], 16), log["blockHash"], log["transactionHash"], log["address"], event, args))

    bad_blocks = {f.block for f in findings}
    for lo, hi in ranges:
        rows = db.execute(
            "SELECT block_number, log_index, block_hash, tx_hash, address, event, args FROM events"
            " WHERE block_number BETWEEN ? AND ?", (lo, hi))
        stored: dict[int, set] = {}
        for r in rows:
            stored.setdefault(r[0], set()).add(_log_key(*r[:6], json.loads(r[6])))
        for number in sorted(set(stored) | {n for n in on_chain if lo <= n <= hi}):
            if number in bad_blocks:
                continue  # already reported: the index holds another chain's block there
            mine, theirs = stored.get(number, set()), on_chain.get(number, set())
            if mine != theirs:
                missing, extra = len(theirs - mine), len(mine - theirs)
                findings.append(Finding(
                    "index.logs",
                    f"block {number}: the index disagrees with the chain's logs ({missing} on chain not in the index"
                    f" as stored, {extra} in the index not on chain)",
                    block=number,
                ))
    return findings, len(numbers)

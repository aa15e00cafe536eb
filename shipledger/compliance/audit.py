"""`shipledger audit`: re-check the recorded history against the rules, independently of the contracts.

Nothing here calls the contracts' gate. The rules of suite v2 are re-implemented in Python and
replayed over the index's records in chain order, so a suite whose code skips a rule is caught by
what it let through:
- the gate (ReleaseRegistry.checkRelease, then DeploymentLedger._gate) at every start, and again at
  every promote and complete (with the canary verdict: Fail blocks for good, Marginal until a Pass);
- completions counted per (artifact, target); a rollback never restoring a revoked artifact;
- freezes from per-severity counts of open incidents; a freezing incident resolved only by
  responders of the policy's resolveQuorum distinct organisations;
- votes: a signer's latest action wins (a signature newer than its admission and its last action),
  nonces used once, deadline at most the ttl (30 days when none) after signedAt, the ttl running
  from signedAt, votes counting for the slot epoch and organisation they were cast in;
- governance: every change only governance makes (organisations, stewards, scoped roles, policies,
  settings) comes from an executed proposal (or the bootstrap in the constructors); every executed
  proposal had stewards of K distinct organisations; weakening is re-derived field by field from
  the call data against the replayed state, and from PolicySet's old/new values, compared with the
  contract's flag, and a weakening change must have waited its delay.
Three more checks tie the answer to the chain: the runtime code at each suite address must be the
committed build (immutable parts masked), the index must agree with the chain (block hashes and
logs of a sample of blocks, or of all of them with `full`), and each contract's history head and
record count in the index must equal its historyHead() at the index's checkpoint block.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

from eth_abi import decode as abi_decode
from eth_utils import keccak

from shipledger._internal import artifacts
from shipledger._internal.history import decode_head, head_call
from shipledger._internal.logs import NotASuiteEvent, decode_log
from shipledger._internal.revert import canonical_type
from shipledger._internal.rpc import TIMEOUT as RPC_TIMEOUT, Rpc
from shipledger.errors import gate_sentence
from shipledger.models import DeploymentStatus, Verdict

APPROVER_ROLE = "0x" + keccak(text="APPROVER_ROLE").hex()
DEPLOYER_ROLE = "0x" + keccak(text="DEPLOYER_ROLE").hex()
RESPONDER_ROLE = "0x" + keccak(text="RESPONDER_ROLE").hex()
APPROVE, REJECT = 1, 2  # Decision
IN_PROGRESS, COMPLETED, FAILED, ROLLED_BACK = (
    DeploymentStatus.IN_PROGRESS, DeploymentStatus.COMPLETED, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK,
)
RESOLVED = 4  # IncidentStatus
MAX_SIGNATURE_VALIDITY = 30 * 24 * 3600  # ReleaseRegistry.MAX_SIGNATURE_VALIDITY: a deadline's cap after signedAt
ZERO32 = "0x" + "00" * 32
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
    # Findings of no service (governance, the consortium) concern every service and stay in.
    findings = [f for f in replay.findings
                if (service is None or f.service in (service, "")) and (environment is None or f.environment in (environment, ""))]
    url = endpoint.url
    suite = endpoint.contracts()
    findings += check_code(url, suite, timeout=endpoint.timeout)
    index_findings, blocks_checked = check_index(index.db, url, suite, full=full, sample=sample, timeout=endpoint.timeout)
    findings += index_findings
    findings += check_history(index, url, suite, timeout=endpoint.timeout)
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
    canary: int = 0  # Verdict: Fail stays Fail; Marginal until a later Pass


@dataclass
class _Target:
    live: int = 0
    active: int = 0
    open_by_severity: list = field(default_factory=lambda: [0, 0, 0, 0])  # DeploymentLedger._targets[target].openBySeverity


@dataclass
class _Proposal:
    id: int
    target: str
    data: str
    proposer_org: int
    organisations: set = field(default_factory=set)
    state: str = "pending"
    weakening: bool | None = None  # the contract's flag, from ProposalScheduled
    derived: bool | None = None  # re-derived here from the call data and the replayed state
    scheduled_at: int = 0
    needed: int = 0  # K when it was scheduled
    delay: int = 0  # the delay when it was scheduled


def _selectors() -> dict[bytes, tuple[str, list[str]]]:
    """4-byte selector -> (function name, input types) of the functions governance may call."""
    table = {}
    for contract in ("ReleaseRegistry", "Governance"):
        for item in artifacts.abi(contract):
            if item["type"] == "function":
                types = [canonical_type(i) for i in item["inputs"]]
                table[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = (item["name"], types)
    return table


def _name_key(name: str) -> str:
    return "0x" + keccak(text=name).hex() if name else ZERO32


def policy_weakens(old: dict | None, new: dict) -> bool:
    """Governance._policyWeakens, field by field. Both are policies in the stored form (threshold,
    minOrganisations, ttl, minWait, freezeSeverity, resolveQuorum, priorEnvironment key,
    requiredAttestations keys); `old` None or version 0 when there was no policy."""
    if old is None or old.get("version", 1) == 0:
        return True  # a policy where there was none lets releases through
    prior_old, prior_new = old["priorEnvironment"].lower(), new["priorEnvironment"].lower()
    return (
        new["threshold"] < old["threshold"]
        or new["minOrganisations"] < old["minOrganisations"]
        or (old["ttl"] != 0 and (new["ttl"] == 0 or new["ttl"] > old["ttl"]))
        or new["minWait"] < old["minWait"]
        # freezeSeverity s freezes incidents of severity 1..s and 0 freezes none: a lower number weakens
        or new["freezeSeverity"] < old["freezeSeverity"]
        or new["resolveQuorum"] < old["resolveQuorum"]
        or (int(prior_old, 16) != 0 and prior_new != prior_old)
        or any(key.lower() not in {k.lower() for k in new["requiredAttestations"]} for key in old["requiredAttestations"])
    )


class RuleReplay:
    """The suite's state rebuilt event by event, with every deployment step, vote, incident resolution
    and governance change checked as it comes (the rules of suite v2)."""

    def __init__(self):
        self.findings: list[Finding] = []
        self.counts = Counter(events=0, starts=0, promotions=0, completions=0, rollbacks=0, votes=0, proposals=0,
                              executions=0, resolutions=0)
        self.roles: set[tuple[str, str]] = set()  # (role id, account) held now
        self.member_org: dict[str, int] = {}
        self.stewards: dict[int, str] = {}  # org -> steward
        self.approver: dict[str, tuple[int, int, int]] = {}  # active approver -> (slot, epoch, admitted at)
        self.slot_epoch: dict[int, int] = {}
        self.slot_holder: dict[int, str] = {}  # active slots only
        self.artifacts: dict[tuple[str, str], dict] = {}  # (service, digest) -> registered_at, revoked
        self.attested: set[tuple[str, str, str]] = set()  # (service, digest, type key)
        self.policies: dict[tuple[str, str], dict] = {}  # (service, environment) -> Policy as emitted
        # release -> slot -> (decision, org, epoch, time of the action): ReleaseRegistry._votes
        self.votes: dict[tuple[str, str, str], dict[int, tuple[int, int, int, int]]] = {}
        self.used_nonces: set[tuple[str, int]] = set()
        self.env_names: dict[str, str] = {}  # keccak of an environment name -> the name
        self.deployments: dict[int, _Deployment] = {}
        self.targets: dict[tuple[str, str], _Target] = {}
        self.completions: Counter = Counter()  # (service, digest, environment key) -> standing completions
        self.incidents: dict[int, dict] = {}
        self.organisations_needed = 0
        self.delay = 0
        self.proposals: dict[int, _Proposal] = {}
        self.executing: set[str] = set()  # tx hashes that execute a proposal (their changes are governed)
        self.bootstrap: set[str] = set()  # the constructors' tx hashes: the bootstrap needs no proposal
        self.change_weakens: dict[str, bool] = {}  # tx hash -> a PolicySet in it weakened (from old/new)
        self._selectors = _selectors()

    def run(self, db, service: str | None = None) -> None:
        self.executing = {r[0] for r in db.execute("SELECT tx_hash FROM proposal_executed")}
        self.bootstrap = {r[0] for r in db.execute("SELECT tx_hash FROM events WHERE history_count = 1")}
        # Everything is replayed even for one service: a governance proposal's weakening depends on
        # the policy it replaces, whichever service that is. `service` narrows the findings only.
        sql = "SELECT block_number, log_index, tx_hash, timestamp, event, args FROM events"
        for row in db.execute(sql + " ORDER BY block_number, log_index"):
            handler = getattr(self, "on_" + row["event"], None)
            self.counts["events"] += 1
            if handler:
                self._row = row
                handler(json.loads(row["args"]), row["timestamp"])
        if service is not None:  # findings of no service (governance, the consortium) concern every one
            self.findings = [f for f in self.findings if f.service in (service, "")]

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

    def _governed(self, what: str, **where) -> None:
        """A change only governance makes must come from an executed proposal (or the bootstrap)."""
        tx = self._row["tx_hash"]
        if tx not in self.executing and tx not in self.bootstrap:
            self._find("governance.change_without_proposal",
                       f"{what} was made outside an executed proposal: no K organisations approved it", **where)

    # ---------------------------------------------------------------- consortium and artifacts

    def on_OrganisationAdded(self, a, _ts):
        self._governed(f"organisation {a['org']} ({a['name']}) was added")
        self.stewards[a["org"]] = a["steward"]

    def on_StewardSet(self, a, _ts):
        self._governed(f"the steward of organisation {a['org']} was set to {a['newSteward']}")
        self.stewards[a["org"]] = a["newSteward"]

    def on_MemberAdded(self, a, _ts):
        self.member_org[a["account"]] = a["org"]

    def on_MemberRemoved(self, a, _ts):
        self.member_org[a["account"]] = 0

    def on_ScopedRoleGranted(self, a, _ts):
        self._governed(f"a role ({a['role']}{' for ' + a['scope'] if a['scope'] else ''}) was granted to {a['account']}")

    def on_ScopedRoleRevoked(self, a, _ts):
        self._governed(f"a role ({a['role']}) was revoked from {a['account']}")

    def on_ApproverSlotAssigned(self, a, ts):
        self.approver[a["account"]] = (a["index"], a["epoch"], ts)
        self.slot_epoch[a["index"]] = a["epoch"]
        self.slot_holder[a["index"]] = a["account"]

    def on_ApproverSlotFreed(self, a, _ts):
        self.approver.pop(a["account"], None)
        self.slot_holder.pop(a["index"], None)

    def on_RoleGranted(self, a, _ts):
        self.roles.add((a["role"].lower(), a["account"]))

    def on_RoleRevoked(self, a, _ts):
        self.roles.discard((a["role"].lower(), a["account"]))

    def on_ArtifactRegistered(self, a, ts):
        self.artifacts[(a["service"], a["digest"])] = {"registered_at": ts, "revoked": False, "registrant": a["registrant"]}

    def on_ArtifactRevoked(self, a, _ts):
        artifact = self.artifacts.get((a["service"], a["digest"]))
        if artifact is not None:
            artifact["revoked"] = True

    def on_AttestationRecorded(self, a, _ts):
        self.attested.add((a["service"], a["digest"], a["typeKey"].lower()))

    def on_PolicySet(self, a, _ts):
        where = {"service": a["service"], "environment": a["environment"]}
        self._governed(f"the policy of {a['service']}/{a['environment']} was set", **where)
        self._env_key(a["environment"])
        if a.get("priorEnvironment"):
            self._env_key(a["priorEnvironment"])
        old = a["oldPolicy"] if a["oldPolicy"]["version"] else None
        weakens = policy_weakens(old, a["newPolicy"])
        tx = self._row["tx_hash"]
        self.change_weakens[tx] = self.change_weakens.get(tx, False) or weakens
        self.policies[(a["service"], a["environment"])] = a["newPolicy"]

    # ---------------------------------------------------------------- votes

    def _vote(self, a, ts, decision: int) -> None:
        self.counts["votes"] += 1
        service, environment, approver = a["service"], a["environment"], a["approver"]
        where = {"service": service, "environment": environment}
        held = self.approver.get(approver)
        if held is None:
            self._find("vote.not_approver", f"a vote of {approver} on {service}/{environment} was recorded but it held no"
                       " approver slot", **where)
            return
        slot, epoch, admitted_at = held
        if a["org"] != self.member_org.get(approver):
            self._find("vote.wrong_organisation", f"a vote of {approver} counted for organisation {a['org']}, but it is a"
                       f" member of organisation {self.member_org.get(approver)}", **where)
        release = (service, a["digest"], environment)
        entry = self.votes.get(release, {}).get(slot)
        counting = entry is not None and entry[2] == epoch
        if a["bySignature"]:
            signed_at, deadline, nonce = a["signedAt"], a["deadline"], int(a["nonce"])
            policy = self.policies.get((service, environment)) or {"ttl": 0}
            validity = MAX_SIGNATURE_VALIDITY if policy["ttl"] == 0 or policy["ttl"] > MAX_SIGNATURE_VALIDITY else policy["ttl"]
            last = entry[3] if counting else 0
            problems = []
            if (approver, nonce) in self.used_nonces:
                problems.append(("vote.nonce_reused", f"nonce {nonce} of {approver} was used before"))
            if signed_at > ts:
                problems.append(("vote.signed_in_future", f"it was signed at {signed_at}, after the block ({ts})"))
            if ts > deadline:
                problems.append(("vote.expired", f"its deadline {deadline} had passed at {ts}"))
            if deadline > signed_at + validity:
                problems.append(("vote.deadline_too_long", f"its deadline {deadline} is more than {validity} s after"
                                 f" its signing at {signed_at}"))
            if signed_at <= admitted_at or signed_at <= last:
                problems.append(("vote.stale", f"it was signed at {signed_at}, not after the signer's admission"
                                 f" ({admitted_at}) and last action on the release ({last}): the latest action wins"))
            for rule, why in problems:
                self._find(rule, f"a signed vote of {approver} on {service}/{environment} was recorded although {why}",
                           **where)
            self.used_nonces.add((approver, nonce))
        self.votes.setdefault(release, {})[slot] = (decision, a["org"], epoch, a["signedAt"])

    def on_ArtifactApproved(self, a, ts):
        self._vote(a, ts, APPROVE)

    def on_ArtifactRejected(self, a, ts):
        self._vote(a, ts, REJECT)

    def on_VoteWithdrawn(self, a, ts):
        held = self.approver.get(a["approver"])
        if held is not None:
            slot, epoch, _ = held
            self.votes.setdefault((a["service"], a["digest"], a["environment"]), {})[slot] = (0, 0, epoch, ts)

    def on_NonceInvalidated(self, a, _ts):
        self.used_nonces.add((a["signer"], int(a["nonce"])))

    # ---------------------------------------------------------------- the gate

    def gate(self, service: str, digest: str, environment: str, now: int, self_id: int = 0) -> tuple[str, dict]:
        """What DeploymentLedger._gate (ReleaseRegistry.checkRelease first) answers at time `now`
        from the replayed state: the same checks in the same order, the first failing one named."""
        artifact = self.artifacts.get((service, digest))
        if artifact is None:
            return "unknown_artifact", {}
        if artifact["revoked"]:
            return "artifact_revoked", {}
        policy = self.policies.get((service, environment))
        if policy is None:
            return "no_policy", {}

        # ReleaseRegistry._tally: in slot order, the entries of the slots' current holders in the
        # slot's current epoch count (a freed slot's, or a re-admitted approver's old votes, do not);
        # the first rejector vetoes; approvals expire ttl after their signing; each counts for the
        # organisation it was cast for.
        ttl = policy["ttl"]
        valid = expired = 0
        organisations: set[int] = set()
        rejector = None
        for slot, (decision, org, epoch, at) in sorted(self.votes.get((service, digest, environment), {}).items()):
            if slot not in self.slot_holder or self.slot_epoch.get(slot) != epoch:
                continue
            if decision == REJECT:
                rejector = rejector or self.slot_holder[slot]
            elif decision == APPROVE:
                if ttl == 0 or at + ttl >= now:
                    valid += 1
                    organisations.add(org)
                else:
                    expired += 1
        if rejector is not None:
            return "rejected_by", {"approver": rejector}
        ready_at = artifact["registered_at"] + policy["minWait"]
        if now < ready_at:
            return "waiting_period", {"ready_at": ready_at, "now": now}
        if valid < policy["threshold"]:
            reason = "approvals_expired" if valid + expired >= policy["threshold"] else "not_enough_approvals"
            return reason, {"have": valid, "need": policy["threshold"]}
        if len(organisations) < policy["minOrganisations"]:
            return "not_enough_organisations", {"have": len(organisations), "need": policy["minOrganisations"]}
        for key in policy["requiredAttestations"]:
            if (service, digest, key.lower()) not in self.attested:
                return "missing_attestation", {"type": key}

        prior = policy["priorEnvironment"].lower()
        if int(prior, 16) != 0 and self.completions[(service, digest, prior)] == 0:
            return "missing_prior_environment", {"environment": self.env_names.get(prior, prior)}
        target = self._target(service, environment)
        if policy["freezeSeverity"] != 0:
            freezing = target.open_by_severity[: policy["freezeSeverity"]]
            if any(freezing):
                severity = next(i for i, n in enumerate(freezing, 1) if n)
                return "frozen_by_incident", {"incidents": sum(freezing), "severity": severity}
        if target.active and target.active != self_id:
            return "rollout_in_progress", {"active": target.active}
        return "allowed", {}

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

    def _recheck(self, deployment: _Deployment, step: str, ts: int) -> None:
        """DeploymentLedger._recheck: promote and complete need no blocking canary verdict and the
        gate's yes (the deployment's own rollout aside)."""
        where = self._where(deployment)
        if deployment.canary in (Verdict.FAIL, Verdict.MARGINAL):
            verdict = Verdict(deployment.canary).name.lower()
            self._find(f"{step}.canary_blocks", f"deployment {deployment.id} was {step}d although its canary verdict"
                       f" was {verdict}" + (" (a Fail blocks for good)" if verdict == "fail" else " (no later Pass)"), **where)
        reason, details = self.gate(deployment.service, deployment.digest, deployment.environment, ts, deployment.id)
        if reason != "allowed":
            self._find(f"{step}.{reason}", f"deployment {deployment.id} was {step}d at block {self._row['block_number']}"
                       f" although the gate denied it: {_sentence(reason, details)}", **where)

    def on_DeploymentStarted(self, a, ts):
        self.counts["starts"] += 1
        service, environment, digest, deployment_id = a["service"], a["environment"], a["digest"], a["id"]
        where = {"deployment": deployment_id, "service": service, "environment": environment}
        self._env_key(environment)
        target = self._target(service, environment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the start of deployment {deployment_id}", **where)
        if not 1 <= a["percent"] <= 100:
            self._find("start.invalid_percent", f"deployment {deployment_id} started at {a['percent']}%", **where)
        reason, details = self.gate(service, digest, environment, ts)
        if reason != "allowed":
            self._find(f"gate.{reason}",
                       f"deployment {deployment_id} of {service} sha256:{digest[2:14]}.. to {environment} was not"
                       f" allowed at block {self._row['block_number']}: {_sentence(reason, details)}", **where)
        self.deployments[deployment_id] = _Deployment(
            id=deployment_id, service=service, environment=environment, digest=digest,
            status=IN_PROGRESS, percent=a["percent"], live_before=target.live,
        )
        target.active = deployment_id

    def on_DeploymentPromoted(self, a, ts):
        self.counts["promotions"] += 1
        deployment = self._in_progress(a["id"], "promoted")
        if deployment is None:
            return
        where = self._where(deployment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the promotion of deployment {deployment.id}", **where)
        if not deployment.percent < a["toPercent"] <= 100:
            self._find("promotion.not_increasing",
                       f"deployment {deployment.id} was promoted from {deployment.percent}% to {a['toPercent']}%", **where)
        self._recheck(deployment, "promote", ts)
        deployment.percent = a["toPercent"]

    def on_CanaryAnalysisRecorded(self, a, _ts):
        deployment = self._in_progress(a["id"], "given a canary verdict")
        if deployment is not None:
            self._check_role(DEPLOYER_ROLE, a["recorder"], f"the canary verdict on deployment {deployment.id}",
                             **self._where(deployment))
            if deployment.canary != Verdict.FAIL:
                deployment.canary = a["verdict"]

    def on_DeploymentCompleted(self, a, ts):
        self.counts["completions"] += 1
        deployment = self._in_progress(a["id"], "completed")
        if deployment is None:
            return
        where = self._where(deployment)
        self._check_role(DEPLOYER_ROLE, a["deployer"], f"the completion of deployment {deployment.id}", **where)
        if deployment.percent != 100:
            self._find("complete.below_100", f"deployment {deployment.id} completed at {deployment.percent}%", **where)
        self._recheck(deployment, "complete", ts)
        target = self._target(deployment.service, deployment.environment)
        target.live, target.active = deployment.id, 0
        deployment.status = COMPLETED
        self.completions[(deployment.service, deployment.digest, self._env_key(deployment.environment))] += 1

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
            key = (deployment.service, deployment.digest, self._env_key(deployment.environment))
            self.completions[key] = max(0, self.completions[key] - 1)
        else:
            status = DeploymentStatus(deployment.status).name.lower().replace("_", " ")
            self._find("deployment.state", f"deployment {deployment_id} was rolled back while {status}", **where)
            expected = restored
        if restored != expected:
            self._find("rollback.wrong_restore",
                       f"the rollback of deployment {deployment_id} made deployment {restored} live, but deployment"
                       f" {expected} was live before it", **where)
        back = self.deployments.get(restored)
        if back is not None and self.artifacts.get((back.service, back.digest), {}).get("revoked"):
            self._find("rollback.restores_revoked",
                       f"the rollback of deployment {deployment_id} made deployment {restored} live again, whose artifact"
                       f" sha256:{back.digest[2:14]}.. had been revoked", **where)
        deployment.status = ROLLED_BACK

    # ---------------------------------------------------------------- incidents

    def on_IncidentOpened(self, a, _ts):
        self._check_role(RESPONDER_ROLE, a["responder"], f"the opening of incident {a['id']}",
                         service=a["service"], environment=a["environment"])
        self.incidents[a["id"]] = {"target": (a["service"], a["environment"]), "severity": a["severity"], "status": 1,
                                   "resolved_by": set()}
        if 1 <= a["severity"] <= 4:
            self._target(a["service"], a["environment"]).open_by_severity[a["severity"] - 1] += 1

    def _quorum(self, incident: dict) -> int:
        """DeploymentLedger._resolveQuorum: responders of how many organisations a resolution needs."""
        policy = self.policies.get(incident["target"])
        if policy is None or policy["freezeSeverity"] == 0 or incident["severity"] > policy["freezeSeverity"]:
            return 1
        return policy["resolveQuorum"]

    def on_IncidentMitigated(self, a, _ts):
        incident = self.incidents.get(a["id"])
        rollback = self.deployments.get(a["rollbackId"]) if a["rollbackId"] else None
        if incident is not None and a["rollbackId"] and (
                rollback is None or rollback.status != ROLLED_BACK
                or (rollback.service, rollback.environment) != incident["target"]):
            service, environment = incident["target"]
            self._find("incident.mitigated_by_other_rollback", f"incident {a['id']} was mitigated by deployment"
                       f" {a['rollbackId']}, which is no rollback of {service}/{environment}",
                       service=service, environment=environment)

    def on_IncidentResolveApproved(self, a, _ts):
        incident = self.incidents.get(a["id"])
        if incident is None:
            return
        service, environment = incident["target"]
        where = {"service": service, "environment": environment}
        self._check_role(RESPONDER_ROLE, a["responder"], f"a resolution of incident {a['id']}", **where)
        if a["org"] != self.member_org.get(a["responder"]) or not a["org"]:
            self._find("incident.wrong_organisation", f"the resolution of incident {a['id']} by {a['responder']} counted"
                       f" for organisation {a['org']}, not its own ({self.member_org.get(a['responder'])})", **where)
        if a["org"] in incident["resolved_by"]:
            self._find("incident.organisation_twice", f"organisation {a['org']} resolved incident {a['id']} twice", **where)
        incident["resolved_by"].add(a["org"])
        incident["needed"] = self._quorum(incident)

    def on_IncidentResolved(self, a, _ts):
        self.counts["resolutions"] += 1
        incident = self.incidents.get(a["id"])
        if incident is None or incident["status"] == RESOLVED:
            return
        service, environment = incident["target"]
        needed = incident.get("needed", self._quorum(incident))
        if len(incident["resolved_by"]) < needed:
            self._find("incident.resolved_without_quorum",
                       f"incident {a['id']} (severity {incident['severity']}) was resolved by responders of"
                       f" {len(incident['resolved_by'])} organisation(s); the policy's resolve quorum is {needed}",
                       service=service, environment=environment)
        incident["status"] = RESOLVED
        self._target(service, environment).open_by_severity[incident["severity"] - 1] -= 1

    # ---------------------------------------------------------------- governance

    def on_SettingsChanged(self, a, _ts):
        self._governed(f"governance settings were changed (K {a['newOrganisationsNeeded']}, delay {a['newDelay']} s)")
        self.organisations_needed, self.delay = a["newOrganisationsNeeded"], a["newDelay"]

    def _proposal(self, proposal_id: int) -> _Proposal | None:
        proposal = self.proposals.get(proposal_id)
        if proposal is None:
            self._find("governance.unknown_proposal", f"proposal {proposal_id} acted on but never created")
        return proposal

    def _steward(self, account: str, org: int, what: str) -> None:
        if self.stewards.get(org) != account:
            self._find("governance.not_steward", f"{what} came from {account}, which was not the steward of organisation"
                       f" {org} ({self.stewards.get(org)} was)")

    def on_ProposalCreated(self, a, _ts):
        self.counts["proposals"] += 1
        self._steward(a["proposer"], a["org"], f"proposal {a['id']}")
        self.proposals[a["id"]] = _Proposal(id=a["id"], target=a["target"], data=a["data"], proposer_org=a["org"])

    def on_ProposalApproved(self, a, _ts):
        proposal = self._proposal(a["id"])
        if proposal is None:
            return
        self._steward(a["steward"], a["org"], f"an approval of proposal {a['id']}")
        if a["org"] in proposal.organisations:
            self._find("governance.organisation_twice", f"organisation {a['org']} approved proposal {a['id']} twice")
        proposal.organisations.add(a["org"])

    def on_ProposalScheduled(self, a, ts):
        proposal = self._proposal(a["id"])
        if proposal is None:
            return
        proposal.state, proposal.weakening, proposal.scheduled_at = "scheduled", a["weakening"], ts
        proposal.needed, proposal.delay = self.organisations_needed, self.delay
        if len(proposal.organisations) < self.organisations_needed:
            self._find("governance.not_enough_organisations",
                       f"proposal {a['id']} was scheduled with the approval of {len(proposal.organisations)}"
                       f" organisation(s); {self.organisations_needed} are needed")
        proposal.derived = self.weakens(proposal.target, proposal.data)
        if proposal.derived is not None and proposal.derived != a["weakening"]:
            self._find("governance.weakening_misclassified",
                       f"proposal {a['id']} ({self.describe(proposal)}) was scheduled as"
                       f" {'weakening' if a['weakening'] else 'tightening'}, but field by field it"
                       f" {'weakens' if proposal.derived else 'only tightens'}")
        wait = self.delay if (proposal.derived or a["weakening"]) else 0
        if a["executableAt"] < ts + wait:
            self._find("governance.delay_too_short", f"proposal {a['id']} was made executable at {a['executableAt']},"
                       f" before its delay of {wait} s from {ts} had passed")

    def on_ProposalExecuted(self, a, ts):
        self.counts["executions"] += 1
        proposal = self._proposal(a["id"])
        if proposal is None:
            return
        if proposal.state != "scheduled":
            self._find("governance.executed_unscheduled", f"proposal {a['id']} was executed while {proposal.state}")
        needed = proposal.needed or self.organisations_needed
        if len(proposal.organisations) < needed:
            self._find("governance.not_enough_organisations",
                       f"proposal {a['id']} was executed with the approval of {len(proposal.organisations)}"
                       f" organisation(s); {needed} are needed")
        weakening = bool(proposal.weakening or proposal.derived or self.change_weakens.get(self._row["tx_hash"]))
        if weakening and ts < proposal.scheduled_at + proposal.delay:
            self._find("governance.delay_not_waited",
                       f"proposal {a['id']} ({self.describe(proposal)}) weakens the rules but was executed at {ts},"
                       f" {proposal.scheduled_at + proposal.delay - ts} s before its delay of {proposal.delay} s had passed")
        proposal.state = "executed"

    def on_ProposalCancelled(self, a, _ts):
        proposal = self._proposal(a["id"])
        if proposal is not None:
            self._steward(a["steward"], a["org"], f"the cancellation of proposal {a['id']}")
            proposal.state = "cancelled"

    def _decode(self, data: str) -> tuple[str, list] | None:
        raw = bytes.fromhex(data[2:])
        function = self._selectors.get(raw[:4])
        if function is None:
            return None
        name, types = function
        try:
            return name, list(abi_decode(types, raw[4:]))
        except Exception:  # noqa: BLE001 - call data that does not decode is reported as unclassifiable
            return None

    def describe(self, proposal: _Proposal) -> str:
        call = self._decode(proposal.data)
        if call is None:
            return "an unknown call"
        name, args = call
        if name == "setPolicy":
            return f"setPolicy {args[0]}/{args[1]}"
        return name

    def weakens(self, target: str, data: str) -> bool | None:
        """Governance._classify, re-derived: whether the change weakens anything against the replayed
        state; None for a call governance does not make."""
        call = self._decode(data)
        if call is None:
            return None
        name, args = call
        if name == "setSettings":
            return args[0] < self.organisations_needed or args[1] < self.delay
        if name in ("addOrganisation", "setSteward", "grantScopedRole"):
            return True  # a new party, steward or role widens who may act
        if name in ("revokeScopedRole", "removeMember"):
            return False
        if name != "setPolicy":
            return None
        service, environment, (threshold, min_orgs, ttl, min_wait, freeze, quorum, prior, required) = args
        new = {"threshold": threshold, "minOrganisations": min_orgs, "ttl": ttl, "minWait": min_wait,
               "freezeSeverity": freeze, "resolveQuorum": quorum, "priorEnvironment": _name_key(prior),
               "requiredAttestations": [_name_key(t) for t in required]}
        return policy_weakens(self.policies.get((service, environment)), new)


# The v2 reasons whose details differ from what errors.gate_sentence knew in v1.
_SENTENCES = {
    "frozen_by_incident": "deployments are frozen by {incidents} open incident(s), the most severe of severity {severity}",
    "missing_attestation": "a required attestation is missing (type {type})",
    "rollout_in_progress": "deployment {active} is still rolling out there",
}


def _sentence(reason: str, details: dict) -> str:
    if reason in _SENTENCES:
        return _SENTENCES[reason].format(**details)
    try:
        return gate_sentence(reason, details)
    except (KeyError, IndexError):
        return f"{reason} {details}"


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
    contract_at = {address.lower(): name for name, address in suite.items()}
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
                contract, event, args = decode_log(log)
            except NotASuiteEvent:
                continue
            if contract_at.get(log["address"].lower()) != contract:
                continue  # not a record of the contract there (TimelockController's own events)
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


# ====================================================================== the index against the history heads


def check_history(index, url: str, suite: dict[str, str], *, timeout: float = RPC_TIMEOUT) -> list[Finding]:
    """Each contract's last head and record count in the index against its historyHead() at the
    index's checkpoint block, and its counts running 1..n: a record the index lacks, holds twice or
    holds out of order shows here even where the sampled blocks look right."""
    checkpoint = index.meta().get("checkpoint_block")
    if checkpoint is None:
        return []
    block = int(checkpoint)
    findings = []
    for name, records, highest in index.db.execute(
            "SELECT contract, count(*), max(history_count) FROM events GROUP BY contract").fetchall():
        if records != highest:
            findings.append(Finding("index.history_count", f"the index holds {records} records of {name} but numbers"
                                    f" them up to {highest}: records are missing or doubled; re-sync into a new --db",
                                    address=suite.get(name)))
    heads = index.history_heads()
    replies = Rpc(url, timeout=timeout).replies([head_call(address, block) for address in suite.values()])
    for (name, address), reply in zip(suite.items(), replies):
        if "error" in reply or reply.get("result") in (None, "0x"):
            findings.append(Finding("index.history_head", f"historyHead() of {name} at block {block} cannot be read"
                                    f" ({(reply.get('error') or {}).get('message', 'no answer')})", address=address, block=block))
            continue
        chain = decode_head(reply["result"])
        mine = heads.get(name, ("0x" + "00" * 24, 0))
        if chain != mine:
            findings.append(Finding(
                "index.history_head",
                f"at block {block} {name} has history head {chain[0]} after {chain[1]} records, the index {mine[0]} after"
                f" {mine[1]}: the index is not the contract's complete history; re-sync into a new --db",
                address=address, block=block))
    return findings

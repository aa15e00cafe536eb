"""Incident suspects: which deployments may have caused an incident, ranked, each with its reasons.

The ranking reads the index (shipledger.compliance.index) and nothing else; the scoring itself is pure functions
over index rows, so the same rows always give the same ranking and a test can check it exactly.

How a deployment is scored (score = 100 x the product of the factors below; every factor is one
line of `reasons`, with the numbers, so a responder sees why something ranks where it does). The
score is a ranking, not a probability: it can go above 100 when the evidence is strong.

- Relation. Only deployments in the incident's environment count: a staging rollout does not break
  production. A deployment of the incident's own service is x1.0. A deployment of a service it
  depends on (the dependency config, see `load_dependencies`) is x0.6 per hop: a direct dependency
  x0.6, a dependency of a dependency x0.36. A change in what you call breaks you less often than a
  change in your own code, but it does, and it is the one people forget to look at.
- Time. Only deployments whose step came *before* the incident was opened (chain order, so even the
  same block is decided exactly), and within the window (24h by default). The step is the last
  start or promotion before the incident: raising a rollout from 10% to 100% is when a latent fault
  meets most traffic, so it is the moment that matters. Closer is more suspect: x 1 / (1 + dt/1h),
  i.e. x0.92 at 5 minutes, x0.5 at one hour, x0.04 at a day.
- Canary verdict. The worst verdict recorded for the deployment before the incident: fail x1.5 (the
  judge saw it; it should not have gone on), marginal x1.3 (the judge had doubts), none recorded
  x1.15 (nobody looked: unverified is more suspect than verified), pass x1.0. The worst, not the
  latest, because a marginal verdict at 10% is a warning even if a later step passed.
- What was serving when the incident opened. A deployment that was rolled back, failed, or
  replaced by a later completed deployment before the incident no longer served traffic then: x0.3.
  Not zero, because a rollback returns the code but not the data it wrote or the migrations it ran.
  An in-progress or live deployment (including one a rollback restored) is x1.0.
- Named. A deployment the incident names as a suspect (`incident open --suspect`, or the rollout
  controller naming the canary it just rolled back) is x2.0, and the x0.3 above does not apply: whoever
  opened the incident knew it was gone and still named it, because the harm happened while it served.
- What ended it (only known after the fact, so only for `incident suspects ID`, never for
  `incident open --auto-suspect`). If the incident was mitigated naming the rollback of this
  deployment, a responder has attested that undoing it helped: x2.0, the strongest evidence the
  ledger holds. If the deployment was rolled back after the incident opened and before it was
  mitigated (or resolved, or now if still open), without being named, x1.5: probably the fix, but
  the responders did not say so. A rollback *before* the incident is the x0.3 case above, the
  opposite conclusion: it was no longer running when things broke.

Ties (equal scores) rank the more recent step first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from shipledger.errors import UsageError, path_error
from shipledger.models import Verdict

DEFAULT_DEPS = Path(".shipledger") / "dependencies.yaml"
DEFAULT_WINDOW = 24 * 3600  # seconds before the incident in which a deployment step counts
PROXIMITY_SCALE = 3600  # seconds at which the time factor has halved
HOP_FACTOR = 0.6  # per dependency hop
VERDICT_FACTOR = {"fail": 1.5, "marginal": 1.3, "none": 1.15, "pass": 1.0}
NOT_SERVING_FACTOR = 0.3  # rolled back, failed or replaced before the incident
NAMED_FACTOR = 2.0  # the incident names it as a suspect (then not-serving does not apply)
MITIGATED_BY_ROLLBACK_FACTOR = 2.0  # the incident's mitigation names this deployment's rollback
ROLLED_BACK_DURING_FACTOR = 1.5  # rolled back while the incident was open, not named
AUTO_SUSPECT_MAX = 3  # `incident open --auto-suspect` names at most this many...
AUTO_SUSPECT_FLOOR = 10.0  # ...of those scoring at least this

DEPLOYMENT_EVENTS = (
    "DeploymentStarted", "DeploymentPromoted", "CanaryAnalysisRecorded",
    "DeploymentCompleted", "DeploymentFailed", "DeploymentRolledBack",
)
INCIDENT_KINDS = ("incident-opened", "incident-mitigated", "incident-resolved")  # events.kind is indexed


# ---------------------------------------------------------------------- data


@dataclass(frozen=True)
class Row:
    """One row of the index's `events` table, with `args` decoded from JSON."""

    block_number: int
    log_index: int
    timestamp: int
    event: str
    service: str
    environment: str
    args: dict

    @property
    def position(self) -> tuple[int, int]:
        return self.block_number, self.log_index


@dataclass(frozen=True)
class Moment:
    """When the incident happened: its place in chain order and its block time. A moment that has
    not been mined yet (`incident open --auto-suspect`) sits after every indexed event."""

    block_number: float
    log_index: int
    timestamp: int

    @property
    def position(self) -> tuple[float, int]:
        return self.block_number, self.log_index


@dataclass(frozen=True)
class IncidentFacts:
    id: int
    service: str
    environment: str
    severity: int
    title: str
    opened: Moment
    named_suspects: tuple[int, ...] = ()
    mitigated_at: int | None = None  # unix seconds
    mitigated_by: int = 0  # the rolled-back deployment the mitigation names, 0 for none
    resolved_at: int | None = None


@dataclass(frozen=True)
class Suspect:
    deployment_id: int
    service: str
    environment: str
    digest: str  # "sha256:<hex>"
    relation: str  # "same service" or "dependency"
    hops: int  # 0 for the incident's own service, 1 for a direct dependency, ...
    step: str  # "started at 10%" or "promoted to 100%"
    step_block: int
    step_at: int  # unix seconds
    seconds_before: int  # from the step to the incident
    verdict: str  # worst canary verdict before the incident: fail, marginal, pass, or none
    state: str  # at the incident: in-progress, live, rolled-back, failed, replaced
    score: float
    reasons: tuple[str, ...]
    named: bool = False  # the responder named it as a suspect when opening the incident


@dataclass
class _Deployment:
    """What the rows say about one deployment, up to the incident (and what happened after it)."""

    id: int
    service: str
    environment: str
    digest: str
    step: str
    step_block: int
    step_at: int
    verdicts: list = field(default_factory=list)  # (verdict name, score, percent)
    state: str = "in-progress"
    state_at: int = 0
    state_by: int = 0  # the deployment that replaced it
    rolled_back_after: int | None = None  # unix seconds of a rollback after the incident opened


# ---------------------------------------------------------------------- the dependency config


def load_dependencies(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """The dependency config: `{service: [services it depends on]}` as YAML or JSON, e.g.

        # .shipledger/dependencies.yaml
        checkout: [payments, inventory]
        payments: [ledger-db]

    With no path, `.shipledger/dependencies.yaml` if it exists, else no dependencies. Names follow
    the ledger's rules for service names; a service depending on nothing may map to [] or nothing.
    """
    import yaml

    if path is None:
        if not DEFAULT_DEPS.is_file():
            return {}
        path = DEFAULT_DEPS
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON: one parser for both
    except (OSError, UnicodeDecodeError) as exc:
        raise path_error(f"the dependency config {path}", exc) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UsageError(f"{path} must map each service to the services it depends on, e.g. `checkout: [payments]`")
    from shipledger._internal.names import check_name

    out = {}
    for service, needs in data.items():
        where = f"{path}: {service!r}"
        if not isinstance(service, str):
            raise UsageError(f"{where}: service names are text")
        if needs is None:
            needs = []
        if isinstance(needs, str) or not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise UsageError(f"{where} must map to a list of service names, e.g. [payments, inventory]")
        try:
            out[check_name("service", service)] = tuple(check_name("service", n) for n in needs)
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}") from None
    return out


def dependency_hops(service: str, dependencies: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Every service `service` depends on, directly or not, with the fewest hops to it (itself: 0)."""
    hops = {service: 0}
    frontier = [service]
    while frontier:
        following = []
        for current in frontier:
            for needed in dependencies.get(current, ()):
                if needed not in hops:  # breadth first: the first time seen is the shortest path
                    hops[needed] = hops[current] + 1
                    following.append(needed)
        frontier = following
    return hops


# ---------------------------------------------------------------------- scoring (pure)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _deployments(rows: Sequence[Row], moment: Moment) -> dict[int, _Deployment]:
    """Replay the deployment rows in chain order: each deployment's last step, verdicts and state
    as of the moment, and any rollback after it."""
    found: dict[int, _Deployment] = {}
    for row in sorted(rows, key=lambda r: r.position):
        a = row.args
        before = row.position < moment.position
        if row.event == "DeploymentStarted":
            if before:
                found[a["id"]] = _Deployment(
                    id=a["id"], service=a["service"], environment=a["environment"], digest="sha256:" + a["digest"][2:],
                    step=f"started at {a['percent']}%", step_block=row.block_number, step_at=row.timestamp,
                )
            continue
        d = found.get(a["id"])
        if d is None:  # started after the moment: never a suspect
            continue
        if not before:
            if row.event == "DeploymentRolledBack" and d.rolled_back_after is None:
                d.rolled_back_after = row.timestamp
            continue
        if row.event == "DeploymentPromoted":
            d.step, d.step_block, d.step_at = f"promoted to {a['toPercent']}%", row.block_number, row.timestamp
        elif row.event == "CanaryAnalysisRecorded":
            d.verdicts.append((Verdict(a["verdict"]).name.lower(), a["scoreBasisPoints"] / 100, a["percent"]))
        elif row.event == "DeploymentCompleted":
            d.state, d.state_at = "live", row.timestamp
            replaced = found.get(a["replaced"])
            if replaced is not None:
                replaced.state, replaced.state_at, replaced.state_by = "replaced", row.timestamp, d.id
        elif row.event == "DeploymentFailed":
            d.state, d.state_at = "failed", row.timestamp
        elif row.event == "DeploymentRolledBack":
            d.state, d.state_at = "rolled-back", row.timestamp
            restored = found.get(a["restored"])
            if restored is not None:  # the deployment live before serves again
                restored.state, restored.state_at, restored.state_by = "live", row.timestamp, 0
    return found


def _worst_verdict(verdicts: list) -> tuple[str, str]:
    """(verdict, sentence) for the worst canary verdict, or ("none", ...) if none was recorded."""
    if not verdicts:
        return "none", "no canary verdict recorded before the incident"
    order = ("pass", "marginal", "fail")
    verdict, score, percent = max(verdicts, key=lambda v: order.index(v[0]) if v[0] in order else -1)
    count = f" (worst of {len(verdicts)})" if len(verdicts) > 1 else ""
    return verdict, f"canary verdict {verdict}, score {score:.1f} at {percent}%{count}"


def score_deployment(
    d: _Deployment, *, hops: int, moment: Moment, incident: IncidentFacts | None, incident_service: str
) -> Suspect:
    """One deployment's score and the reasons behind it (see the module docstring)."""
    reasons = []
    factors = []

    def factor(value: float, text: str) -> None:
        factors.append(value)
        reasons.append(f"{text}: x{value:.2f}")

    if hops == 0:
        factor(1.0, f"same service and environment ({d.service} in {d.environment})")
    else:
        how = "a direct dependency" if hops == 1 else f"a dependency {hops} hops away"
        factor(HOP_FACTOR ** hops, f"{d.service} is {how} of {incident_service} (same environment)")

    seconds = max(0, moment.timestamp - d.step_at)
    factor(1 / (1 + seconds / PROXIMITY_SCALE), f"{d.step} {_minutes(seconds)} before the incident (block {d.step_block})")

    verdict, sentence = _worst_verdict(d.verdicts)
    factor(VERDICT_FACTOR.get(verdict, 1.0), sentence)

    named = incident is not None and d.id in incident.named_suspects
    if named:
        # Whoever opened the incident (a responder, or the rollout controller right after rolling a
        # failed canary back) attests that it is involved; that outweighs it being gone by then.
        factor(NAMED_FACTOR, f"incident {incident.id} names it as a suspect")
    elif d.state in ("rolled-back", "failed", "replaced"):
        ago = _minutes(max(0, moment.timestamp - d.state_at))
        what = f"replaced by deployment {d.state_by}" if d.state == "replaced" else d.state.replace("-", " ")
        factor(NOT_SERVING_FACTOR, f"{what} {ago} before the incident, so not serving when it opened")

    if incident is not None and d.state in ("in-progress", "live"):
        if incident.mitigated_by == d.id:
            factor(MITIGATED_BY_ROLLBACK_FACTOR, f"incident {incident.id} was mitigated by rolling back this deployment")
        elif d.rolled_back_after is not None:
            ended = incident.mitigated_at or incident.resolved_at
            if ended is None or d.rolled_back_after <= ended:
                after = _minutes(max(0, d.rolled_back_after - incident.opened.timestamp))
                until = "while it was still open" if ended is None else (
                    "before it was mitigated" if incident.mitigated_at else "before it was resolved")
                factor(ROLLED_BACK_DURING_FACTOR, f"rolled back {after} after the incident opened, {until}")

    score = 100 * math.prod(factors)
    return Suspect(
        deployment_id=d.id, service=d.service, environment=d.environment, digest=d.digest,
        relation="same service" if hops == 0 else "dependency", hops=hops, step=d.step, step_block=d.step_block,
        step_at=d.step_at, seconds_before=seconds, verdict=verdict, state=d.state, score=round(score, 1),
        reasons=tuple(reasons), named=named,
    )


def rank(
    rows: Sequence[Row], *, service: str, environment: str, moment: Moment,
    dependencies: Mapping[str, Iterable[str]] | None = None, window: int = DEFAULT_WINDOW,
    incident: IncidentFacts | None = None,
) -> list[Suspect]:
    """The deployments in `rows` that may have caused trouble in (service, environment) at `moment`,
    most suspect first. `rows` may hold anything: only the deployment events of the service, its
    dependencies and the environment count."""
    hops = dependency_hops(service, dependencies or {})
    relevant = [r for r in rows if r.event in DEPLOYMENT_EVENTS and r.environment == environment and r.service in hops]
    suspects = [
        score_deployment(d, hops=hops[d.service], moment=moment, incident=incident, incident_service=service)
        for d in _deployments(relevant, moment).values()
        if moment.timestamp - d.step_at <= window
    ]
    return sorted(suspects, key=lambda s: (-s.score, -s.step_block, -s.deployment_id))


def auto_suspects(ranked: Sequence[Suspect], limit: int = AUTO_SUSPECT_MAX, floor: float = AUTO_SUSPECT_FLOOR) -> list[Suspect]:
    """The ones `incident open --auto-suspect` names: the top `limit` scoring at least `floor`."""
    return [s for s in ranked if s.score >= floor][:limit]


# ---------------------------------------------------------------------- reading the index


def _rows(db, where: str, params: Sequence) -> list[Row]:
    query = ("SELECT block_number, log_index, timestamp, event, service, environment, args FROM events "
             f"WHERE {where} ORDER BY block_number, log_index")
    return [Row(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in db.execute(query, list(params))]


def deployment_rows(db, environment: str, services: Iterable[str]) -> list[Row]:
    services = sorted(set(services))
    marks = ",".join("?" * len(services))
    events = ",".join("?" * len(DEPLOYMENT_EVENTS))
    return _rows(db, f"environment = ? AND service IN ({marks}) AND event IN ({events})",
                 [environment, *services, *DEPLOYMENT_EVENTS])


def incident_facts(db, incident_id: int) -> IncidentFacts | None:
    """The incident as the index knows it, or None if the index holds no IncidentOpened for it."""
    kinds = ",".join("?" * len(INCIDENT_KINDS))
    rows = _rows(db, f"kind IN ({kinds}) AND json_extract(args, '$.id') = ?", [*INCIDENT_KINDS, incident_id])
    opened = next((r for r in rows if r.event == "IncidentOpened"), None)
    if opened is None:
        return None
    facts = IncidentFacts(
        id=incident_id, service=opened.args["service"], environment=opened.args["environment"],
        severity=opened.args["severity"], title=opened.args["title"],
        opened=Moment(opened.block_number, opened.log_index, opened.timestamp),
        named_suspects=tuple(opened.args.get("suspects") or ()),
    )
    for r in rows:
        if r.event == "IncidentMitigated":
            facts = replace(facts, mitigated_at=r.timestamp, mitigated_by=r.args.get("rollbackId") or 0)
        elif r.event == "IncidentResolved":
            facts = replace(facts, resolved_at=r.timestamp)
    return facts


def incident_suspects(
    index, incident_id: int, *, dependencies: Mapping[str, Iterable[str]] | None = None, window: int = DEFAULT_WINDOW
) -> tuple[IncidentFacts, list[Suspect]]:
    """The ranked suspects of a recorded incident, from a (synced) shipledger.compliance.index.Index."""
    incident = incident_facts(index.db, incident_id)
    if incident is None:
        raise UsageError(f"incident {incident_id} is not in the index: no such incident on this ledger (yet)")
    services = dependency_hops(incident.service, dependencies or {})
    rows = deployment_rows(index.db, incident.environment, services)
    return incident, rank(rows, service=incident.service, environment=incident.environment, moment=incident.opened,
                          dependencies=dependencies, window=window, incident=incident)


def current_suspects(
    index, service: str, environment: str, *, now: int,
    dependencies: Mapping[str, Iterable[str]] | None = None, window: int = DEFAULT_WINDOW,
) -> list[Suspect]:
    """The deployments that would be suspects if an incident opened in (service, environment) at
    unix time `now`, after everything indexed so far (for `incident open --auto-suspect`)."""
    rows = deployment_rows(index.db, environment, dependency_hops(service, dependencies or {}))
    return rank(rows, service=service, environment=environment, moment=Moment(math.inf, 0, now),
                dependencies=dependencies, window=window)

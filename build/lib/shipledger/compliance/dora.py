"""DORA metrics from the ledger: pure functions over the indexed history, returning dataclasses.

`compute(events, ...)` takes HistoryEvents (as Index.history() returns them, in chain order) and
works out, for the production environments (`prod`/`production` unless told otherwise):

- deployment frequency: completed deployments per day (and week) over the period;
- lead time for changes: per artifact, its commit time to the completion of its first production
  deployment. The commit time is ArtifactRegistered.committedAt, or when that is 0 the commit's time
  in a local git repository (`commit_time`); artifacts with neither are left out and counted;
- change failure rate: deployments rolled back or named as a suspect by an incident, over all
  deployments started;
- time to restore: incident opened to resolved (median); rollback rate; approvals and rejections per
  organisation; time from registration to approval.

Everything is keyed by deployment and incident ids, so the names the index resolved are not needed.
The period runs from `since` (default: the first production deployment in scope) to `until`
(default: `now`, the time of the newest indexed block). Durations are in seconds.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_PROD_ENVS = ("prod", "production")
DAY = 86400
ZERO_HASH = "0x" + "00" * 32


@dataclass(frozen=True)
class Summary:
    """Distribution of durations in seconds; None when there are no values."""

    count: int
    median: float | None
    p90: float | None
    mean: float | None
    minimum: int | None
    maximum: int | None

    @classmethod
    def of(cls, values: Iterable[int]) -> Summary:
        values = sorted(values)
        if not values:
            return cls(0, None, None, None, None, None)
        p90 = values[max(0, math.ceil(0.9 * len(values)) - 1)]  # nearest rank
        return cls(len(values), statistics.median(values), p90, statistics.fmean(values), values[0], values[-1])


@dataclass(frozen=True)
class ProdDeployment:
    id: int
    service: str
    environment: str
    digest: str
    version: str
    started_at: int
    completed_at: int | None
    failed: bool
    rolled_back: bool
    incidents: tuple[int, ...]  # incidents that name it as a suspect

    @property
    def change_failure(self) -> bool:
        return self.rolled_back or bool(self.incidents)


@dataclass(frozen=True)
class LeadTime:
    service: str
    version: str
    digest: str
    deployment: int
    committed_at: int
    completed_at: int
    seconds: int
    source: str  # "ledger" (committedAt at registration) or "git"


@dataclass(frozen=True)
class Restore:
    incident: int
    service: str
    environment: str
    severity: int
    title: str
    opened_at: int
    resolved_at: int | None
    seconds: int | None


@dataclass(frozen=True)
class OrgVotes:
    org: int
    name: str
    approvals: int
    rejections: int


@dataclass(frozen=True)
class ApprovalDelay:
    service: str
    version: str
    digest: str
    environment: str
    first_approval: int  # seconds from registration to its first approval there
    approved: int | None  # seconds to the last approval before its first deployment there (None: not deployed)


@dataclass(frozen=True)
class Bucket:
    start: str  # ISO date (UTC) the day or week starts
    completed: int
    change_failures: int  # of those completed deployments


@dataclass(frozen=True)
class DoraReport:
    service: str | None
    environments: tuple[str, ...]
    since: int | None
    until: int | None
    period_days: float
    deployments: int  # started in the period
    completed: int  # completed in the period
    failed: int
    rolled_back: int
    linked_to_incidents: int
    change_failures: int
    change_failure_rate: float | None
    rollback_rate: float | None
    deployments_per_day: float | None
    deployments_per_week: float | None
    lead_time: Summary
    lead_time_from_git: int
    lead_time_left_out: int
    lead_time_left_out_reasons: dict[str, int]
    time_to_restore: Summary
    unresolved_incidents: int
    registration_to_first_approval: Summary
    registration_to_approved: Summary
    approvals_per_org: tuple[OrgVotes, ...]
    bucket: str  # "day" or "week"
    buckets: tuple[Bucket, ...]
    deployment_list: tuple[ProdDeployment, ...] = field(repr=False)
    lead_times: tuple[LeadTime, ...] = field(repr=False)
    restores: tuple[Restore, ...] = field(repr=False)
    approval_delays: tuple[ApprovalDelay, ...] = field(repr=False)

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------- commit times from git

def git_commit_time(repo: str | Path = ".") -> Callable[[str], int | None]:
    """commit_time(hexsha) -> committer time (unix seconds) of that commit in the git repository at
    repo, or None when the commit is not there (or there is no git)."""
    cache: dict[str, int | None] = {}

    def lookup(sha: str) -> int | None:
        if sha not in cache:
            try:
                done = subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%ct", f"{sha}^{{commit}}"],
                                      capture_output=True, text=True, timeout=10, check=False)
                cache[sha] = int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else None
            except (OSError, subprocess.SubprocessError):
                cache[sha] = None
        return cache[sha]

    return lookup


def commit_shas(commit: str) -> list[str]:
    """Git SHAs a registered bytes32 commit may stand for: a SHA-1 is stored left-aligned and padded
    with zeros (shipledger.client), a SHA-256 fills all 32 bytes."""
    hexsha = commit.lower().removeprefix("0x")
    if not hexsha.strip("0"):
        return []
    return [hexsha[:40], hexsha] if not hexsha[40:].strip("0") else [hexsha]


# ---------------------------------------------------------------------- the computation

def _in(t: int, since: int | None, until: int | None) -> bool:
    return (since is None or t >= since) and (until is None or t <= until)


def _day(t: int) -> dt.date:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).date()


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def compute(
    events: Iterable,
    *,
    prod_envs: Iterable[str] = DEFAULT_PROD_ENVS,
    service: str | None = None,
    environment: str | None = None,
    since: int | None = None,
    until: int | None = None,
    now: int | None = None,
    commit_time: Callable[[str], int | None] | None = None,
    org_names: dict[int, str] | None = None,
) -> DoraReport:
    """DORA metrics of the production environments (or of `environment` alone when given)."""
    events = list(events)
    envs = (environment,) if environment else tuple(prod_envs)
    until = until if until is not None else (now if now is not None else max((e.timestamp for e in events), default=None))
    orgs = dict(org_names or {})
    registered: dict[tuple[str, str], dict] = {}  # (service, digest) -> ArtifactRegistered fields + timestamp
    started: dict[int, dict] = {}
    completed: dict[int, int] = {}
    failed: set[int] = set()
    rolled_back: set[int] = set()
    suspects: dict[int, list[int]] = {}
    opened: dict[int, dict] = {}
    resolved: dict[int, int] = {}
    votes: list[tuple[str, object]] = []
    for e in events:
        f = e.fields
        if e.kind == "organisation-added":
            orgs[f["org"]] = f["name"]
        elif e.kind == "registered":
            registered[(f["service"], f["digest"])] = {**f, "timestamp": e.timestamp}
        elif e.kind == "deployed" and f["environment"] in envs and (service is None or f["service"] == service):
            started[f["id"]] = {**f, "timestamp": e.timestamp}
        elif e.kind == "completed":
            completed.setdefault(f["id"], e.timestamp)
        elif e.kind == "failed":
            failed.add(f["id"])
        elif e.kind == "rolled-back":
            rolled_back.add(f["id"])
        elif e.kind == "incident-opened":
            for suspect in f["suspects"]:
                suspects.setdefault(suspect, []).append(f["id"])
            if f["environment"] in envs and (service is None or f["service"] == service):
                opened[f["id"]] = {**f, "timestamp": e.timestamp}
        elif e.kind == "incident-resolved":
            resolved.setdefault(f["id"], e.timestamp)
        elif e.kind in ("approved", "rejected") and f["environment"] in envs and (service is None or f["service"] == service):
            votes.append((e.kind, e))

    deployments = []
    for deployment_id, s in started.items():
        record = registered.get((s["service"], s["digest"]), {})
        deployments.append(ProdDeployment(
            id=deployment_id, service=s["service"], environment=s["environment"], digest=s["digest"],
            version=record.get("version", ""), started_at=s["timestamp"], completed_at=completed.get(deployment_id),
            failed=deployment_id in failed, rolled_back=deployment_id in rolled_back,
            incidents=tuple(suspects.get(deployment_id, ())),
        ))
    if since is None and deployments:
        since = min(d.started_at for d in deployments)
    in_period = [d for d in deployments if _in(d.started_at, since, until)]
    done_in_period = [d for d in deployments if d.completed_at is not None and _in(d.completed_at, since, until)]
    period = (until - since + 1) if since is not None and until is not None else 0  # both bounds inclusive
    period_days = max(period / DAY, 1.0)  # a period shorter than a day counts as one day
    per_day = len(done_in_period) / period_days if since is not None else None

    lead_times, left_out = _lead_times(deployments, registered, since, until, commit_time)
    restores = tuple(
        Restore(incident=i, service=o["service"], environment=o["environment"], severity=o["severity"], title=o["title"],
                opened_at=o["timestamp"], resolved_at=resolved.get(i),
                seconds=resolved[i] - o["timestamp"] if i in resolved else None)
        for i, o in opened.items() if _in(o["timestamp"], since, until)
    )
    delays = _approval_delays(votes, registered, deployments, since, until)
    bucket, buckets = _buckets(done_in_period, since, until)
    linked = sum(1 for d in in_period if d.incidents)
    failures = sum(1 for d in in_period if d.change_failure)
    backs = sum(1 for d in in_period if d.rolled_back)
    return DoraReport(
        service=service, environments=envs, since=since, until=until, period_days=period_days,
        deployments=len(in_period), completed=len(done_in_period), failed=sum(1 for d in in_period if d.failed),
        rolled_back=backs, linked_to_incidents=linked, change_failures=failures,
        change_failure_rate=_rate(failures, len(in_period)), rollback_rate=_rate(backs, len(in_period)),
        deployments_per_day=per_day, deployments_per_week=per_day * 7 if per_day is not None else None,
        lead_time=Summary.of(lt.seconds for lt in lead_times),
        lead_time_from_git=sum(1 for lt in lead_times if lt.source == "git"),
        lead_time_left_out=sum(left_out.values()), lead_time_left_out_reasons=left_out,
        time_to_restore=Summary.of(r.seconds for r in restores if r.seconds is not None),
        unresolved_incidents=sum(1 for r in restores if r.seconds is None),
        registration_to_first_approval=Summary.of(d.first_approval for d in delays),
        registration_to_approved=Summary.of(d.approved for d in delays if d.approved is not None),
        approvals_per_org=_org_votes(votes, orgs, since, until),
        bucket=bucket, buckets=buckets, deployment_list=tuple(in_period), lead_times=tuple(lead_times),
        restores=restores, approval_delays=tuple(delays),
    )


def _lead_times(deployments, registered, since, until, commit_time):
    """Per artifact, commit time -> completion of its first production deployment (if that falls in
    the period). Returns (lead times, {reason: artifacts left out})."""
    first: dict[tuple[str, str], ProdDeployment] = {}
    for d in sorted((d for d in deployments if d.completed_at is not None), key=lambda d: d.completed_at):
        first.setdefault((d.service, d.digest), d)
    out, left_out = [], {}
    for key, d in first.items():
        if not _in(d.completed_at, since, until):
            continue
        record = registered.get(key)
        committed, source = (record or {}).get("committedAt", 0), "ledger"
        if record and not committed and commit_time is not None:
            source = "git"
            committed = next((t for t in (commit_time(sha) for sha in commit_shas(record["commit"])) if t), 0)
        reason = None
        if record is None:
            reason = "registration not in the index"
        elif not committed:
            reason = "no commit time on the ledger and commit not in the local git repository" if commit_time \
                else "no commit time on the ledger"
        elif committed > d.completed_at:
            reason = "commit time after the deployment"
        if reason:
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        out.append(LeadTime(service=d.service, version=d.version, digest=d.digest, deployment=d.id, committed_at=committed,
                            completed_at=d.completed_at, seconds=d.completed_at - committed, source=source))
    return out, left_out


def _approval_delays(votes, registered, deployments, since, until) -> list[ApprovalDelay]:
    first_start: dict[tuple[str, str, str], int] = {}
    for d in deployments:
        key = (d.service, d.digest, d.environment)
        first_start[key] = min(first_start.get(key, d.started_at), d.started_at)
    approvals: dict[tuple[str, str, str], list[int]] = {}
    for kind, e in votes:
        if kind == "approved":
            f = e.fields
            approvals.setdefault((f["service"], f["digest"], f["environment"]), []).append(e.timestamp)
    out = []
    for (svc, digest, env), times in approvals.items():
        record = registered.get((svc, digest))
        if record is None or not _in(min(times), since, until):
            continue
        start = first_start.get((svc, digest, env))
        before = [t for t in times if start is not None and t <= start]
        out.append(ApprovalDelay(
            service=svc, version=record["version"], digest=digest, environment=env,
            first_approval=min(times) - record["timestamp"],
            approved=max(before) - record["timestamp"] if before else None,
        ))
    return out


def _org_votes(votes, orgs: dict[int, str], since, until) -> tuple[OrgVotes, ...]:
    counts: dict[int, list[int]] = {}
    for kind, e in votes:
        if _in(e.timestamp, since, until):
            counts.setdefault(e.fields["org"], [0, 0])[0 if kind == "approved" else 1] += 1
    return tuple(OrgVotes(org, orgs.get(org, f"org {org}"), a, r) for org, (a, r) in sorted(counts.items()))


def _buckets(done: list[ProdDeployment], since, until) -> tuple[str, tuple[Bucket, ...]]:
    """Completed deployments per UTC day (periods up to 60 days) or per ISO week (Monday), every
    bucket of the period present, empty ones too, so a chart shows the gaps."""
    if since is None or until is None:
        return "day", ()
    by_week = (until - since) > 60 * DAY
    def start_of(t: int) -> dt.date:
        day = _day(t)
        return day - dt.timedelta(days=day.weekday()) if by_week else day
    step = dt.timedelta(days=7 if by_week else 1)
    counts: dict[dt.date, list[int]] = {}
    day, last = start_of(since), start_of(until)
    while day <= last:
        counts[day] = [0, 0]
        day += step
    for d in done:
        slot = counts.setdefault(start_of(d.completed_at), [0, 0])
        slot[0] += 1
        slot[1] += d.change_failure
    return ("week" if by_week else "day"), tuple(Bucket(k.isoformat(), c, f) for k, (c, f) in sorted(counts.items()))


# ---------------------------------------------------------------------- from the index

def org_names(index) -> dict[int, str]:
    rows = index.db.execute("SELECT args FROM events WHERE event = 'OrganisationAdded'").fetchall()
    import json

    return {a["org"]: a["name"] for a in (json.loads(r["args"]) for r in rows)}


def index_now(index) -> int | None:
    """Chain time of the newest block the index has seen (its checkpoint)."""
    row = index.db.execute("SELECT max(timestamp) AS t FROM blocks").fetchone()
    return row["t"] if row else None


def from_index(index, *, service: str | None = None, **options) -> DoraReport:
    """compute() over an Index: the service's history (or all of it) plus organisation names."""
    events = index.history(service=service) if service else index.history()
    options.setdefault("now", index_now(index))
    return compute(events, service=service, org_names=org_names(index), **options)


"""/metrics in Prometheus' text format, written out here (no client library: ten families).

Deployment states and open incidents come from the index; gate answers and relay submissions are
this process's counters since it started; the oldest pending approval per target is from the
releases the Inbox shows (held by a vote reason at the current block).
"""

from __future__ import annotations

import time
from collections import Counter

from shipledger.errors import ShipledgerError

STATES = ("in_progress", "completed", "failed", "rolled_back")
DRIFT_KINDS = ("unregistered", "revoked", "unexpected", "live_not_running")


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(lines: list[str], name: str, kind: str, help_text: str, samples) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")


def deployment_states(db) -> dict[str, int]:
    """Deployments by their state after the newest lifecycle event the index holds."""
    rows = db.execute(
        "SELECT s.id, CASE WHEN EXISTS (SELECT 1 FROM deployment_rolled_back r WHERE r.id = s.id) THEN 'rolled_back'"
        " WHEN EXISTS (SELECT 1 FROM deployment_failed f WHERE f.id = s.id) THEN 'failed'"
        " WHEN EXISTS (SELECT 1 FROM deployment_completed c WHERE c.id = s.id) THEN 'completed'"
        " ELSE 'in_progress' END FROM deployment_started s").fetchall()
    counts = dict.fromkeys(STATES, 0)
    for _, state in rows:
        counts[state] += 1
    return counts


def open_incidents(db) -> dict[int, int]:
    rows = db.execute("SELECT severity, count(*) FROM incident_opened o WHERE NOT EXISTS "
                      "(SELECT 1 FROM incident_resolved r WHERE r.id = o.id) GROUP BY severity").fetchall()
    return {int(severity): count for severity, count in rows}


def render(state) -> str:
    db = state.reader_db().db
    lines: list[str] = []
    _family(lines, "shipledger_deployments", "gauge", "Deployments by state (from the index).",
            [({"state": s}, n) for s, n in deployment_states(db).items()])
    _family(lines, "shipledger_gate_answers_total", "counter", "Answers of /v1/gate by reason (unknown: 503).",
            [({"reason": r}, n) for r, n in sorted(state.gate_answers.items())])
    try:
        block, waiting = state.waiting()
        oldest: dict[tuple[str, str], int] = {}
        for w in waiting:
            key = (w["service"], w["environment"])
            oldest[key] = min(oldest.get(key, w["registered_at"]), w["registered_at"])
        now = time.time()
        pending = [({"service": s, "environment": e}, round(max(0.0, now - t), 3)) for (s, e), t in sorted(oldest.items())]
    except ShipledgerError:
        pending = []  # the head is unknown: no answer rather than a stale one
    _family(lines, "shipledger_pending_approval_oldest_seconds", "gauge",
            "Age of the oldest release waiting for votes, per target.", pending)
    _family(lines, "shipledger_open_incidents", "gauge", "Open incidents by severity (from the index).",
            [({"severity": s}, n) for s, n in sorted(open_incidents(db).items())])
    lag, age = state.index_lag(), state.block_age()
    _family(lines, "shipledger_index_lag_blocks", "gauge", "Blocks the index trails the chain head.",
            [({}, lag)] if lag is not None else [])
    _family(lines, "shipledger_newest_block_age_seconds", "gauge", "Age of the newest block the server has seen.",
            [({}, round(age, 3))] if age is not None else [])
    _family(lines, "shipledger_relay_submissions_total", "counter", "POST /v1/relay requests by outcome.",
            [({"outcome": o}, n) for o, n in sorted(state.relay_outcomes.items())])
    _family(lines, "shipledger_admission_reviews_total", "counter", "Admission reviews answered, by decision.",
            [({"decision": d}, n) for d, n in sorted(state.admission_answers.items())])
    try:
        drift = Counter(f.kind for f in state.observed.findings(state)) if state.observed.sources else Counter()
        drift_samples = [({"kind": k}, drift.get(k, 0)) for k in DRIFT_KINDS] if state.observed.sources else []
    except ShipledgerError:
        drift_samples = []  # the head is unknown: no answer rather than a stale one
    _family(lines, "shipledger_drift_findings", "gauge", "Drift findings over the posted observations, by kind.", drift_samples)
    _family(lines, "shipledger_observations", "gauge", "Observations of what runs, by source.",
            [({"source": s}, len(o)) for s, o in sorted(state.observed.sources.items())])
    return "\n".join(lines) + "\n"

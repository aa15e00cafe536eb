"""`shipledger trace`: the chain of custody of one artifact, read from the index's record tables.

Every step carries its block, log index and transaction hash, so each line can be checked on the
chain. Incidents join the trace when they name one of the artifact's deployments as a suspect, or
when they were opened on a target while one of its deployments was rolling out or live there (the
windows are rebuilt from the target's completions and rollbacks, not guessed from times).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from shipledger.errors import UsageError
from shipledger.models import ArtifactKind, DeploymentStatus, Verdict

ZERO32 = "0x" + "0" * 64

# Lookups trace makes beyond the indexes the index module creates (digest, id, approver, org, account).
TRACE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS trace_rolled_back_restored ON deployment_rolled_back (restored)",
    "CREATE INDEX IF NOT EXISTS trace_completed_target ON deployment_completed (service, environment, block_number, log_index)",
    "CREATE INDEX IF NOT EXISTS trace_rolled_back_target ON deployment_rolled_back (service, environment, block_number, log_index)",
    "CREATE INDEX IF NOT EXISTS trace_incident_target ON incident_opened (service, environment, block_number, log_index)",
)


@dataclass(frozen=True)
class Step:
    """One line of the chain of custody."""

    kind: str  # the event kind (see models.EVENT_KINDS), or "restored" for a rollback that made it live again
    block_number: int
    log_index: int
    tx_hash: str
    timestamp: int
    environment: str
    summary: str  # one sentence
    actor: str = ""  # the account that sent it: registrant, approver, deployer, responder...
    deployment: int | None = None
    incident: int | None = None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactTrace:
    digest: str  # sha256:<hex>
    service: str
    version: str
    kind: str  # build, image, config or infrastructure
    registrant: str
    commit: str  # hex SHA ('' if none was recorded)
    committed_at: int
    provenance: str  # sha256:<hex> or ''
    sbom: str
    uri: str
    registered_block: int
    registered_tx: str
    revoked: bool
    steps: list[Step]
    record_hash: str = ""  # the registry's identity of the whole record (recordOf)
    attestations: list = field(default_factory=list)  # {"type", "document_digest", "uri", "attestor", "block_number"}


def ensure_indexes(db) -> None:
    for statement in TRACE_INDEXES:
        db.execute(statement)


def _sha(value: str | None) -> str:
    """A bytes32 digest column as 'sha256:<hex>', '' for none."""
    return "" if not value or value == ZERO32 else "sha256:" + value[2:]


def _commit(value: str | None) -> str:
    """The commit column: a git SHA-1 is stored left-aligned in 32 bytes."""
    if not value or value == ZERO32:
        return ""
    hex_digits = value[2:]
    return hex_digits[:40] if hex_digits[40:] == "0" * 24 else hex_digits


def _short(address: str) -> str:
    return address[:10]


def _position(row) -> tuple[int, int]:
    return row["block_number"], row["log_index"]


def _status(value: int) -> str:
    return DeploymentStatus(value).name.lower().replace("_", " ")


def trace(db, digest: str, service: str) -> ArtifactTrace:
    """The custody of `digest` ('0x' + 64 hex, as the index stores it) for `service`."""
    ensure_indexes(db)
    registered = db.execute(
        "SELECT * FROM artifact_registered WHERE digest = ? AND service = ?", (digest, service)).fetchone()
    if registered is None:
        raise UsageError(f"sha256:{digest[2:]} is not registered for {service} (as far as the index has synced)")
    organisations = {r["org"]: r["name"] for r in db.execute("SELECT org, name FROM organisation_added")}
    steps: list[Step] = []

    def step(kind, row, summary, *, environment="", actor="", deployment=None, incident=None, **details):
        steps.append(Step(kind=kind, block_number=row["block_number"], log_index=row["log_index"], tx_hash=row["tx_hash"],
                          timestamp=row["timestamp"], environment=environment, summary=summary, actor=actor,
                          deployment=deployment, incident=incident, details=details))

    r = registered
    commit = _commit(r["commit"])
    parts = [f"commit {commit[:12]}" if commit else "no commit recorded"]
    if r["committed_at"]:
        committed = datetime.fromtimestamp(r["committed_at"], timezone.utc).isoformat(timespec="seconds")
        parts.append(f"committed {committed}")
    parts += [f"{name} {_sha(r[name])[:19]}.." for name in ("provenance", "sbom") if _sha(r[name])]
    artifact_kind = _kind(r["kind"])
    step("registered", r, f"{service} {r['version']} ({artifact_kind}) registered by {r['registrant']} ({', '.join(parts)})",
         actor=r["registrant"], version=r["version"], artifact_kind=artifact_kind, commit=commit, committed_at=r["committed_at"],
         provenance=_sha(r["provenance"]), sbom=_sha(r["sbom"]), uri=r["uri"], record_hash=r["record_hash"])
    attestations = []
    for r in db.execute("SELECT * FROM attestation_recorded WHERE digest = ? AND service = ?", (digest, service)):
        attestations.append({"type": r["attestation_type"], "document_digest": _sha(r["document_digest"]), "uri": r["uri"],
                             "attestor": r["attestor"], "block_number": r["block_number"]})
        step("attested", r, f"{r['attestation_type']} attestation {_sha(r['document_digest'])[:19]}.. recorded by"
             f" {r['attestor']}" + (f" ({r['uri']})" if r["uri"] else ""), actor=r["attestor"],
             attestation_type=r["attestation_type"], document_digest=_sha(r["document_digest"]), uri=r["uri"])

    # ------------------------------------------------------------ votes and revocation
    key = (digest, service)
    for kind, table, note in (("approved", "artifact_approved", "comment"), ("rejected", "artifact_rejected", "reason")):
        for r in db.execute(f"SELECT * FROM {table} WHERE digest = ? AND service = ?", key):
            organisation = organisations.get(r["org"], f"org {r['org']}")
            signed_at = datetime.fromtimestamp(r["signed_at"], timezone.utc).isoformat(timespec="seconds")
            how = (f"an EIP-712 signature signed at {signed_at} (nonce {r['nonce']}, submitted by {r['submitter']})"
                   if r["by_signature"] else "a transaction")
            text = (f"{kind} for {r['environment']} by {r['approver']} ({organisation}) with {how},"
                    f" under policy version {r['policy_version']}" + (f": {r[note]}" if r[note] else ""))
            step(kind, r, text, environment=r["environment"], actor=r["approver"], organisation=organisation,
                 org=r["org"], by_signature=bool(r["by_signature"]), policy_version=r["policy_version"], note=r[note],
                 signed_at=r["signed_at"], nonce=int(r["nonce"]), deadline=r["deadline"], submitter=r["submitter"])
    # A skipped signed vote names the digest, not the service (its signature may not even verify),
    # so every skip for this digest is shown.
    for r in db.execute("SELECT * FROM signed_vote_skipped WHERE digest = ?", (digest,)):
        reason = SKIP_REASONS.get(r["reason"], str(r["reason"]))
        step("vote-skipped", r, f"a signed vote by {r['signer']} (nonce {r['nonce']}, submitted by {r['submitter']})"
             f" was skipped: {reason}", actor=r["signer"], reason=reason, nonce=int(r["nonce"]), submitter=r["submitter"])
    for r in db.execute("SELECT * FROM vote_withdrawn WHERE digest = ? AND service = ?", key):
        previous = {1: "approval", 2: "rejection"}.get(r["previous"], "vote")
        step("withdrawn", r, f"{r['approver']} withdrew their {previous} for {r['environment']}",
             environment=r["environment"], actor=r["approver"], previous=previous)
    revoked = False
    for r in db.execute("SELECT * FROM artifact_revoked WHERE digest = ? AND service = ?", key):
        revoked = True
        step("revoked", r, f"revoked by {r['revoker']}: {r['reason']}", actor=r["revoker"], reason=r["reason"])

    # ------------------------------------------------------------ deployments
    started = db.execute("SELECT * FROM deployment_started WHERE digest = ? AND service = ?", key).fetchall()
    ids = [r["id"] for r in started]
    ends: dict[int, tuple[int, int]] = {}  # deployment id -> where its rollout stopped
    live_from: list[tuple[str, int, tuple[int, int]]] = []  # (environment, deployment, position it became live)
    for r in started:
        replacing = f", replacing deployment {r['previous']}" if r["previous"] else ""
        step("deployed", r, f"deployment {r['id']} started in {r['environment']} at {r['percent']}% by"
             f" {r['deployer']}{replacing}", environment=r["environment"], actor=r["deployer"], deployment=r["id"],
             percent=r["percent"], previous=r["previous"])
    marks = ",".join("?" * len(ids))
    if ids:
        for r in db.execute(f"SELECT * FROM deployment_promoted WHERE id IN ({marks})", ids):
            step("promoted", r, f"deployment {r['id']} promoted from {r['from_percent']}% to {r['to_percent']}%",
                 environment=r["environment"], actor=r["deployer"], deployment=r["id"],
                 from_percent=r["from_percent"], to_percent=r["to_percent"])
        for r in db.execute(f"SELECT * FROM canary_analysis_recorded WHERE id IN ({marks})", ids):
            verdict = Verdict(r["verdict"]).name.lower()
            report = _sha(r["report_digest"])
            text = (f"canary verdict on deployment {r['id']} at {r['percent']}%: {verdict}, score"
                    f" {r['score_basis_points'] / 100:.2f}" + (f", report {report[:19]}.." if report else "")
                    + (f" (judge {r['judge']})" if r["judge"] else ""))
            step("canary-verdict", r, text, environment=r["environment"], actor=r["recorder"], deployment=r["id"],
                 percent=r["percent"], score=r["score_basis_points"] / 100, verdict=verdict, report_digest=report,
                 report_uri=r["report_uri"], judge=r["judge"])
        for r in db.execute(f"SELECT * FROM deployment_completed WHERE id IN ({marks})", ids):
            ends[r["id"]] = _position(r)
            live_from.append((r["environment"], r["id"], _position(r)))
            replacing = f" (replacing deployment {r['replaced']})" if r["replaced"] else ""
            step("completed", r, f"deployment {r['id']} completed: live in {r['environment']}{replacing}",
                 environment=r["environment"], actor=r["deployer"], deployment=r["id"], replaced=r["replaced"])
        for r in db.execute(f"SELECT * FROM deployment_failed WHERE id IN ({marks})", ids):
            ends[r["id"]] = _position(r)
            step("failed", r, f"deployment {r['id']} failed: {r['reason']}", environment=r["environment"],
                 actor=r["deployer"], deployment=r["id"], reason=r["reason"])
        for r in db.execute(f"SELECT * FROM deployment_rolled_back WHERE id IN ({marks})", ids):
            ends.setdefault(r["id"], _position(r))  # a rollout rolled back before it completed
            restored = f"deployment {r['restored']} live again" if r["restored"] else "nothing live any more"
            step("rolled-back", r, f"deployment {r['id']} rolled back from {_status(r['from_status'])}: {restored}:"
                 f" {r['reason']}", environment=r["environment"], actor=r["deployer"], deployment=r["id"],
                 restored=r["restored"], from_status=_status(r["from_status"]), reason=r["reason"])
        for r in db.execute(f"SELECT * FROM deployment_rolled_back WHERE restored IN ({marks})", ids):
            live_from.append((r["environment"], r["restored"], _position(r)))
            if r["id"] not in ids:  # the rollback of another artifact that made this one live again
                step("restored", r, f"deployment {r['id']} (another artifact) rolled back: deployment {r['restored']}"
                     f" of this artifact is live again: {r['reason']}", environment=r["environment"],
                     actor=r["deployer"], deployment=r["restored"], rolled_back=r["id"], reason=r["reason"])

    # ------------------------------------------------------------ incidents
    incidents: dict[int, tuple[object, str]] = {}  # incident id -> (row, why it is part of this trace)
    if ids:
        rows = db.execute(
            f"SELECT * FROM incident_opened WHERE EXISTS (SELECT 1 FROM json_each(incident_opened.suspects)"
            f" WHERE value IN ({marks}))", ids)
        for r in rows:
            named = [i for i in ids if i in _suspects(r["suspects"])]
            incidents[r["id"]] = (r, "names deployment " + ", ".join(map(str, named)) + " as suspect")
    windows = [(r["environment"], r["id"], "rolling out", _position(r), ends.get(r["id"])) for r in started]
    for environment, deployment, begin in live_from:
        windows.append((environment, deployment, "live", begin, _next_live_change(db, service, environment, begin)))
    for environment, deployment, state, begin, end in windows:
        sql = ("SELECT * FROM incident_opened WHERE service = ? AND environment = ?"
               " AND (block_number, log_index) > (?, ?)")
        params = [service, environment, *begin]
        if end is not None:
            sql += " AND (block_number, log_index) < (?, ?)"
            params += list(end)
        for r in db.execute(sql, params):
            incidents.setdefault(r["id"], (r, f"opened while deployment {deployment} was {state} there"))
    for r, why in incidents.values():
        step("incident-opened", r, f"incident {r['id']} (severity {r['severity']}) opened in {r['environment']}:"
             f" {r['title']}; it {why}", environment=r["environment"], actor=r["responder"], incident=r["id"],
             severity=r["severity"], title=r["title"], suspects=_suspects(r["suspects"]), relation=why)
    if incidents:
        marks = ",".join("?" * len(incidents))
        follow_ups = (
            ("incident-acknowledged", "incident_acknowledged", lambda r: f"incident {r['id']} acknowledged"),
            ("incident-mitigated", "incident_mitigated", lambda r: f"incident {r['id']} mitigated"
             + (f" by the rollback of deployment {r['rollback_id']}" if r["rollback_id"] else "")),
            ("incident-resolve-approved", "incident_resolve_approved", lambda r: f"incident {r['id']} resolution"
             f" approved by {r['responder']} (org {r['org']}): {r['organisations']} of {r['needed']} organisations"),
            ("incident-resolved", "incident_resolved", lambda r: f"incident {r['id']} resolved"
             + (f", postmortem {_sha(r['postmortem_digest'])[:19]}.." if _sha(r["postmortem_digest"]) else "")),
            ("postmortem", "postmortem_attached", lambda r: f"postmortem of incident {r['id']} attached:"
             f" {_sha(r['digest'])[:19]}.." + (f" ({r['uri']})" if r["uri"] else "")),
        )
        for kind, table, text in follow_ups:
            for r in db.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", list(incidents)):
                step(kind, r, text(r), environment=r["environment"], actor=r["responder"], incident=r["id"])

    steps.sort(key=lambda s: (s.block_number, s.log_index))
    reg = registered
    return ArtifactTrace(
        digest="sha256:" + digest[2:], service=service, version=reg["version"], kind=artifact_kind, registrant=reg["registrant"],
        commit=commit, committed_at=reg["committed_at"], provenance=_sha(reg["provenance"]), sbom=_sha(reg["sbom"]),
        uri=reg["uri"], registered_block=reg["block_number"], registered_tx=reg["tx_hash"], revoked=revoked, steps=steps,
        record_hash=reg["record_hash"], attestations=attestations,
    )


SKIP_REASONS = {1: "bad_signature", 2: "not_approver", 3: "nonce_used", 4: "expired", 5: "stale",
                6: "signed_in_future", 7: "refused"}


def _kind(value) -> str:
    try:
        return ArtifactKind(int(value)).name.lower()
    except ValueError:
        return str(value)


def _suspects(value) -> list[int]:
    return [int(v) for v in json.loads(value or "[]")]


def _next_live_change(db, service: str, environment: str, after: tuple[int, int]) -> tuple[int, int] | None:
    """Where the live deployment of a target next changed after `after`: another completion, or the
    rollback of a completed deployment (rolling back an unfinished rollout leaves live alone)."""
    after_in_target = "WHERE service = ? AND environment = ? AND (block_number, log_index) > (?, ?)"
    first = " ORDER BY block_number, log_index LIMIT 1"
    completed = int(DeploymentStatus.COMPLETED)
    candidates = []
    for sql in (
        f"SELECT block_number, log_index FROM deployment_completed {after_in_target}{first}",
        f"SELECT block_number, log_index FROM deployment_rolled_back {after_in_target} AND from_status = {completed}{first}",
    ):
        row = db.execute(sql, (service, environment, *after)).fetchone()
        if row is not None:
            candidates.append(_position(row))
    return min(candidates) if candidates else None

"""What compliance teams read: `status`, `history`, `index sync`, `trace`, `audit`, `export`,
`verify-export` and `report` (shipledger/compliance/)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from shipledger.cli import EXIT_DENIED, EXIT_OK, emit, say
from shipledger.cli.shared import (
    DEFAULT_BOOK, ENV_HELP, SERVICE_HELP, address, artifact_args, artifact_digest, book_path, counted, index_args,
    index_source, output_path, positive_int, prior_environment_name, rpc_url, shown, sync_index,
    synced_index,
)
from shipledger.errors import AddressBookError, UsageError, gate_sentence, role_name
from shipledger.models import ArtifactKind, Verdict


PENDING_SHOWN = 5  # newest registrations listed under "pending approvals"


def status_data(source, service: str, env: str, open_index) -> dict:
    """What `status` shows (and the server's /v1/status): the target's live and rolling deployments,
    open incidents, policy and pending approvals. source: an index Endpoint; open_index() returns the
    index to read, called after the contracts' state is read (the CLI syncs it there)."""
    from shipledger._internal.gatecall import decode_gate_result, encode_gate_call
    from shipledger._internal.names import format_digest
    from shipledger._internal.reader import Reader
    from shipledger.models import Deployment, Incident, Policy

    # The current state from the contracts' getters (O(1) calls, batched, without web3: its imports
    # alone cost more than the rest); what happened before (versions, the artifact each deployment
    # started with, what was never deployed here) from the index. The state is read before the
    # sync, so the synced index holds every deployment it names.
    reader = Reader(source)
    [(live, active)] = reader.calls([("DeploymentLedger", "targetState", [service, env])])
    index = open_index()
    try:
        releases = {i: index.started_release(i) or ("", "") for i in (live, active) if i}
        never_started = index.never_started(service, env, PENDING_SHOWN)
        # The ledger counts open incidents per severity (O(1)) and keeps no list of them: which ones
        # are open comes from the index, each then read from the chain (a resolution after the sync shows).
        maybe_open = index.open_incidents(service, env)
    finally:
        index.close()
    ids = list(releases)
    *deployments, counts, policy = reader.calls(
        [("DeploymentLedger", "getDeployment", [i]) for i in ids]
        + [("DeploymentLedger", "openIncidentCounts", [service, env]), ("ReleaseRegistry", "getPolicy", [service, env])],
        none_on=("PolicyNotFound",))
    incidents = reader.calls([("DeploymentLedger", "getIncident", [i]) for i in maybe_open])
    gates = reader.raw([("DeploymentLedger", encode_gate_call(bytes.fromhex(d[2:]), service, env)) for d, _ in never_started])

    def digest_text(digest: str) -> str:
        return format_digest(bytes.fromhex(digest[2:])) if digest else ""

    described = {i: {**asdict(Deployment.from_call(i, raw)), "digest": digest_text(releases[i][0]), "version": releases[i][1]}
                 for i, raw in zip(ids, deployments)}
    policy = Policy.from_call(service, env, policy) if policy is not None else None
    # The chain keeps the prior environment's hash; its name comes from the PolicySet event.
    prior = prior_environment_name(source, service, env, policy.prior_environment_key) if policy and policy.prior_environment_key else ""
    policy_json = {**asdict(policy), "prior_environment": prior} if policy else None
    # Pending: registered, never started here; each with what the gate says now.
    pending = []
    for (digest, version), answer in zip(never_started, gates):
        gate = decode_gate_result(answer)
        details = {**gate.details, "environment": prior} if prior and "environment_key" in gate.details else gate.details
        pending.append({"digest": digest_text(digest), "version": version, "allowed": gate.allowed, "reason": gate.reason,
                        "details": details})
    incidents = [asdict(Incident.from_call(i, raw)) for i, raw in zip(maybe_open, incidents)]
    incidents = [i for i in incidents if i["status"] != "resolved"]
    by_severity = {str(severity): int(n) for severity, n in enumerate(counts, 1)}
    return {"service": service, "environment": env, "live": described.get(live), "active": described.get(active),
            "open_incidents": incidents, "open_incident_counts": by_severity, "pending_approvals": pending,
            "policy": policy_json}


def cmd_status(args) -> int:
    from shipledger._internal.names import check_name

    service, env = check_name("service", args.service), check_name("environment", args.env)
    source = index_source(args)
    data = status_data(source, service, env, lambda: synced_index(args, source))
    policy = data["policy"]
    incidents = data["open_incidents"]
    pending = data["pending_approvals"]
    if args.json:
        emit(args, data)
        return EXIT_OK
    live, active = data["live"], data["active"]
    lines = [
        f"{args.service} in {args.env}",
        f"  live:      {'%s (deployment %d)' % (live['version'], live['id']) if live else 'nothing'}",
        f"  rolling:   {'%s (deployment %d) at %d%%' % (active['version'], active['id'], active['percent']) if active else 'nothing'}",
        f"  incidents: {', '.join('#%d sev%d %s' % (i['id'], i['severity'], i['status']) for i in incidents) or 'none open'}",
        f"  policy:    {'version %d' % policy['version'] if policy else 'none (everything denied)'}"
        + (f", after a deployment to {policy['prior_environment']}" if policy and policy['prior_environment_key'] else ""),
    ] + [f"  pending:   {p['version']} {p['digest'][:19]}.. {'ready' if p['allowed'] else gate_sentence(p['reason'], p['details'])}"
         for p in pending]
    for line in lines:  # versions are free text from the chain
        print(shown(line))
    return EXIT_OK


HISTORY_COLUMNS = ("block", "time", "kind", "service", "environment", "summary", "tx")


def _summary(event) -> str:
    f = event.fields
    pick = {
        "deployed": lambda: f"#{f['id']} at {f['percent']}%",
        "promoted": lambda: f"#{f['id']} {f['fromPercent']}% -> {f['toPercent']}%",
        "canary-verdict": lambda: f"#{f['id']} score {f['scoreBasisPoints'] / 100:.1f} {Verdict(f['verdict']).name.lower()}",
        "completed": lambda: f"#{f['id']} live",
        "rolled-back": lambda: f"#{f['id']} -> #{f['restored']}: {f['reason']}",
        "incident-opened": lambda: f"#{f['id']} sev{f['severity']}: {f['title']}",
        "incident-acknowledged": lambda: f"#{f['id']} by {f['responder'][:10]}",
        "incident-mitigated": lambda: f"#{f['id']}" + (f" by rollback of #{f['rollbackId']}" if f["rollbackId"] else ""),
        "incident-resolved": lambda: f"#{f['id']}" + (f" postmortem {f['postmortemUri']}" if f["postmortemUri"] else ""),
        "failed": lambda: f"#{f['id']}: {f['reason']}",
        "revoked": lambda: f"sha256:{f['digest'][2:14]}..: {f['reason']}",
        "role-granted": lambda: f"{role_name(bytes.fromhex(f['role'][2:]))} to {f['account']}",
        "role-revoked": lambda: f"{role_name(bytes.fromhex(f['role'][2:]))} from {f['account']}",
        "policy-set": lambda: f"version {f['newPolicy']['version']}: {counted(f['newPolicy']['threshold'], 'approval')}, "
                              f"{counted(f['newPolicy']['minOrganisations'], 'org')}"
                              + (f", requires {', '.join(f['requiredAttestations'])}" if f["requiredAttestations"] else ""),
        "registered": lambda: f"{f['version']} ({ARTIFACT_KIND_NAMES.get(f['kind'], f['kind'])}) sha256:{f['digest'][2:14]}.. "
                              f"by {f['registrant'][:10]}",
        "approved": lambda: f"by {f['approver'][:10]} (org {f['org']})" + _signed(f),
        "rejected": lambda: f"by {f['approver'][:10]}{_signed(f)}: {f['reason']}",
        "attested": lambda: f"{f['attestationType']} for sha256:{f['digest'][2:14]}.. by {f['attestor'][:10]}",
        "vote-skipped": lambda: f"vote of {f['signer'][:10]} (nonce {f['nonce']}) skipped: "
                                f"{SKIP_REASON_NAMES.get(f['reason'], f['reason'])}",
        "incident-resolve-approved": lambda: f"#{f['id']} by {f['responder'][:10]} (org {f['org']}): "
                                             f"{f['organisations']} of {f['needed']} organisations",
        "postmortem": lambda: f"#{f['id']} {f['uri'] or 'sha256:' + f['digest'][2:14] + '..'}",
        "proposal-created": lambda: f"#{f['id']} by {f['proposer'][:10]} (org {f['org']})",
        "proposal-approved": lambda: f"#{f['id']} by org {f['org']}: {f['approvals']} of {f['needed']}",
        "proposal-scheduled": lambda: f"#{f['id']} {'weakening, executable at ' + str(f['executableAt']) if f['weakening'] else 'tightening'}",
        "proposal-executed": lambda: f"#{f['id']}",
        "proposal-cancelled": lambda: f"#{f['id']} by org {f['org']}",
        "governance-settings": lambda: f"K {f['oldOrganisationsNeeded']} -> {f['newOrganisationsNeeded']}, "
                                       f"delay {f['oldDelay']} -> {f['newDelay']} s",
        "scoped-role-granted": lambda: f"{role_name(bytes.fromhex(f['role'][2:]))}{' for ' + f['scope'] if f['scope'] else ''} to {f['account']}",
        "scoped-role-revoked": lambda: f"{role_name(bytes.fromhex(f['role'][2:]))}{' for ' + f['scope'] if f['scope'] else ''} from {f['account']}",
    }.get(event.kind)
    return pick() if pick else ", ".join(f"{k}={v}" for k, v in f.items() if not k.endswith("Key"))[:80]


ARTIFACT_KIND_NAMES = {int(k): k.name.lower() for k in ArtifactKind}
# SignedVoteSkipped reasons, as client.SKIP_REASONS names them (the client's import is too heavy here)
SKIP_REASON_NAMES = {1: "bad_signature", 2: "not_approver", 3: "nonce_used", 4: "expired", 5: "stale",
                     6: "signed_in_future", 7: "refused"}


def _signed(f: dict) -> str:
    """How a vote came: a signature names when it was signed and who submitted it."""
    if not f["bySignature"]:
        return ""
    return f" signed at {f['signedAt']} (nonce {f['nonce']}, submitted by {f['submitter'][:10]})"


def _query(args):
    """The history filters given on the command line (shared with `shipledger serve`)."""
    from shipledger.compliance.filters import HistoryQuery

    return HistoryQuery(service=args.service, environment=args.env, digest=args.digest, approver=args.approver,
                        org=args.org, kinds=tuple(args.kind) if args.kind is not None else None,
                        since=args.since, until=args.until)


def cmd_history(args) -> int:
    import datetime as dt

    from shipledger.compliance.filters import check_org

    filters = _query(args).filters()
    index = synced_index(args)
    try:
        check_org(index, filters["org"])
        events = index.history(**filters)
    finally:
        index.close()
    rows = [{
        "block": e.block_number, "time": dt.datetime.fromtimestamp(e.timestamp, dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": e.kind, "service": e.service, "environment": e.environment, "summary": _summary(e),
        "tx": e.tx_hash, "log_index": e.log_index, "fields": e.fields,
    } for e in events]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps({"events": rows}))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(HISTORY_COLUMNS)
        for r in rows:
            writer.writerow([r[c] for c in HISTORY_COLUMNS])
        sys.stdout.write(out.getvalue())
    else:
        print(f"{'block':>6}  {'time':25}  {'kind':22}  {'service':12}  {'env':8}  summary")
        for r in rows:  # one row per line, whatever the names and free text on chain hold
            print(shown(f"{r['block']:>6}  {r['time']:25}  {r['kind']:22}  {r['service']:12}  {r['environment']:8}  {r['summary']}"))
    return EXIT_OK


def cmd_index_sync(args) -> int:
    from dataclasses import asdict as as_dict

    from shipledger.compliance.index import DEFAULT_DB, Index

    source = index_source(args)
    index = Index.open(args.db or DEFAULT_DB)
    try:
        result = sync_index(index, source, args, args.confirmations)
        checkpoint = index.meta().get("checkpoint_block")
        total = index.db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        index.close()
    rewound = f"; the chain had changed, rewound from block {result.rewound_from}" if result.rewound_from is not None else ""
    emit(args, {**as_dict(result), "db": str(args.db or DEFAULT_DB), "checkpoint": int(checkpoint) if checkpoint else None,
                "total_events": total},
         f"indexed {result.events} new events (blocks {result.from_block}..{result.to_block}){rewound}; "
         f"{total} events in {args.db or DEFAULT_DB}")
    return EXIT_OK

def cmd_trace(args) -> int:
    import datetime as dt

    from shipledger._internal.names import check_name
    from shipledger.compliance.index import digest_hex
    from shipledger.compliance.trace import trace

    check_name("service", args.service)
    digest = digest_hex(artifact_digest(args))
    index = synced_index(args)
    try:
        result = trace(index.db, digest, args.service)
    finally:
        index.close()
    if args.json:
        artifact = {k: v for k, v in asdict(result).items() if k != "steps"}
        emit(args, {"artifact": artifact, "steps": [asdict(s) for s in result.steps]})
        return EXIT_OK
    print(shown(f"{result.service} {result.version} ({result.kind}) {result.digest}{' (REVOKED)' if result.revoked else ''}"))
    if result.attestations:
        print(shown("  attestations: " + ", ".join(f"{a['type']} {a['document_digest'][:19]}.." for a in result.attestations)))
    for s in result.steps:
        when = dt.datetime.fromtimestamp(s.timestamp, dt.timezone.utc).isoformat(timespec="seconds")
        print(shown(f"{s.block_number:>7}  {when}  {s.kind:21}  {s.environment or '-':10}  {s.summary}  (tx {s.tx_hash})"))
    return EXIT_OK


def cmd_audit(args) -> int:
    from shipledger._internal.names import check_name
    from shipledger.compliance.audit import audit

    for kind, value in (("service", args.service), ("environment", args.env)):
        if value is not None:
            check_name(kind, value)
    source = index_source(args)
    index = synced_index(args, source)
    try:
        report = audit(index, source, service=args.service, environment=args.env, full=args.full)
    finally:
        index.close()
    summary = report.summary
    sentence = (f"audit: {summary['findings']} finding(s); checked {summary['starts']} deployment starts,"
                f" {summary['rollbacks']} rollbacks, {summary['votes']} votes, {summary['proposals']} proposals"
                f" ({summary['executions']} executed), the history heads of {summary['contracts_checked']} contracts and"
                f" {summary['blocks_checked']} blocks{' (all)' if args.full else ' (a sample)'}")
    if args.json:
        emit(args, {"clean": report.clean, "findings": [asdict(f) for f in report.findings], "summary": summary})
    else:
        for f in report.findings:
            where = f"deployment {f.deployment}" if f.deployment is not None else (f.address or f"block {f.block}")
            print(shown(f"{f.rule:34}  {where:20}  {f.message}" + (f" (tx {f.tx_hash})" if f.tx_hash else "")))
        say(args, sentence)
    return EXIT_OK if report.clean else EXIT_DENIED

def cmd_export(args) -> int:
    from shipledger.compliance import export

    from shipledger.compliance.filters import check_org

    query = _query(args)
    filters = query.filters()
    out = output_path(args.out)
    index = synced_index(args)
    try:
        check_org(index, filters["org"])
        filter_text = query.text()
        count = export.write_export(export.records(index, index.history(**filters), filter_text), out, args.format)
    finally:
        index.close()
    complete = " (filtered: verify-export can check each line but cannot prove it complete)" if filter_text else ""
    emit(args, {"out": str(out), "format": args.format, "records": count, "filter": filter_text, "complete": not filter_text},
         f"exported {count} records to {out} ({args.format}){complete}")
    return EXIT_OK


def cmd_verify_export(args) -> int:
    from shipledger.compliance import export
    from shipledger._internal.book import load_address_book

    if not Path(args.file).is_file():
        raise UsageError(f"{args.file} is not a file")
    book = None  # with an address book, lines from other contracts than the suite's are flagged too
    if args.deployment or os.environ.get("SHIPLEDGER_DEPLOYMENT") or DEFAULT_BOOK.is_file():
        book = load_address_book(book_path(args))
    url = rpc_url(args, book)
    if book is not None:
        (chain_id,) = export.Rpc(url, timeout=args.timeout).batch([("eth_chainId", [])])
        if int(chain_id, 16) != int(book["chain_id"]):
            raise AddressBookError(f"the address book is for chain {book['chain_id']} but {url} is chain {int(chain_id, 16)}")
    if args.json or not sys.stderr.isatty():
        result = export.verify_export(args.file, url, book=book, batch_size=args.batch_size, timeout=args.timeout)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("fetching receipts and blocks", total=None)
            result = export.verify_export(args.file, url, book=book, batch_size=args.batch_size, timeout=args.timeout,
                                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    completeness = asdict(result.completeness) if result.completeness else None
    data = {"file": str(args.file), "ok": result.ok, "lines": result.lines, "transactions": result.transactions,
            "blocks": result.blocks, "suite_checked": book is not None,
            "complete": completeness["complete"] if completeness else None, "completeness": completeness,
            "mismatches": [{"line": m.line, "problems": m.problems} for m in result.mismatches]}
    if args.json:
        emit(args, data)
    else:
        for m in result.mismatches:
            for problem in m.problems:
                print(f"{args.file}:{m.line}: {problem}", file=sys.stderr)
        for problem in (completeness or {}).get("problems", []):
            print(f"{args.file}: {problem}", file=sys.stderr)
        print(f"{len(result.mismatches)} of {result.lines} lines do not match the chain" if result.mismatches
              else f"all {result.lines} lines match the chain ({result.transactions} transactions, {result.blocks} blocks)",
              file=sys.stderr)
        if completeness:
            verdict = {True: "complete", False: "NOT complete", None: "completeness not proven"}[completeness["complete"]]
            print(f"{verdict}: {completeness['reason']}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_DENIED


def cmd_report(args) -> int:
    from shipledger._internal.names import check_name
    from shipledger.compliance import dora

    if not args.out and not args.json:
        raise UsageError("report needs --out FILE.html (or --json for the numbers)")
    for kind, value in (("--service", args.service), ("--env", args.env)):
        if value is not None:
            check_name(kind, value)
    from shipledger.compliance.filters import check_period, report_time

    since, until = report_time("--since", args.since, end=False), report_time("--until", args.until, end=True)

    check_period(since, until, args.since, args.until)
    out = output_path(args.out) if args.out else None
    prod_envs = tuple(e.strip() for value in (args.prod_env or ["prod,production"]) for e in value.split(",") if e.strip())
    if not prod_envs:
        raise UsageError(f"--prod-env {','.join(args.prod_env)!r} names no environment")
    for kind, value in (("service", args.service), ("environment", args.env)):
        if value is not None:
            check_name(kind, value)
    for env in prod_envs:
        check_name("--prod-env environment", env)
    if not Path(args.repo).is_dir():
        raise UsageError(f"--repo {args.repo}: no such directory")
    index = synced_index(args)
    try:
        metrics = dora.from_index(index, service=args.service, environment=args.env, since=since, until=until,
                                  prod_envs=prod_envs, commit_time=dora.git_commit_time(args.repo))
        meta = index.meta()
    finally:
        index.close()
    if out is not None:
        from shipledger.compliance import report

        report.write(metrics, out, {
            "chain": meta.get("chain_id"), "registry": meta.get("registry"), "ledger": meta.get("ledger"),
            "indexed to block": meta.get("checkpoint_block"), "block hash": meta.get("checkpoint_hash"),
        })
    rate = "n/a" if metrics.change_failure_rate is None else f"{metrics.change_failure_rate:.0%}"
    emit(args, metrics.to_json(),
         f"{metrics.deployments} production deployments, change failure rate {rate}"
         + (f"; report written to {out}" if out else ""))
    return EXIT_OK



def add_commands(parsers) -> None:
    command = parsers.command

    def history_filter_args(p):
        """The filters of `history` and `export` (Index.history's), and the index options."""
        p.add_argument("--digest", help="events of one artifact (sha256:<hex> or 0x<hex>), its deployments' steps included")
        p.add_argument("--approver", metavar="ADDR", type=address, help="votes cast by this approver")
        p.add_argument("--org", metavar="NAME|ID", help="events naming this organisation (votes, members, slots)")
        p.add_argument("--kind", action="append", metavar="KIND",
                       help="event kind (repeatable): registered, approved, rejected, deployed, rolled-back, incident, ...")
        p.add_argument("--since", metavar="WHEN", help="from this block number, date (YYYY-MM-DD) or ISO datetime (UTC)")
        p.add_argument("--until", metavar="WHEN", help="up to this block number, date (whole day) or ISO datetime")
        index_args(p)

    p = command("status", cmd_status)
    p.add_argument("service", help=SERVICE_HELP)
    p.add_argument("env", help=ENV_HELP)
    index_args(p)

    p = command("history", cmd_history)
    p.add_argument("--service", help="only this service (case-sensitive)")
    p.add_argument("--env", help="only this environment (case-sensitive)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    history_filter_args(p)

    index = parsers.group("index")
    p = command("sync", cmd_index_sync, "pull new events of the suite into the index (incremental, reorg-safe)", index)
    p.add_argument("--db", default=None, metavar="PATH", help="index database (default .shipledger/index.sqlite)")
    p.add_argument("--confirmations", type=int, default=0, metavar="N", help="index only blocks at least N deep")

    p = command("trace", cmd_trace)
    artifact_args(p)
    p.add_argument("--service", required=True, help=SERVICE_HELP)
    index_args(p)

    p = command("audit", cmd_audit)
    p.add_argument("--service", help="only this service (case-sensitive)")
    p.add_argument("--env", help="only this environment (case-sensitive)")
    p.add_argument("--full", action="store_true", help="check every indexed block against the chain, not a sample")
    index_args(p)

    p = command("export", cmd_export)
    p.add_argument("--format", choices=("csv", "jsonl"), required=True)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--service", help="only this service (case-sensitive)")
    p.add_argument("--env", help="only this environment (case-sensitive)")
    history_filter_args(p)

    p = command("verify-export", cmd_verify_export)
    p.add_argument("file")
    p.add_argument("--batch-size", type=positive_int, default=250, metavar="N", help="JSON-RPC requests per batch (default 250)")

    p = command("report", cmd_report)
    p.add_argument("--out", metavar="FILE.html")
    p.add_argument("--service", help="only this service (case-sensitive)")
    p.add_argument("--env", help="report on this environment alone (default: the production environments)")
    p.add_argument("--since", metavar="DATE", help="from this date (YYYY-MM-DD) or ISO datetime (UTC)")
    p.add_argument("--until", metavar="DATE", help="up to this date (whole day) or ISO datetime (default: now)")
    p.add_argument("--prod-env", action="append", metavar="NAMES",
                   help="production environment names, comma-separated or repeated (default prod,production)")
    p.add_argument("--repo", default=".", metavar="DIR", help="git repository for commit times not on the ledger (default .)")
    index_args(p)

"""`shipledger incident open|ack|mitigate|resolve|postmortem|suspects`: incidents, and the ranking of the
deployments that may have caused one (shipledger/delivery/suspects.py)."""

from __future__ import annotations

from dataclasses import asdict

from shipledger.cli import EXIT_OK, emit, say, tx_data
from shipledger.cli.shared import (
    ENV_HELP, SERVICE_HELP, duration, file_digest, index_args, open_ledger, positive_int, shown, synced_index,
    warn_case_twins,
)
from shipledger.errors import UsageError


def cmd_incident(args) -> int:
    # files first: a missing postmortem or details file is a usage error before anything is sent
    document_option = {"open": "details", "resolve": "postmortem", "postmortem": "file"}.get(args.incident_command)
    document = file_digest(getattr(args, document_option)) if document_option else ""
    ledger = open_ledger(args)
    if args.incident_command == "open":
        warn_case_twins(ledger, services=[args.service], environments=[args.env])
        suspects, chosen = list(args.suspect or []), []
        if args.auto_suspect:
            chosen = _auto_suspects(args, ledger)
            suspects += [s.deployment_id for s in chosen if s.deployment_id not in suspects]
        elif args.deps:
            raise UsageError("--deps goes with --auto-suspect")
        incident_id, receipt = ledger.open_incident_tx(args.service, args.env, args.severity, args.title, suspects,
                                                       document, args.details_uri or "")
        extra = {"suspects": suspects, "auto_suspects": [asdict(s) for s in chosen]} if args.auto_suspect else {}
        emit(args, {"incident_id": incident_id, **extra, **tx_data(receipt)},
             f"incident {incident_id} opened (severity {args.severity}): {args.title}")
        if not args.json:
            print(incident_id)
        return EXIT_OK
    if args.incident_command == "ack":
        receipt, text = ledger.acknowledge(args.id), f"incident {args.id} acknowledged"
    elif args.incident_command == "mitigate":
        receipt, text = ledger.mitigate(args.id, args.rollback or 0), f"incident {args.id} mitigated"
    elif args.incident_command == "postmortem":
        receipt = ledger.attach_postmortem(args.id, document, args.uri or "")
        emit(args, {"incident_id": args.id, "digest": document, "uri": args.uri or "", **tx_data(receipt)},
             f"postmortem {document} attached to incident {args.id}" + (f" ({args.uri})" if args.uri else ""))
        return EXIT_OK
    else:
        # only the URI goes on chain with the digest: a local path means nothing to other parties
        done = ledger.resolve(args.id, document, args.postmortem_uri or "")
        if done.resolved:
            text = f"incident {args.id} resolved"
        else:
            text = (f"incident {args.id}: {done.organisations} of {done.needed} organisations; waiting for a responder of "
                    f"another organisation (it still freezes deployments)")
        emit(args, {"incident_id": args.id, "resolved": done.resolved, "organisations": done.organisations,
                    "needed": done.needed, **tx_data(done.receipt)}, text)
        return EXIT_OK
    emit(args, {"incident_id": args.id, **tx_data(receipt)}, text)
    return EXIT_OK


def _auto_suspects(args, ledger) -> list:
    """The deployments `incident open --auto-suspect` names, ranked as things stand now; says why."""
    import time

    from shipledger._internal.names import check_name
    from shipledger.delivery.suspects import auto_suspects, current_suspects, load_dependencies

    check_name("service", args.service)
    check_name("environment", args.env)
    dependencies = load_dependencies(args.deps)
    index = synced_index(args, ledger)
    try:
        # The incident's block will be mined now; on a chain whose clock was moved ahead (a devnet
        # after evm_increaseTime) the head's time is later than ours.
        now = max(int(time.time()), int(ledger.w3.eth.get_block("latest")["timestamp"]))
        chosen = auto_suspects(current_suspects(index, args.service, args.env, now=now, dependencies=dependencies,
                                                window=args.window))
    finally:
        index.close()
    if not chosen:
        say(args, f"auto-suspect: no deployment of {args.service} or its dependencies in {args.env} scores enough to suspect")
    for s in chosen:
        say(args, shown(f"auto-suspect: deployment {s.deployment_id} ({s.service} in {s.environment}), score {s.score}: "
                        + "; ".join(s.reasons)))
    return chosen


def cmd_incident_suspects(args) -> int:
    import datetime as dt

    from shipledger.delivery.suspects import incident_suspects, load_dependencies

    dependencies = load_dependencies(args.deps)  # a bad config is a usage error before any sync
    index = synced_index(args)
    try:
        incident, ranked = incident_suspects(index, args.id, dependencies=dependencies, window=args.window)
    finally:
        index.close()
    if args.limit:
        ranked = ranked[: args.limit]
    if args.json:
        emit(args, {"incident": asdict(incident), "window": args.window, "suspects": [asdict(s) for s in ranked]})
        return EXIT_OK
    opened = dt.datetime.fromtimestamp(incident.opened.timestamp, dt.timezone.utc).isoformat(timespec="seconds")
    print(shown(f"incident {incident.id} sev{incident.severity} {incident.service} in {incident.environment}, opened {opened}"
                f" (block {incident.opened.block_number}): {incident.title}"))
    if not ranked:
        window = f"{args.window // 3600}h" if args.window % 3600 == 0 else f"{args.window}s"
        print(shown(f"  no deployment of {incident.service} or its dependencies in {incident.environment} in the {window} before it"))
    for place, s in enumerate(ranked, 1):
        named = ", named when opened" if s.named else ""
        print(shown(f"{place:>3}. deployment {s.deployment_id}  {s.service} in {s.environment}  score {s.score}"
                    f"  ({s.state}, {s.digest[:19]}..{named})"))
        for reason in s.reasons:
            print(shown(f"       {reason}"))
    return EXIT_OK


def add_commands(parsers) -> None:
    command = parsers.command

    def suspect_args(p, auto=False):
        """Options of `incident suspects` and `incident open --auto-suspect`."""
        if auto:
            p.add_argument("--auto-suspect", action="store_true",
                           help="also name the top deployments (at most 3) that `incident suspects` would rank now")
        p.add_argument("--deps", metavar="FILE", help="dependency config: YAML/JSON {service: [services it depends on]}"
                       " (default .shipledger/dependencies.yaml if present)")
        p.add_argument("--window", type=duration, default=24 * 3600, metavar="DUR",
                       help="how far back a deployment step counts (default 24h)")
        index_args(p)

    incident = parsers.group("incident")
    p = command("open", cmd_incident, "open an incident; prints its id", incident)
    p.add_argument("--service", required=True, help=SERVICE_HELP)
    p.add_argument("--env", required=True, help=ENV_HELP)
    p.add_argument("--severity", type=int, required=True, help="1 (most severe) to 4")
    p.add_argument("--title", required=True)
    p.add_argument("--suspect", type=positive_int, action="append", help="suspected deployment id (repeatable)")
    p.add_argument("--details", metavar="FILE", help="details document to hash")
    p.add_argument("--details-uri")
    suspect_args(p, auto=True)
    helps = {"ack": "acknowledge an open incident", "mitigate": "mark an incident mitigated (from open or acknowledged)",
             "resolve": "resolve an incident from open, acknowledged or mitigated; a freezing one needs responders of "
                        "the policy's resolve quorum of organisations"}
    for name in ("ack", "mitigate", "resolve"):
        p = command(name, cmd_incident, helps[name], incident)
        p.add_argument("id", type=positive_int)
        if name == "mitigate":
            p.add_argument("--rollback", type=positive_int, help="the rolled-back deployment (of the same service and environment) that mitigated it")
        if name == "resolve":
            p.add_argument("--postmortem", metavar="FILE", help="postmortem document to hash")
            p.add_argument("--postmortem-uri")
    p = command("postmortem", cmd_incident, "attach (or replace) an incident's postmortem: its sha256 and URI", incident)
    p.add_argument("id", type=positive_int)
    p.add_argument("file", metavar="FILE", help="the postmortem document; its sha256 is recorded")
    p.add_argument("--uri", help="where the document lives for the other organisations")

    p = command("suspects", cmd_incident_suspects, "rank the deployments that may have caused an incident, with reasons", incident)
    p.add_argument("id", type=positive_int)
    p.add_argument("--limit", type=positive_int, help="show only the top N")
    suspect_args(p)

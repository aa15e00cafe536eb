"""Progressive delivery: `canary judge|verify|record` (shipledger/delivery/judge.py) and `rollout
run|status|resume|abort`, the controller that judges every step (shipledger/delivery/rollout.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shipledger.cli import EXIT_DENIED, EXIT_OK, emit, tx_data
from shipledger.cli.shared import (
    artifact_digest, book_path, duration, file_digest, open_ledger, positive_int, target_args, writable_path,
)
from shipledger.errors import AddressBookError, PathError, UsageError


def cmd_canary_judge(args) -> int:
    """Exit 0 only for a pass: a marginal verdict exits 3 like a fail, so a pipeline never goes on by
    accident; the JSON's verdict says which of the two it was. No chain is needed."""
    from shipledger.delivery.judge import format_table, judge, load_config, load_samples

    config = load_config(args.config) if args.config else None
    baseline, canary = load_samples(args.baseline), load_samples(args.canary)
    judgement = judge(baseline, canary, config)
    if args.json:
        print(json.dumps(judgement.to_dict()))
    else:
        print(format_table(judgement))
    return EXIT_OK if judgement.verdict == "pass" else EXIT_DENIED



def _progress_line(text: str) -> None:
    """The controller's one line per step and verdict, on stderr (stdout keeps --json's one document)."""
    print(text, file=sys.stderr, flush=True)


def _rollout_done(args, state: dict, store) -> int:
    from shipledger.delivery.rollout import exit_code, summary

    data = summary(state, store)
    reason = (data.get("reason") or "").removeprefix("aborted: ")  # the phase already says it
    why = data.get("error") or (data.get("paused_because") if data["phase"] == "paused" else None) or reason
    tail = f": {why}" if why else ""
    incident = f"; incident {data['incident_id']} opened" if data.get("incident_id") else ""
    emit(args, data, f"rollout {data['deployment_id']} {data['phase']} at {data['percent']}%{tail}{incident}")
    return exit_code(state)


def cmd_rollout(args) -> int:
    from shipledger.delivery import rollout
    from shipledger._internal.names import check_name

    store = rollout.Store(args.state_dir)
    if store.dir.exists() and not store.dir.is_dir():
        raise PathError(f"rollout state directory {store.dir} is not a directory")
    if args.rollout_command == "status":
        return _rollout_status(args, store)
    writable_path(store.dir, "rollout state directory ")  # run, resume and abort save state: checked before any step
    if args.rollout_command == "run":
        check_name("service", args.service)
        check_name("environment", args.env)
        steps = rollout.parse_steps(args.steps)
        if args.interval < 1:
            raise UsageError("--interval must be at least 1s")
        digest = artifact_digest(args)
        ledger = open_ledger(args)
        state = rollout.start(
            ledger, store, digest=digest, artifact=args.artifact, service=args.service, env=args.env, steps=steps,
            interval=args.interval, config_path=args.analysis, traffic_cmd=args.traffic_cmd,
            severity=args.incident_severity, log=_progress_line,
        )
    elif args.rollout_command == "resume":
        state = rollout.resume(open_ledger(args), store, args.id, _progress_line, rejudge=args.rejudge)
    else:
        state = rollout.abort(open_ledger(args), store, args.id, args.reason, _progress_line)
    return _rollout_done(args, state, store)


def cmd_canary_verify(args) -> int:
    """Exit 0 when the recomputed verdict matches the report and the chain; 3 on any mismatch; 1 when
    the report was judged by another judge version, which cannot be recomputed here. The chain is
    checked whenever an address book is at hand (and then must be reachable), unless --offline."""
    from shipledger.delivery.rollout import verify

    ledger, why = None, "--offline"
    if not args.offline:
        try:
            book_path(args)
        except AddressBookError:
            why = "no address book (pass --deployment or set SHIPLEDGER_DEPLOYMENT to check the chain)"
        else:
            ledger = open_ledger(args, need_signer=False)
    result = verify(args.report, ledger)
    if ledger is None:
        result["chain"] = {"checked": False, "why": why}
    recomputed = result["recomputed"]
    if result["match"]:
        where = "the report and the chain" if ledger is not None else f"the report (chain not checked: {why})"
        text = f"verified: {recomputed['verdict']} (score {recomputed['score']:.2f}) recomputed, matching {where}"
    else:
        text = "MISMATCH: " + "; ".join(result["problems"])
    emit(args, result, text)
    return EXIT_OK if result["match"] else EXIT_DENIED


def cmd_canary_record(args) -> int:
    if not 0 <= args.score <= 100:
        raise UsageError(f"--score {args.score} must be 0 to 100")
    path = Path(args.report)
    if not path.is_file():
        raise UsageError(f"report {args.report} is not a file")
    digest = file_digest(args.report)  # first: an unreadable report stops here, naming it
    judge_name = args.judge
    if judge_name is None:
        try:
            judge_name = json.loads(path.read_text()).get("judge_version") or "manual"
        except (OSError, ValueError, AttributeError):
            judge_name = "manual"
    uri = args.uri or path.resolve().as_uri()
    receipt = open_ledger(args).record_analysis(args.id, args.score, args.verdict, digest, uri, judge_name)
    emit(args, {"deployment_id": args.id, "score": args.score, "verdict": args.verdict, "report_digest": digest,
                "report_uri": uri, "judge": judge_name, **tx_data(receipt)},
         f"recorded {args.verdict} (score {args.score:g}) for deployment {args.id}; report {digest}")
    return EXIT_OK


def _rollout_status(args, store) -> int:
    from shipledger.delivery.rollout import summary

    states = [store.load(args.id)] if args.id else store.all()
    rows = [summary(s, store) for s in states]
    if args.json:
        emit(args, rows[0] if args.id else {"rollouts": rows})
        return EXIT_OK
    if not rows:
        print(f"no rollouts in {store.dir}", file=sys.stderr)
    for r in rows:
        last = r["reports"][-1] if r["reports"] else None
        verdict = f"last verdict {last['verdict']} ({last['score']:.1f})" if last else "no verdict yet"
        print(f"deployment {r['deployment_id']}  {r['service']} {r['env']}  {r['phase']} at {r['percent']}% "
              f"(steps {','.join(map(str, r['steps']))})  {verdict}"
              + (f"  error: {r['error']}" if r.get("error") else "") + (f"  {r['reason']}" if r.get("reason") else ""))
    return EXIT_OK



def add_commands(parsers) -> None:
    command = parsers.command
    canary = parsers.group("canary")
    p = command("judge", cmd_canary_judge, "judge canary samples against baseline samples (Kayenta's ACA judge and more); "
                "exit 0 pass, 3 marginal or fail, 2 bad input", canary)
    p.add_argument("--baseline", required=True, metavar="FILE", help="baseline samples: CSV `metric,value` rows or JSON {\"metric\": [values]}")
    p.add_argument("--canary", required=True, metavar="FILE", help="canary samples, same formats")
    p.add_argument("--config", metavar="FILE", help="judge config (YAML or JSON); default: every metric, direction either")
    p = command("verify", cmd_canary_verify, "recompute a rollout report's verdict and check it against the one on chain; "
                "exit 0 match, 3 mismatch, 1 judged by another judge version (cannot recompute)", canary)
    p.add_argument("report", metavar="REPORT", help="a report saved by `rollout run` (.shipledger/rollouts/<id>/step-*.json)")
    p.add_argument("--offline", action="store_true", help="only recompute; do not look for the verdict on chain")
    p = command("record", cmd_canary_record, "record a canary verdict on chain with its report's digest (DEPLOYER)", canary)
    p.add_argument("id", type=positive_int, help="deployment id (in progress)")
    p.add_argument("--score", type=float, required=True, help="0 to 100")
    p.add_argument("--verdict", choices=("pass", "marginal", "fail"), required=True)
    p.add_argument("--report", required=True, metavar="FILE", help="the report behind the verdict; its sha256 is recorded")
    p.add_argument("--uri", help="where the report lives (default its file:// URI)")
    p.add_argument("--judge", help="judge name and version (default the report's judge_version, else 'manual')")

    rollout = parsers.group("rollout")
    state_dir_help = "where rollout state and reports live (env SHIPLEDGER_ROLLOUT_DIR; default .shipledger/rollouts)"
    p = command("run", cmd_rollout, "roll out in steps; each step judged; pass promotes, marginal pauses, fail rolls back. "
                "Exit 0 completed, 3 paused/rolled back, 1 stopped on an error", rollout)
    target_args(p)
    p.add_argument("--steps", default="10,50,100", help="percentages, increasing, ending at 100 (default 10,50,100)")
    p.add_argument("--interval", type=duration, required=True, help="wait at each step before judging (e.g. 5m)")
    p.add_argument("--analysis", required=True, metavar="CONFIG", help="canary config (YAML/JSON) with `source:` and metric queries")
    p.add_argument("--traffic-cmd", metavar="'CMD {percent}'", help="run at each step (and with 0 on rollback); no shell")
    p.add_argument("--incident-severity", type=int, default=2, metavar="N", help="severity of the incident a failed canary opens (default 2)")
    p.add_argument("--state-dir", help=state_dir_help)
    p = command("status", cmd_rollout, "rollouts on disk: phase, step and last verdict", rollout)
    p.add_argument("id", type=positive_int, nargs="?", help="deployment id (default: every rollout)")
    p.add_argument("--state-dir", help=state_dir_help)
    p = command("resume", cmd_rollout, "continue a paused or stopped rollout (after a marginal verdict: go on)", rollout)
    p.add_argument("id", type=positive_int)
    p.add_argument("--rejudge", action="store_true", help="judge the current step again instead of going on")
    p.add_argument("--state-dir", help=state_dir_help)
    p = command("abort", cmd_rollout, "roll back a rollout now (asks a running controller to)", rollout)
    p.add_argument("id", type=positive_int)
    p.add_argument("--reason", required=True, help="why (recorded on chain with the rollback)")
    p.add_argument("--state-dir", help=state_dir_help)

"""`shipledger drift`: compare what runs with the ledger (shipledger/delivery/drift.py); exit 3 on any
finding, 0 when everything running is what the ledger says should run there."""

from __future__ import annotations

import json
import sys

from shipledger.cli import EXIT_DENIED, EXIT_OK
from shipledger.cli.shared import open_ledger, rpc_url, shown
from shipledger.errors import UsageError, path_error


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise path_error(path, exc) from None


def cmd_drift(args) -> int:
    from shipledger.delivery import drift
    from shipledger.server.admission import AdmissionMap

    if bool(args.kubernetes) == bool(args.observed):
        raise UsageError("give --kubernetes FILE (or - for stdin) or --observed FILE, one of the two")
    if args.observed and args.admission_map:
        raise UsageError("--admission-map maps pods: observations name their service and environment themselves")
    findings = []
    if args.kubernetes:
        mapping = AdmissionMap.load(args.admission_map)
        try:
            document = json.loads(_read(args.kubernetes))
        except ValueError as exc:
            raise UsageError(f"{args.kubernetes} is not JSON: {exc}") from None
        observations, findings = drift.observations_from_pods(document, mapping)
    else:
        observations = drift.observations_from_lines(_read(args.observed), args.observed)
    ledger = open_ledger(args, need_signer=False)
    from shipledger._internal.rpc import Rpc

    rpc = Rpc(rpc_url(args, ledger.book), timeout=args.timeout)
    findings += drift.compare(observations, *drift.ledger_readers(ledger, rpc.batch))
    targets = {(o.service, o.environment) for o in observations}
    if args.json:
        for finding in findings:
            print(json.dumps(finding.to_json()))
    else:
        for finding in findings:
            print(shown(f"DRIFT {finding.kind}: {finding.where}: {finding.reason}"), file=sys.stderr)
        print(f"{len(findings)} finding{'' if len(findings) == 1 else 's'}" if findings else "no drift", file=sys.stderr,
              end=f": {len(observations)} running containers compared in {len(targets)} targets\n")
    return EXIT_DENIED if findings else EXIT_OK


def add_commands(parsers) -> None:
    p = parsers.command("drift", cmd_drift)
    p.add_argument("--kubernetes", metavar="FILE", help="the JSON of `kubectl get pods -A -o json` (- for stdin)")
    p.add_argument("--observed", metavar="FILE", help='JSON lines {"service", "environment", "digest", "where"} (- for stdin)')
    p.add_argument("--admission-map", metavar="FILE",
                   help="with --kubernetes: the webhook's map {images: {REPOSITORY: SERVICE}, namespaces: {NAMESPACE: ENVIRONMENT}}"
                        " for pods without the shipledger.io annotations")

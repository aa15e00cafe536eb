"""`shipledger deploy start|promote|complete|fail|rollback`: the steps of a rollout, recorded by hand
(the rollout controller in delivery.py records the same steps itself). The ledger re-checks the gate
and the canary at promote and complete: a refusal exits 3 with the reason (StepDenied, CanaryBlocks);
a rollback never makes a revoked artifact live again (RestoresRevokedArtifact)."""

from __future__ import annotations

from shipledger.cli import EXIT_OK, emit, tx_data
from shipledger.cli.shared import artifact_digest, open_ledger, positive_int, target_args


def cmd_deploy(args) -> int:
    if args.deploy_command == "start":
        digest = artifact_digest(args)
        ledger = open_ledger(args)
        deployment_id, receipt = ledger.start_deployment_tx(digest, args.service, args.env, args.percent)
        emit(args, {"deployment_id": deployment_id, "digest": digest, "percent": args.percent, **tx_data(receipt)},
             f"deployment {deployment_id} started: {args.service} {digest} to {args.env} at {args.percent}%")
        if not args.json:
            print(deployment_id)
        return EXIT_OK
    ledger = open_ledger(args)
    if args.deploy_command == "promote":
        receipt, text = ledger.promote(args.id, args.percent), f"deployment {args.id} promoted to {args.percent}%"
    elif args.deploy_command == "complete":
        receipt, text = ledger.complete(args.id), f"deployment {args.id} completed; it is live"
    elif args.deploy_command == "fail":
        receipt, text = ledger.fail(args.id, args.reason), f"deployment {args.id} failed: {args.reason}"
    else:
        restored, receipt = ledger.rollback_tx(args.id, args.reason)
        emit(args, {"deployment_id": args.id, "restored": restored, **tx_data(receipt)},
             f"deployment {args.id} rolled back; live is now {restored or 'nothing'}")
        return EXIT_OK
    emit(args, {"deployment_id": args.id, **tx_data(receipt)}, text)
    return EXIT_OK


def add_commands(parsers) -> None:
    command = parsers.command
    deploy = parsers.group("deploy")
    p = command("start", cmd_deploy, "start a rollout if the gate allows it; prints the deployment id", deploy)
    target_args(p)
    p.add_argument("--percent", type=int, default=100, help="share of traffic the rollout starts at, 1 to 100 (default 100)")
    p = command("promote", cmd_deploy, "raise the rollout percentage", deploy)
    p.add_argument("id", type=positive_int)
    p.add_argument("--percent", type=int, required=True, help="the new share of traffic: above the current one, at most 100")
    p = command("complete", cmd_deploy, "mark a 100%% rollout completed (it becomes live)", deploy)
    p.add_argument("id", type=positive_int)
    for name, text in (("fail", "mark a rollout failed"), ("rollback", "roll back to the deployment live before")):
        p = command(name, cmd_deploy, text, deploy)
        p.add_argument("id", type=positive_int)
        p.add_argument("--reason", required=True, help="why (recorded on chain with the step)")

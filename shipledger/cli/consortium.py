"""The consortium's own records: `suite deploy`, `org`, `member`, `role` and `policy`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from shipledger.cli import EXIT_OK, emit, tx_data
from shipledger.cli.shared import (
    ENV_HELP, SERVICE_HELP, address, counted, duration, index_args, index_source, load_signer, open_ledger, positive_int,
    rpc_url, shown, synced_index, warn_case_twins, writable_path,
)
from shipledger.errors import PathError, UsageError


def cmd_suite_deploy(args) -> int:
    from shipledger.client import Ledger

    signer = load_signer(args)
    if signer is None:
        raise UsageError(f"deploying needs a key: set ${args.key_env} or pass --keystore FILE")
    if Path(args.out).exists() and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it")
    if Path(args.out).is_dir():
        raise PathError(f"cannot write {args.out}: it is a directory")
    writable_path(Path(args.out))  # before anything is deployed, not after
    ledger = Ledger.deploy_suite(rpc_url(args), signer, out=args.out)
    emit(args, {"deployment": args.out, **ledger.book}, f"suite deployed on chain {ledger.chain_id}; address book {args.out}; admin {signer.address}")
    return EXIT_OK



def cmd_org_add(args) -> int:
    ledger = open_ledger(args)
    org = ledger.add_organisation(args.name)
    emit(args, {"org": org, "name": args.name}, f"organisation {args.name} added with id {org}")
    return EXIT_OK


def cmd_member_add(args) -> int:
    from shipledger.client import role_id

    for role in args.role or ():
        role_id(role)  # every input is checked before anything is sent
    if args.org > 255:
        raise UsageError(f"organisation {args.org} does not exist (ids are 1 to 255)")
    ledger = open_ledger(args)
    receipts = ledger.add_member(args.org, args.address, args.role or ())
    emit(args, {"address": args.address, "org": args.org, "roles": args.role or [], "txs": [r.tx_hash for r in receipts]},
         f"{args.address} added to organisation {args.org}" + (f" with {', '.join(args.role)}" if args.role else ""))
    return EXIT_OK


def cmd_member_remove(args) -> int:
    receipt = open_ledger(args).remove_member(args.address)
    emit(args, {"address": args.address, **tx_data(receipt)}, f"{args.address} removed (its APPROVER role revoked)")
    return EXIT_OK


def cmd_member_list(args) -> int:
    from shipledger._internal.reader import ROLE_IDS, Reader

    # Who is a member comes from the index (no getter lists them); their roles from the contract,
    # in one batch of hasRole calls (without web3, as `status`).
    source = index_source(args)
    index = synced_index(args, source)
    try:
        members = index.members()
    finally:
        index.close()
    asked = [(member, role) for member in members for role in ROLE_IDS]
    answers = Reader(source).calls([("ReleaseRegistry", "hasRole", [ROLE_IDS[role], member["address"]]) for member, role in asked])
    for member in members:
        member["roles"] = []
    for (member, role), has in zip(asked, answers):
        if has:
            member["roles"].append(role)
    if args.json:
        emit(args, {"members": members})
    else:
        for m in members:
            print(shown(f"{m['address']}  org {m['org']} ({m['organisation']})  {' '.join(m['roles']) or '-'}"))
    return EXIT_OK


def cmd_role(args) -> int:
    ledger = open_ledger(args)
    fn = ledger.grant_role if args.role_command == "grant" else ledger.revoke_role
    receipt = fn(args.role, args.address)
    emit(args, {"role": args.role.upper(), "address": args.address, **tx_data(receipt)}, (f"granted {args.role.upper()} to {args.address}" if args.role_command == "grant"
          else f"revoked {args.role.upper()} from {args.address}"))
    return EXIT_OK


def cmd_policy_set(args) -> int:
    ledger = open_ledger(args)
    warn_case_twins(ledger, services=[args.service], environments=[args.env, args.after])
    receipt = ledger.set_policy(
        args.service, args.env, threshold=args.threshold, min_organisations=args.min_orgs, ttl=args.ttl,
        min_wait=args.wait, prior_environment=args.after or "", freeze_severity=args.freeze_severity,
    )
    policy = ledger.policy(args.service, args.env)
    emit(args, {"policy": {**asdict(policy), "prior_environment": args.after or ""}, **tx_data(receipt)},
         f"policy for {args.service} in {args.env} is now version {policy.version}: {counted(args.threshold, 'approval')}"
         + (f" from at least {counted(args.min_orgs, 'organisation')}" if args.min_orgs else ", from any organisation"))
    return EXIT_OK


def policy_data(ledger, policy) -> dict:
    """A policy as the CLI shows it: the SDK's fields plus the prior environment by name (the chain
    keeps only its hash; the name comes from the policy's PolicySet event)."""
    key = policy.prior_environment_key
    return {**asdict(policy), "prior_environment": ledger.prior_environment_name(policy.service, policy.environment, key) if key else ""}


def cmd_policy_show(args) -> int:
    ledger = open_ledger(args, need_signer=False)
    policy = ledger.policy(args.service, args.env)
    if policy is None:
        emit(args, {"policy": None}, f"no policy for {args.service} in {args.env}: the gate denies everything")
        return EXIT_OK
    data = policy_data(ledger, policy)
    if args.json:
        emit(args, {"policy": data})
    else:
        for key, value in data.items():
            print(shown(f"{key:21} {value}"))
    return EXIT_OK


def add_commands(parsers) -> None:
    command = parsers.command
    suite = parsers.group("suite")
    p = command("deploy", cmd_suite_deploy, "deploy the suite on any chain; the signer becomes ADMIN", suite)
    p.add_argument("--out", required=True, help="address book to write, e.g. deployments/NAME.json")
    p.add_argument("--force", action="store_true", help="overwrite an existing address book")

    org = parsers.group("org")
    p = command("add", cmd_org_add, "add an organisation (ADMIN)", org)
    p.add_argument("name")

    member = parsers.group("member")
    p = command("add", cmd_member_add, "add a member to an organisation (ADMIN)", member)
    p.add_argument("org", type=positive_int, help="organisation id")
    p.add_argument("address", type=address, help="the member's account (0x...; mixed case must be a valid EIP-55 checksum)")
    p.add_argument("--role", action="append", help="grant a role too (repeatable): REGISTRAR, APPROVER, DEPLOYER, RESPONDER, ADMIN")
    p = command("remove", cmd_member_remove, "remove a member and its APPROVER role (ADMIN)", member)
    p.add_argument("address", type=address, help="the member's account")
    index_args(command("list", cmd_member_list, "list members, organisations and roles (members from the index)", member))

    role = parsers.group("role")
    for name in ("grant", "revoke"):
        p = command(name, cmd_role, f"{name} a role (ADMIN)", role)
        p.add_argument("role", help="REGISTRAR, APPROVER, DEPLOYER, RESPONDER or ADMIN")
        p.add_argument("address", type=address, help="the account (0x...; mixed case must be a valid EIP-55 checksum)")

    policy = parsers.group("policy")
    p = command("set", cmd_policy_set, "set the approval policy of a service in an environment (ADMIN)", policy)
    p.add_argument("service", help=SERVICE_HELP)
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--threshold", type=int, required=True, help="approvals needed (M of N)")
    p.add_argument("--min-orgs", type=int, default=0, help="distinct organisations needed")
    p.add_argument("--ttl", type=duration, default=0, help="how long an approval stays valid (e.g. 7d; default forever)")
    p.add_argument("--wait", type=duration, default=0, help="minimum time after registration (e.g. 1h)")
    p.add_argument("--after", help="environment that must have completed a deployment of the artifact first")
    p.add_argument("--freeze-severity", type=int, default=0, help="open incidents of this severity or worse (1..4) freeze deployments; 0 never")
    p = command("show", cmd_policy_show, "show a policy", policy)
    p.add_argument("service", help=SERVICE_HELP)
    p.add_argument("env", help=ENV_HELP)

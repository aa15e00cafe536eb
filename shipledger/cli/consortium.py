"""The consortium's own records: `suite deploy`, `org`, `member`, `role` and `policy`.

Suite v2: a steward manages its own organisation's members (`member add|remove`) alone; adding an
organisation, granting a role across organisations and setting a policy are governance proposals
(`org add`, `role grant|revoke` and `policy set` propose them, as `governance propose` does)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from shipledger.cli import EXIT_OK, emit, tx_data
from shipledger.cli.shared import (
    ENV_HELP, SERVICE_HELP, address, counted, index_args, index_source, load_signer, open_ledger, rpc_url, shown,
    synced_index, writable_path,
)
from shipledger.errors import PathError, UsageError


BOOTSTRAP_KEYS = {"organisations", "members", "roles", "policies", "organisations_needed", "delay"}
POLICY_KEYS = {"service", "environment", "threshold", "min_organisations", "ttl", "min_wait", "prior_environment",
               "freeze_severity", "resolve_quorum", "required_attestations"}


def _entries(data: dict, key: str, fields: dict) -> list[dict]:
    """data[key] as a list of objects holding exactly `fields` (name -> required?)."""
    entries = data.get(key, [])
    if not isinstance(entries, list):
        raise UsageError(f"bootstrap {key!r} must be a list")
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise UsageError(f"bootstrap {key} entry {n} must be an object")
        unknown = sorted(set(entry) - set(fields))
        missing = sorted(k for k, needed in fields.items() if needed and k not in entry)
        if unknown or missing:
            raise UsageError(f"bootstrap {key} entry {n}: " + (f"unknown key {unknown[0]!r}" if unknown else f"missing {missing[0]!r}")
                             + f"; the keys are {', '.join(fields)}")
    return entries


def load_bootstrap(path: str):
    """The consortium a new suite starts with, from a JSON file in the shape of models.Bootstrap
    (README: "suite deploy"), every field checked before anything is deployed."""
    import json

    from shipledger._internal.names import parse_duration
    from shipledger.client import encode_bootstrap
    from shipledger.errors import path_error
    from shipledger.models import Bootstrap

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise path_error(path, exc) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"bootstrap {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"bootstrap {path} must hold a JSON object")
    unknown = sorted(set(data) - BOOTSTRAP_KEYS)
    if unknown:
        raise UsageError(f"bootstrap {path}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(BOOTSTRAP_KEYS))}")
    orgs = _entries(data, "organisations", {"name": True, "steward": True})
    if not orgs:
        raise UsageError(f"bootstrap {path} names no organisations: a suite needs at least one, with its steward")
    members = _entries(data, "members", {"address": True, "organisation": True, "approver": False})
    roles = _entries(data, "roles", {"role": True, "scope": False, "address": True})
    policies = _entries(data, "policies", dict.fromkeys(POLICY_KEYS, False) | {"service": True, "environment": True, "threshold": True})
    needed = data.get("organisations_needed", 1)
    if isinstance(needed, bool) or not isinstance(needed, int) or not 1 <= needed <= len(orgs):
        raise UsageError(f"bootstrap organisations_needed {needed!r} must be a whole number from 1 to {len(orgs)} (the organisations)")
    delay = parse_duration(data.get("delay", 0), "bootstrap delay")
    if delay != int(delay) or not 0 <= delay < 2**32:
        raise UsageError(f"bootstrap delay {data.get('delay')!r} must be whole seconds (e.g. 172800 or \"48h\")")
    for policy in policies:
        for key in ("ttl", "min_wait"):
            if key in policy:
                policy[key] = int(parse_duration(policy[key], f"bootstrap policy {key}"))
    try:
        bootstrap = Bootstrap(
            organisations=tuple((o["name"], o["steward"]) for o in orgs),
            members=tuple((m["address"], m["organisation"], m.get("approver", False)) for m in members),
            roles=tuple((r["role"], r.get("scope", ""), r["address"]) for r in roles),
            policies=tuple((p["service"], p["environment"], {k: v for k, v in p.items() if k not in ("service", "environment")})
                           for p in policies),
            organisations_needed=needed, delay=int(delay),
        )
        encode_bootstrap(bootstrap)  # checks names, addresses, roles and policies
    except TypeError as exc:
        raise UsageError(f"bootstrap {path}: {exc}") from None
    return bootstrap


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
    bootstrap = load_bootstrap(args.bootstrap)
    ledger = Ledger.deploy_suite(rpc_url(args), signer, bootstrap, out=args.out)
    emit(args, {"deployment": args.out, **ledger.book, "governance": ledger.governance_settings()},
         f"suite deployed on chain {ledger.chain_id}; address book {args.out}; {counted(len(bootstrap.organisations), 'organisation')}, "
         f"{bootstrap.organisations_needed} must approve a change; the deployer {signer.address} holds no role")
    return EXIT_OK


def cmd_org_add(args) -> int:
    from shipledger.cli.governance import cmd_propose_org_add

    return cmd_propose_org_add(args)  # a proposal: K organisations decide


MEMBER_ROLES_HINT = ("{role} is granted by the consortium, not by a steward alone: "
                     "`shipledger governance propose role-grant {role} ADDRESS` (after adding the member)")


def cmd_member_add(args) -> int:
    from shipledger.client import role_id

    approver = False
    for role in args.role or ():
        role_id(role)  # every input is checked before anything is sent
        name = role.upper().removesuffix("_ROLE")
        if name != "APPROVER":
            raise UsageError(MEMBER_ROLES_HINT.format(role=name))
        approver = True
    ledger = open_ledger(args)
    receipt = ledger.add_member(args.address, approver)
    org = ledger.organisation_of(args.address)
    emit(args, {"address": args.address, "org": org, "roles": ["APPROVER"] if approver else [], **tx_data(receipt)},
         f"{args.address} joined organisation {org}" + (" as an approver" if approver else ""))
    return EXIT_OK


def cmd_member_remove(args) -> int:
    receipt = open_ledger(args).remove_member(args.address)
    emit(args, {"address": args.address, **tx_data(receipt)}, f"{args.address} removed (every role it held revoked)")
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
    from shipledger.cli.governance import cmd_propose_role

    args.change = f"role-{args.role_command}"
    return cmd_propose_role(args)  # a proposal: K organisations decide


def cmd_policy_set(args) -> int:
    from shipledger.cli.governance import cmd_propose_policy

    return cmd_propose_policy(args)  # run by a steward: its proposal, with its organisation's approval


def policy_data(ledger, policy) -> dict:
    """A policy as the CLI shows it: the SDK's fields plus the prior environment by name (the chain
    keeps only its hash; the name comes from the policy's PolicySet event)."""
    key = policy.prior_environment_key
    return {**asdict(policy), "prior_environment": ledger.prior_environment_name(policy.service, policy.environment, key) if key else "",
            "required_attestations": [ledger.attestation_type_name(policy.service, policy.environment, k)
                                      for k in policy.required_attestation_keys]}


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
    from shipledger.cli.governance import add_policy_options, add_role_arguments

    command = parsers.command
    suite = parsers.group("suite")
    p = command("deploy", cmd_suite_deploy, "deploy the suite on any chain with its starting consortium; the deployer keeps no role", suite)
    p.add_argument("--out", required=True, help="address book to write, e.g. deployments/NAME.json")
    p.add_argument("--bootstrap", required=True, metavar="FILE",
                   help="JSON: the organisations and stewards, members, roles, policies, organisations_needed and delay (README)")
    p.add_argument("--force", action="store_true", help="overwrite an existing address book")

    org = parsers.group("org")
    p = command("add", cmd_org_add, "propose a new organisation with its steward (a steward; = governance propose org-add)", org)
    p.add_argument("name")
    p.add_argument("--steward", type=address, required=True, help="the organisation's steward (meant to be a multisig)")

    member = parsers.group("member")
    p = command("add", cmd_member_add, "add a member to your organisation (its steward)", member)
    p.add_argument("address", type=address, help="the member's account (0x...; mixed case must be a valid EIP-55 checksum)")
    p.add_argument("--role", action="append", help="approver: the member votes for your organisation. Other roles are "
                   "granted by governance (`governance propose role-grant`)")
    p = command("remove", cmd_member_remove, "remove a member and every role it holds (its organisation's steward)", member)
    p.add_argument("address", type=address, help="the member's account")
    index_args(command("list", cmd_member_list, "list members, organisations and roles (members from the index)", member))

    role = parsers.group("role")
    for name in ("grant", "revoke"):
        add_role_arguments(command(name, cmd_role, f"propose to {name} a role (a steward; = governance propose role-{name})", role))

    policy = parsers.group("policy")
    add_policy_options(command("set", cmd_policy_set, "propose the approval policy of a service in an environment (a steward; "
                               "= governance propose policy-set)", policy))
    p = command("show", cmd_policy_show, "show a policy", policy)
    p.add_argument("service", help=SERVICE_HELP)
    p.add_argument("env", help=ENV_HELP)

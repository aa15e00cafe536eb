"""`shipledger governance`: the changes the consortium makes together.

Every change to organisations, stewards, cross-organisation roles, policies and the governance
settings is a proposal. A steward proposes (its organisation is the first approval), stewards of
other organisations approve, and at the K-th approval the Governance contract decides, field by
field, whether the change weakens anything: a tightening change executes in that transaction, a
weakening one waits out the delay and then anyone may `execute` it. Any steward may `cancel` it
before. `policy set`, `org add` and `role grant|revoke` are proposals too (see consortium.py).

Exit codes as everywhere: a steward-only step by someone else, executing too early or without
enough organisations, approving twice are denials (3); an unknown proposal id is bad input (2).
"""

from __future__ import annotations

from datetime import datetime, timezone

from shipledger.cli import EXIT_OK, emit, tx_data
from shipledger.cli.shared import ENV_HELP, SERVICE_HELP, address, counted, duration, open_ledger, positive_int, shown, warn_case_twins
from shipledger.errors import UsageError

SCOPE_OPTIONS = {"REGISTRAR": "--service", "ATTESTOR": "--type"}  # the roles granted for one service / type


# ---------------------------------------------------------------------- building changes

def add_policy_options(p) -> None:
    """The options of `policy set` and `governance propose policy-set`."""
    p.add_argument("service", help=SERVICE_HELP)
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--threshold", type=int, required=True, help="approvals needed (M of N)")
    p.add_argument("--min-orgs", type=int, default=0, help="distinct organisations needed")
    p.add_argument("--ttl", type=duration, default=0, help="how long an approval stays valid from its signing (e.g. 7d; default forever)")
    p.add_argument("--wait", type=duration, default=0, help="minimum time after registration (e.g. 1h)")
    p.add_argument("--after", help="environment that must have completed a deployment of the artifact first")
    p.add_argument("--freeze-severity", type=int, default=0,
                   help="open incidents of this severity or worse (1..4) freeze deployments; 0 never")
    p.add_argument("--resolve-quorum", type=int, default=1, metavar="N",
                   help="responders of N distinct organisations must resolve a freezing incident (default 1)")
    p.add_argument("--require-attestation", action="append", default=[], metavar="TYPE",
                   help="an attestation type every artifact needs before the gate allows it (repeatable; at most 8)")


def policy_change(ledger, args):
    """(target, data) of the policy the options describe, every field checked."""
    if len(set(args.require_attestation)) != len(args.require_attestation):
        raise UsageError("--require-attestation names a type twice")
    if len(args.require_attestation) > 8:
        raise UsageError(f"a policy requires at most 8 attestation types, not {len(args.require_attestation)}")
    warn_case_twins(ledger, services=[args.service], environments=[args.env, args.after])
    return ledger.change_policy(
        args.service, args.env, threshold=args.threshold, min_organisations=args.min_orgs, ttl=args.ttl,
        min_wait=args.wait, prior_environment=args.after or "", freeze_severity=args.freeze_severity,
        resolve_quorum=args.resolve_quorum, required_attestations=args.require_attestation,
    )


def role_change(ledger, args, grant: bool):
    """(target, data) of granting or revoking ROLE to ADDRESS, for --service S (REGISTRAR) or --type T
    (ATTESTOR), or everywhere. APPROVER is not granted by governance: stewards manage it."""
    from shipledger.client import role_id

    role_id(args.role)  # an unknown role is named before anything else
    role = args.role.upper().removesuffix("_ROLE")
    if role == "APPROVER":
        raise UsageError("APPROVER is managed by each organisation's steward: `shipledger member add ADDRESS --role approver` "
                         "(or `member remove`), run by the steward")
    scope = ""
    for option, value in (("--service", args.service), ("--type", args.type)):
        if value is None:
            continue
        if SCOPE_OPTIONS.get(role) != option:
            held = ", ".join(f"{o} for {r}" for r, o in SCOPE_OPTIONS.items())
            raise UsageError(f"{option} does not go with {role} ({held}; other roles are held everywhere)")
        scope = value
    return ledger.change_role(grant, role, args.address, scope)


def organisation_id(ledger, text: str) -> int:
    """An organisation named by its id (1..255) or its name (from the OrganisationAdded events)."""
    if text.isdigit():
        org = int(text)
        if not 1 <= org <= 255:
            raise UsageError(f"organisation {org} does not exist (ids are 1 to 255)")
        return org
    found = [e["org"] for e in ledger.events("OrganisationAdded") if e["name"] == text]
    if not found:
        raise UsageError(f"no organisation is named {text!r}")
    return found[-1]


# ---------------------------------------------------------------------- reporting

def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_state(ledger, proposal) -> dict:
    """What an executed change changed, read back from the chain."""
    change = proposal.summary
    if proposal.kind == "policy-set":
        from shipledger.cli.consortium import policy_data

        policy = ledger.policy(change["service"], change["environment"])
        return {"policy": policy_data(ledger, policy) if policy else None}
    if proposal.kind == "org-add":
        orgs = [e["org"] for e in ledger.events("OrganisationAdded") if e["name"] == change["name"]]
        return {"organisation": {"org": orgs[-1] if orgs else None, "name": change["name"], "steward": change["steward"]}}
    if proposal.kind == "steward-set":
        from shipledger._internal.chain import call

        return {"organisation": {"org": change["org"], "steward": call(ledger.registry.functions.stewardOf(change["org"]))}}
    if proposal.kind in ("role-grant", "role-revoke"):
        from shipledger.errors import role_name

        role = role_name(bytes.fromhex(change["role"].removeprefix("0x")))
        return {"role": {"role": role, "scope": change["scope"], "address": change["account"],
                         "held": ledger.has_role(role, change["account"], change["scope"])}}
    if proposal.kind == "member-remove":
        return {"member": {"address": change["account"], "org": ledger.organisation_of(change["account"]) or None}}
    if proposal.kind == "settings":
        return {"governance": ledger.governance_settings()}
    return {}


def state_text(proposal) -> str:
    p = proposal
    head = f"proposal {p.id} ({p.kind}): {p.approvals} of {p.needed} organisations approved"
    if p.state == "pending":
        return f"{head}; pending: stewards of {counted(p.needed - p.approvals, 'more organisation')} must approve it " \
               f"(`shipledger governance approve {p.id}`)"
    if p.state == "scheduled":
        return (f"{head}; it weakens the rules, so it waits until {_when(p.executable_at)} (unix {p.executable_at}); any steward "
                f"may cancel it until then, and after it anyone may run `shipledger governance execute {p.id}`")
    if p.state == "executed":
        return f"{head}; executed" + (" after its delay (it weakened the rules)" if p.weakening else " (it only tightens)")
    return f"{head}; {p.state}"


def report(args, ledger, proposal, receipt=None) -> int:
    """The proposal as --json prints it (Proposal.to_json, the transaction, and the new state once
    executed), or its sentence."""
    data = proposal.to_json()
    if receipt is not None:
        data.update(tx_data(receipt))
    text = state_text(proposal)
    if proposal.executed:
        state = new_state(ledger, proposal)
        data["new_state"] = state
        text += "; now " + shown(_state_sentence(state))
    emit(args, data, text)
    return EXIT_OK


def _state_sentence(state: dict) -> str:
    if "policy" in state:
        p = state["policy"]
        if p is None:
            return "no policy"
        return (f"policy version {p['version']} of {p['service']} in {p['environment']}: {counted(p['threshold'], 'approval')}"
                + (f" from {counted(p['min_organisations'], 'organisation')}" if p["min_organisations"] else ""))
    if "organisation" in state:
        o = state["organisation"]
        return f"organisation {o['org']}" + (f" ({o['name']})" if o.get("name") else "") + f" has steward {o['steward']}"
    if "role" in state:
        r = state["role"]
        where = f" for {r['scope']}" if r["scope"] else " everywhere"
        return f"{r['address']} {'holds' if r['held'] else 'does not hold'} {r['role']}{where}"
    if "member" in state:
        return f"{state['member']['address']} is " + ("still a member" if state["member"]["org"] else "no longer a member")
    if "governance" in state:
        g = state["governance"]
        return f"{counted(g['organisations_needed'], 'organisation')} must approve a change; a weakening one waits {g['delay']}s"
    return ""


# ---------------------------------------------------------------------- commands

def cmd_propose_policy(args) -> int:
    ledger = open_ledger(args)
    proposal = ledger.propose(policy_change(ledger, args))
    return report(args, ledger, proposal, ledger.last_receipt)


def cmd_propose_org_add(args) -> int:
    ledger = open_ledger(args)
    return report(args, ledger, ledger.propose(ledger.change_org_add(args.name, args.steward)), ledger.last_receipt)


def cmd_propose_steward_set(args) -> int:
    ledger = open_ledger(args)
    change = ledger.change_steward(organisation_id(ledger, args.org), args.address)
    return report(args, ledger, ledger.propose(change), ledger.last_receipt)


def cmd_propose_role(args) -> int:
    ledger = open_ledger(args)
    change = role_change(ledger, args, grant=args.change == "role-grant")
    return report(args, ledger, ledger.propose(change), ledger.last_receipt)


def cmd_propose_member_remove(args) -> int:
    ledger = open_ledger(args)
    return report(args, ledger, ledger.propose(ledger.change_member_remove(args.address)), ledger.last_receipt)


def cmd_propose_settings(args) -> int:
    if args.organisations_needed is None and args.delay is None:
        raise UsageError("propose settings needs --organisations-needed K, --delay DUR, or both")
    ledger = open_ledger(args)
    now = ledger.governance_settings()
    needed = now["organisations_needed"] if args.organisations_needed is None else args.organisations_needed
    delay = now["delay"] if args.delay is None else args.delay
    return report(args, ledger, ledger.propose(ledger.change_settings(needed, delay)), ledger.last_receipt)


def cmd_step(args) -> int:
    """approve, cancel or execute a proposal."""
    ledger = open_ledger(args)
    step = {"approve": ledger.approve_proposal, "cancel": ledger.cancel_proposal, "execute": ledger.execute_proposal}
    proposal = step[args.governance_command](args.id)
    return report(args, ledger, proposal, ledger.last_receipt)


def _shown_proposal(p) -> dict:
    return {**p.to_json(), "created_at": p.created_at, "target": p.target, "data": p.data}


def cmd_show(args) -> int:
    ledger = open_ledger(args, need_signer=False)
    proposal = ledger.proposal(args.id)
    if args.json:
        emit(args, _shown_proposal(proposal))
        return EXIT_OK
    print(state_text(proposal))
    print(f"  organisations approved: {', '.join(map(str, proposal.organisations)) or '-'}")
    print(f"  created: {_when(proposal.created_at)}")
    if proposal.executable_at:
        print(f"  executable from: {_when(proposal.executable_at)}")
    for key, value in proposal.summary.items():
        print(shown(f"  {key}: {value}"))
    return EXIT_OK


def cmd_list(args) -> int:
    ledger = open_ledger(args, need_signer=False)
    proposals = ledger.proposals(pending_only=args.pending)
    if args.json:
        emit(args, {"proposals": [_shown_proposal(p) for p in proposals]})
        return EXIT_OK
    for p in proposals:
        print(shown(f"{p.id:>4}  {p.kind:13} {p.state:9}  {p.approvals}/{p.needed}"
                    + (f"  executable {_when(p.executable_at)}" if p.state == "scheduled" else "")))
    if not proposals:
        print("no pending proposals" if args.pending else "no proposals")
    return EXIT_OK


def add_role_arguments(p) -> None:
    p.add_argument("role", help="REGISTRAR, DEPLOYER, RESPONDER or ATTESTOR")
    p.add_argument("address", type=address, help="the account (a member of an organisation)")
    p.add_argument("--service", help="REGISTRAR of this service only (default: every service)")
    p.add_argument("--type", help="ATTESTOR of this attestation type only (default: every type)")


def add_commands(parsers) -> None:
    command = parsers.command
    gov = parsers.group("governance")
    if not hasattr(gov, "add_parser"):
        return  # another command was asked for
    p = command("propose", None, "propose a change, as a steward (your organisation approves it)", gov)
    propose = p.add_subparsers(dest="change", required=True, metavar="CHANGE")
    add_policy_options(command("policy-set", cmd_propose_policy, "set the approval policy of a service in an environment", propose))
    p = command("org-add", cmd_propose_org_add, "add an organisation with its steward", propose)
    p.add_argument("name", help="the organisation's name")
    p.add_argument("--steward", type=address, required=True, help="its steward's account (meant to be a multisig)")
    p = command("steward-set", cmd_propose_steward_set, "give an organisation a new steward", propose)
    p.add_argument("org", help="organisation id or name")
    p.add_argument("address", type=address, help="the new steward's account")
    for name in ("role-grant", "role-revoke"):
        add_role_arguments(command(name, cmd_propose_role, f"{name.split('-')[1]} a role held across organisations", propose))
    p = command("member-remove", cmd_propose_member_remove, "remove a member of any organisation (its steward may do it alone)", propose)
    p.add_argument("address", type=address, help="the member's account")
    p = command("settings", cmd_propose_settings, "change K (organisations needed) or the delay of weakening changes", propose)
    p.add_argument("--organisations-needed", type=positive_int, metavar="K", help="organisations whose stewards must approve")
    p.add_argument("--delay", type=duration, metavar="DUR", help="how long a weakening change waits, e.g. 48h")

    for name, text in (("approve", "approve a proposal for your organisation (a steward)"),
                       ("cancel", "cancel a proposal that has not executed (any steward)"),
                       ("execute", "execute a scheduled proposal whose delay has passed (anyone)")):
        command(name, cmd_step, text, gov).add_argument("id", type=positive_int, help="proposal id")
    command("show", cmd_show, "show one proposal", gov).add_argument("id", type=positive_int, help="proposal id")
    p = command("list", cmd_list, "list proposals", gov)
    p.add_argument("--pending", action="store_true", help="only those pending or scheduled")

"""The `shipledger` command line.

Human text goes to stderr; `--json` prints one JSON document to stdout. Exit codes: 0 ok,
1 operational error, 2 usage or bad input, 3 denied. The gate fails closed: if it cannot get and
decode an answer it exits 1, never 0. Only the gate's path is kept free of web3 (it runs before
every deployment); other commands import the SDK when they run.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from shipledger.models import Verdict
from shipledger.errors import AddressBookError, ConnectionFailed, ShipledgerError, UsageError, gate_sentence, role_name

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_BOOK = Path("deployments") / "devnet.json"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED = 0, 1, 2, 3
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# ---------------------------------------------------------------------- input helpers

def duration(text: str) -> int:
    """'90', '90s', '15m', '24h', '7d' -> seconds."""
    text = text.strip().lower()
    has_unit = bool(text) and not text[-1].isdigit()
    unit = DURATION_UNITS.get(text[-1]) if has_unit else 1
    number = text[:-1] if has_unit else text
    if unit is None or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    return int(number) * unit


def positive_int(text: str) -> int:
    """Ids and organisation numbers: 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 1")
    return int(text)


def artifact_digest(args) -> str:
    """The digest named by --digest or computed from the ARTIFACT path."""
    from shipledger._internal.names import format_digest, parse_digest

    if getattr(args, "digest", None):
        if getattr(args, "artifact", None):
            raise UsageError("name the artifact by a path or by --digest, not both")
        return format_digest(parse_digest(args.digest))
    if not getattr(args, "artifact", None):
        raise UsageError("name the artifact by a path or by --digest sha256:<hex>")
    from shipledger.digests import digest_path

    return digest_path(args.artifact)


def file_digest(path: str | None) -> str:
    if not path:
        return ""
    from shipledger.digests import digest_path

    if not Path(path).is_file():
        raise UsageError(f"{path} is not a file")
    return digest_path(path)


def book_path(args) -> Path:
    value = args.deployment or os.environ.get("SHIPLEDGER_DEPLOYMENT")
    if value:
        return Path(value)
    if DEFAULT_BOOK.is_file():
        return DEFAULT_BOOK
    raise AddressBookError("no address book: pass --deployment FILE, set SHIPLEDGER_DEPLOYMENT, or run `shipledger devnet up`")


def rpc_url(args, book: dict | None = None) -> str:
    return args.rpc or os.environ.get("SHIPLEDGER_RPC_URL") or (book or {}).get("rpc_url") or DEFAULT_RPC


def load_signer(args):
    """The signing account from --keystore or the key environment variable; None if neither is set."""
    from eth_account import Account

    if args.keystore:
        try:
            keystore = json.loads(Path(args.keystore).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read keystore {args.keystore}: {exc}") from None
        password = os.environ.get("SHIPLEDGER_KEYSTORE_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise UsageError("set SHIPLEDGER_KEYSTORE_PASSWORD: no terminal to ask for the keystore password")
            password = getpass.getpass(f"password for {args.keystore}: ")
        try:
            return Account.from_key(Account.decrypt(keystore, password))
        except ValueError:
            raise UsageError(f"wrong password for keystore {args.keystore}") from None
    key = os.environ.get(args.key_env)
    if not key:
        return None
    try:
        return Account.from_key(key.strip())
    except (ValueError, TypeError):
        raise UsageError(f"${args.key_env} does not hold a valid private key") from None


def open_ledger(args, need_signer: bool = True):
    from shipledger.client import Ledger, load_address_book

    book = load_address_book(book_path(args))
    signer = load_signer(args)
    if need_signer and signer is None:
        raise UsageError(f"this command sends a transaction: set ${args.key_env} or pass --keystore FILE")
    return Ledger.connect(rpc_url(args, book), book, signer)


def say(args, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr)


def emit(args, data: dict, text: str | None = None) -> None:
    """--json: the one JSON document on stdout; otherwise the sentence on stderr."""
    if args.json:
        print(json.dumps(data, default=str))
    elif text:
        print(text, file=sys.stderr)


def tx_data(receipt) -> dict:
    return asdict(receipt) if receipt else {"tx_hash": None}


# ---------------------------------------------------------------------- the gate (fast path)

def _rpc_batch(url: str, calls: list[tuple[str, list]]) -> list:
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            replies = json.load(response)
    except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
        raise ConnectionFailed(f"cannot reach the JSON-RPC node at {url}: {exc}") from None
    if not isinstance(replies, list):
        replies = [replies]
    by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
    results = []
    for i, (method, _) in enumerate(calls):
        reply = by_id.get(i)
        if reply is None or "error" in reply:
            detail = reply.get("error", {}).get("message") if reply else "no answer"
            raise ConnectionFailed(f"{method} failed: {detail}")
        results.append(reply["result"])
    return results


def cmd_gate(args) -> int:
    from shipledger._internal.gatecall import decode_gate_result, encode_gate_call
    from shipledger._internal.names import check_name, parse_digest

    digest = artifact_digest(args)
    call = encode_gate_call(parse_digest(digest), check_name("service", args.service), check_name("environment", args.env))
    path = book_path(args)
    try:
        book = json.loads(path.read_text())
        ledger_address = book["contracts"]["DeploymentLedger"]["address"]
        expected_chain = int(book["chain_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AddressBookError(f"address book {path} is missing or malformed: {exc}") from None
    chain_id, code, answer = _rpc_batch(rpc_url(args, book), [
        ("eth_chainId", []),
        ("eth_getCode", [ledger_address, "latest"]),
        ("eth_call", [{"to": ledger_address, "data": "0x" + call.hex()}, "latest"]),
    ])
    if int(chain_id, 16) != expected_chain:
        raise AddressBookError(f"the address book is for chain {expected_chain} but the node is chain {int(chain_id, 16)}")
    if code in ("0x", ""):
        raise AddressBookError(f"no contract code at {ledger_address} on chain {expected_chain}")
    result = decode_gate_result(bytes.fromhex(answer.removeprefix("0x")))
    sentence = gate_sentence(result.reason, result.details)
    emit(args, {"allowed": result.allowed, "reason": result.reason, "details": result.details, "digest": digest},
         f"{'ALLOWED' if result.allowed else 'DENIED'}: {args.service} {digest} to {args.env}: {sentence}")
    return EXIT_OK if result.allowed else EXIT_DENIED


# ---------------------------------------------------------------------- devnet and suite

def cmd_devnet_up(args) -> int:
    from shipledger._internal.devnet import devnet_up

    say(args, "starting the devnet (anvil), deploying the suite and a demo consortium...")
    state = devnet_up(port=args.port)
    public = {k: state[k] for k in ("rpc_url", "deployment", "chain_id", "accounts")}
    emit(args, public, f"devnet on {state['rpc_url']} (chain {state['chain_id']}); address book {state['deployment']}\n"
         f"export SHIPLEDGER_RPC_URL={state['rpc_url']} SHIPLEDGER_DEPLOYMENT={state['deployment']}")
    return EXIT_OK


def cmd_devnet_down(args) -> int:
    from shipledger._internal.devnet import devnet_down

    stopped = devnet_down()
    emit(args, {"stopped": stopped}, "devnet stopped" if stopped else "no devnet was running")
    return EXIT_OK


def cmd_suite_deploy(args) -> int:
    from shipledger.client import Ledger

    signer = load_signer(args)
    if signer is None:
        raise UsageError(f"deploying needs a key: set ${args.key_env} or pass --keystore FILE")
    if Path(args.out).exists() and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it")
    ledger = Ledger.deploy_suite(rpc_url(args), signer, out=args.out)
    emit(args, {"deployment": args.out, **ledger.book}, f"suite deployed on chain {ledger.chain_id}; address book {args.out}; admin {signer.address}")
    return EXIT_OK


# ---------------------------------------------------------------------- consortium and policy

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
    members = open_ledger(args, need_signer=False).members()
    if args.json:
        emit(args, {"members": members})
    else:
        for m in members:
            print(f"{m['address']}  org {m['org']} ({m['organisation']})  {' '.join(m['roles']) or '-'}")
    return EXIT_OK


def cmd_role(args) -> int:
    ledger = open_ledger(args)
    fn = ledger.grant_role if args.role_cmd == "grant" else ledger.revoke_role
    receipt = fn(args.role, args.address)
    emit(args, {"role": args.role.upper(), "address": args.address, **tx_data(receipt)}, f"{args.role_cmd}ed {args.role.upper()} {'to' if args.role_cmd == 'grant' else 'from'} {args.address}")
    return EXIT_OK


def cmd_policy_set(args) -> int:
    ledger = open_ledger(args)
    receipt = ledger.set_policy(
        args.service, args.env, threshold=args.threshold, min_organisations=args.min_orgs, ttl=args.ttl,
        min_wait=args.wait, prior_environment=args.after or "", freeze_severity=args.freeze_severity,
    )
    policy = ledger.policy(args.service, args.env)
    emit(args, {"policy": asdict(policy), **tx_data(receipt)},
         f"policy for {args.service} in {args.env} is now version {policy.version}: {args.threshold} approvals"
         f" from {args.min_orgs} organisations")
    return EXIT_OK


def cmd_policy_show(args) -> int:
    policy = open_ledger(args, need_signer=False).policy(args.service, args.env)
    if policy is None:
        emit(args, {"policy": None}, f"no policy for {args.service} in {args.env}: the gate denies everything")
        return EXIT_OK
    if args.json:
        emit(args, {"policy": asdict(policy)})
    else:
        for key, value in asdict(policy).items():
            print(f"{key:20} {value}")
    return EXIT_OK


# ---------------------------------------------------------------------- artifacts

def _spec_from_args(args, digest: str):
    from shipledger.models import ArtifactSpec

    return ArtifactSpec(
        digest=digest, service=args.service, version=args.version, commit=args.commit or "",
        committed_at=args.committed_at or 0, provenance=file_digest(args.provenance), sbom=file_digest(args.sbom),
        uri=args.uri or "",
    )


def _specs_from_batch(path: str):
    from shipledger.client import Ledger
    from shipledger.digests import digest_path
    from shipledger.models import ArtifactSpec

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read batch file {path}: {exc.strerror}") from None
    specs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise UsageError("each line must be a JSON object")
            digest = item.get("digest") or digest_path(item["artifact"])
            spec = ArtifactSpec(
                digest=digest, service=item["service"], version=item["version"], commit=item.get("commit", ""),
                committed_at=int(item.get("committed_at", 0)), provenance=item.get("provenance", ""),
                sbom=item.get("sbom", ""), uri=item.get("uri", ""),
            )
            Ledger.validate_spec(spec)
            specs.append(spec)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UsageError) as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
    if not specs:
        raise UsageError(f"{path} holds no artifacts")
    return specs


def cmd_register(args) -> int:
    if args.batch:
        return _register_batch(args)
    if not args.service or not args.version:
        raise UsageError("register needs --service and --version (or --batch FILE)")
    from shipledger._internal.names import parse_digest

    spec = _spec_from_args(args, artifact_digest(args))
    ledger = open_ledger(args)
    parse_digest(spec.digest)
    receipt = ledger.register(spec)
    text = (f"registered {args.service} {args.version} as {spec.digest}" if receipt
            else f"{args.service} {args.version} ({spec.digest}) was already registered: nothing sent")
    emit(args, {"digest": spec.digest, "service": args.service, "version": args.version, "registered": receipt is not None, **tx_data(receipt)}, text)
    return EXIT_OK


def _register_batch(args) -> int:
    specs = _specs_from_batch(args.batch)
    ledger = open_ledger(args)
    progress = None
    if not args.json and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True, console=None)
        task = bar.add_task("registering", total=len(specs))
        bar.start()
        progress = lambda n: bar.advance(task, n)  # noqa: E731
    try:
        receipts = ledger.register_many(specs, progress=progress)
    finally:
        if progress:
            bar.stop()
    emit(args, {"artifacts": len(specs), "transactions": [asdict(r) for r in receipts]},
         f"registered {len(specs)} artifacts in {len(receipts)} transactions")
    return EXIT_OK


def cmd_revoke(args) -> int:
    digest = artifact_digest(args)
    receipt = open_ledger(args).revoke(digest, args.service, args.reason)
    emit(args, {"digest": digest, **tx_data(receipt)}, f"revoked {args.service} {digest}: {args.reason}")
    return EXIT_OK


# ---------------------------------------------------------------------- votes

def cmd_approve(args) -> int:
    digest = artifact_digest(args)
    if args.sign_only:
        return _sign_only(args, digest, "approve")
    ledger = open_ledger(args)
    receipt = ledger.approve(digest, args.service, args.env, args.comment or "")
    emit(args, {"digest": digest, "approver": ledger.signer_address, "recorded": receipt is not None, **tx_data(receipt)},
         f"{ledger.signer_address} approved {args.service} {digest} for {args.env}" if receipt
         else f"{ledger.signer_address} had already approved it: nothing sent")
    return EXIT_OK


def _sign_only(args, digest: str, decision: str) -> int:
    from shipledger.client import load_address_book, sign_approval

    if not args.out:
        raise UsageError("--sign-only needs --out FILE")
    book = load_address_book(book_path(args))
    signer = load_signer(args)
    if signer is None:
        raise UsageError(f"signing needs a key: set ${args.key_env} or pass --keystore FILE")
    signed = sign_approval(
        signer, chain_id=int(book["chain_id"]), registry=book["contracts"]["ReleaseRegistry"]["address"],
        digest=digest, service=args.service, environment=args.env, decision=decision,
        deadline=None if args.valid_for is None else int(__import__("time").time()) + args.valid_for,
    )
    Path(args.out).write_text(json.dumps(asdict(signed), indent=2) + "\n")
    emit(args, {"out": args.out, **asdict(signed)}, f"signed a {decision} by {signer.address} into {args.out}; anyone may submit it")
    return EXIT_OK


def cmd_approvals_submit(args) -> int:
    from shipledger.models import SignedApproval

    approvals = []
    for path in args.files:
        try:
            approvals.append(SignedApproval(**json.loads(Path(path).read_text())))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise UsageError(f"{path} is not a signed approval: {exc}") from None
    ledger = open_ledger(args)
    receipt = ledger.submit_approvals(approvals)
    emit(args, {"submitted": len(approvals), **tx_data(receipt)}, f"submitted {len(approvals)} signed votes")
    return EXIT_OK


def cmd_reject(args) -> int:
    digest = artifact_digest(args)
    ledger = open_ledger(args)
    receipt = ledger.reject(digest, args.service, args.env, args.reason)
    emit(args, {"digest": digest, "recorded": receipt is not None, **tx_data(receipt)},
         f"{ledger.signer_address} rejected {args.service} {digest} for {args.env}: {args.reason}")
    return EXIT_OK


def cmd_withdraw(args) -> int:
    digest = artifact_digest(args)
    ledger = open_ledger(args)
    receipt = ledger.withdraw(digest, args.service, args.env)
    emit(args, {"digest": digest, **tx_data(receipt)}, f"{ledger.signer_address} withdrew its vote")
    return EXIT_OK


# ---------------------------------------------------------------------- deployments and incidents

def cmd_deploy(args) -> int:
    if args.deploy_cmd == "start":
        digest = artifact_digest(args)
        ledger = open_ledger(args)
        deployment_id = ledger.start_deployment(digest, args.service, args.env, args.percent)
        emit(args, {"deployment_id": deployment_id, "digest": digest, "percent": args.percent},
             f"deployment {deployment_id} started: {args.service} {digest} to {args.env} at {args.percent}%")
        if not args.json:
            print(deployment_id)
        return EXIT_OK
    ledger = open_ledger(args)
    if args.deploy_cmd == "promote":
        receipt, text = ledger.promote(args.id, args.percent), f"deployment {args.id} promoted to {args.percent}%"
    elif args.deploy_cmd == "complete":
        receipt, text = ledger.complete(args.id), f"deployment {args.id} completed; it is live"
    elif args.deploy_cmd == "fail":
        receipt, text = ledger.fail(args.id, args.reason), f"deployment {args.id} failed: {args.reason}"
    else:
        restored = ledger.rollback(args.id, args.reason)
        emit(args, {"deployment_id": args.id, "restored": restored},
             f"deployment {args.id} rolled back; live is now {restored or 'nothing'}")
        return EXIT_OK
    emit(args, {"deployment_id": args.id, **tx_data(receipt)}, text)
    return EXIT_OK


def cmd_incident(args) -> int:
    ledger = open_ledger(args)
    if args.incident_cmd == "open":
        incident_id = ledger.open_incident(args.service, args.env, args.severity, args.title, args.suspect or [],
                                           file_digest(args.details), args.details_uri or "")
        emit(args, {"incident_id": incident_id}, f"incident {incident_id} opened (severity {args.severity}): {args.title}")
        if not args.json:
            print(incident_id)
        return EXIT_OK
    if args.incident_cmd == "ack":
        receipt, text = ledger.acknowledge(args.id), f"incident {args.id} acknowledged"
    elif args.incident_cmd == "mitigate":
        receipt, text = ledger.mitigate(args.id, args.rollback or 0), f"incident {args.id} mitigated"
    else:
        receipt = ledger.resolve(args.id, file_digest(args.postmortem), args.postmortem_uri or (args.postmortem or ""))
        text = f"incident {args.id} resolved"
    emit(args, {"incident_id": args.id, **tx_data(receipt)}, text)
    return EXIT_OK


# ---------------------------------------------------------------------- reads

PENDING_SHOWN = 5  # newest registrations listed under "pending approvals"


def cmd_status(args) -> int:
    from shipledger._internal.names import format_digest

    ledger = open_ledger(args, need_signer=False)
    state = ledger.target_state(args.service, args.env)
    events = ledger.history(args.service)
    versions = {f["digest"]: f["version"] for e in events if e.kind == "registered" for f in [e.fields]}
    started = {e.fields["id"]: e.fields["digest"] for e in events if e.kind == "deployed" and e.environment == args.env}

    def describe(deployment_id: int) -> dict | None:
        if not deployment_id:
            return None
        digest = started.get(deployment_id, "")
        return {**asdict(ledger.deployment(deployment_id)), "digest": format_digest(bytes.fromhex(digest[2:])) if digest else "",
                "version": versions.get(digest, "")}

    # Pending: registered, never started here; each with what the gate says now.
    pending = []
    for digest, version in list(versions.items())[::-1]:
        if digest in started.values() or len(pending) == PENDING_SHOWN:
            continue
        name = format_digest(bytes.fromhex(digest[2:]))
        gate = ledger.gate(name, args.service, args.env)
        pending.append({"digest": name, "version": version, "allowed": gate.allowed, "reason": gate.reason, "details": gate.details})
    incidents = [asdict(ledger.incident(i)) for i in ledger.open_incidents(args.service, args.env)]
    policy = ledger.policy(args.service, args.env)
    data = {"service": args.service, "environment": args.env, "live": describe(state.live),
            "active": describe(state.active), "open_incidents": incidents, "pending_approvals": pending,
            "policy": asdict(policy) if policy else None}
    if args.json:
        emit(args, data)
        return EXIT_OK
    live, active = data["live"], data["active"]
    print(f"{args.service} in {args.env}")
    print(f"  live:      {'%s (deployment %d)' % (live['version'], live['id']) if live else 'nothing'}")
    print(f"  rolling:   {'%s (deployment %d) at %d%%' % (active['version'], active['id'], active['percent']) if active else 'nothing'}")
    print(f"  incidents: {', '.join('#%d sev%d %s' % (i['id'], i['severity'], i['status']) for i in incidents) or 'none open'}")
    print(f"  policy:    {'version %d' % policy.version if policy else 'none (everything denied)'}")
    for p in pending:
        print(f"  pending:   {p['version']} {p['digest'][:19]}.. {'ready' if p['allowed'] else gate_sentence(p['reason'], p['details'])}")
    return EXIT_OK


HISTORY_COLUMNS = ("block", "time", "kind", "service", "environment", "summary", "tx")


def _summary(event) -> str:
    f = event.fields
    pick = {
        "registered": lambda: f"{f['version']} sha256:{f['digest'][2:14]}.. by {f['registrant'][:10]}",
        "approved": lambda: f"by {f['approver'][:10]} (org {f['org']}){' signed' if f['bySignature'] else ''}",
        "rejected": lambda: f"by {f['approver'][:10]}: {f['reason']}",
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
        "policy-set": lambda: f"version {f['newPolicy']['version']}: {f['newPolicy']['threshold']} approvals, "
                              f"{f['newPolicy']['minOrganisations']} orgs",
    }.get(event.kind)
    return pick() if pick else ", ".join(f"{k}={v}" for k, v in f.items() if not k.endswith("Key"))[:80]


def cmd_history(args) -> int:
    import datetime as dt

    events = open_ledger(args, need_signer=False).history(args.service, args.env)
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
        for r in rows:
            print(f"{r['block']:>6}  {r['time']:25}  {r['kind']:22}  {r['service']:12}  {r['environment']:8}  {r['summary']}")
    return EXIT_OK


# ---------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--rpc", default=argparse.SUPPRESS, help="JSON-RPC URL (env SHIPLEDGER_RPC_URL)")
    common.add_argument("--deployment", default=argparse.SUPPRESS, help="address book (env SHIPLEDGER_DEPLOYMENT; default deployments/devnet.json)")
    common.add_argument("--key-env", default=argparse.SUPPRESS, metavar="VAR", help="environment variable holding the private key (default SHIPLEDGER_PRIVATE_KEY)")
    common.add_argument("--keystore", default=argparse.SUPPRESS, metavar="FILE", help="encrypted keystore (password from SHIPLEDGER_KEYSTORE_PASSWORD or a prompt)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document to stdout")

    parser = argparse.ArgumentParser(prog="shipledger", parents=[common], description="Provably approved deployments on a consortium EVM chain.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, handler, help_text, parent=sub):
        p = parent.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def artifact_args(p, positional=True):
        if positional:
            p.add_argument("artifact", nargs="?", help="file or directory to hash")
        p.add_argument("--digest", help="sha256:<64 hex> instead of a path")

    devnet = sub.add_parser("devnet", help="the embedded development chain").add_subparsers(dest="devnet_cmd", required=True)
    p = command("up", cmd_devnet_up, "start anvil, deploy the suite and a demo consortium (reuses a running one)", devnet)
    p.add_argument("--port", type=int, default=8545)
    command("down", cmd_devnet_down, "stop the devnet", devnet)

    suite = sub.add_parser("suite", help="deploy the contracts").add_subparsers(dest="suite_cmd", required=True)
    p = command("deploy", cmd_suite_deploy, "deploy the suite on any chain; the signer becomes ADMIN", suite)
    p.add_argument("--out", required=True, help="address book to write, e.g. deployments/NAME.json")
    p.add_argument("--force", action="store_true", help="overwrite an existing address book")

    org = sub.add_parser("org", help="organisations").add_subparsers(dest="org_cmd", required=True)
    p = command("add", cmd_org_add, "add an organisation (ADMIN)", org)
    p.add_argument("name")

    member = sub.add_parser("member", help="consortium members").add_subparsers(dest="member_cmd", required=True)
    p = command("add", cmd_member_add, "add a member to an organisation (ADMIN)", member)
    p.add_argument("org", type=positive_int, help="organisation id")
    p.add_argument("address")
    p.add_argument("--role", action="append", help="grant a role too (repeatable): REGISTRAR, APPROVER, DEPLOYER, RESPONDER, ADMIN")
    p = command("remove", cmd_member_remove, "remove a member and its APPROVER role (ADMIN)", member)
    p.add_argument("address")
    command("list", cmd_member_list, "list members, organisations and roles", member)

    role = sub.add_parser("role", help="roles").add_subparsers(dest="role_cmd", required=True)
    for name in ("grant", "revoke"):
        p = command(name, cmd_role, f"{name} a role (ADMIN)", role)
        p.add_argument("role")
        p.add_argument("address")

    policy = sub.add_parser("policy", help="approval policies").add_subparsers(dest="policy_cmd", required=True)
    p = command("set", cmd_policy_set, "set the approval policy of a service in an environment (ADMIN)", policy)
    p.add_argument("service")
    p.add_argument("env")
    p.add_argument("--threshold", type=int, required=True, help="approvals needed (M of N)")
    p.add_argument("--min-orgs", type=int, default=0, help="distinct organisations needed")
    p.add_argument("--ttl", type=duration, default=0, help="how long an approval stays valid (e.g. 7d; default forever)")
    p.add_argument("--wait", type=duration, default=0, help="minimum time after registration (e.g. 1h)")
    p.add_argument("--after", help="environment that must have completed a deployment of the artifact first")
    p.add_argument("--freeze-severity", type=int, default=0, help="open incidents of this severity or worse (1..4) freeze deployments; 0 never")
    p = command("show", cmd_policy_show, "show a policy", policy)
    p.add_argument("service")
    p.add_argument("env")

    p = command("register", cmd_register, "register an artifact (REGISTRAR)")
    artifact_args(p)
    p.add_argument("--service")
    p.add_argument("--version")
    p.add_argument("--commit", help="source commit SHA (40 or 64 hex)")
    p.add_argument("--committed-at", type=int, help="commit time, unix seconds")
    p.add_argument("--uri", help="where the artifact lives")
    p.add_argument("--provenance", metavar="FILE", help="provenance document to hash")
    p.add_argument("--sbom", metavar="FILE", help="SBOM document to hash")
    p.add_argument("--batch", metavar="FILE.jsonl", help="register many: one JSON object per line")

    p = command("revoke", cmd_revoke, "revoke (quarantine) an artifact (REGISTRAR)")
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--reason", required=True)

    p = command("approve", cmd_approve, "approve an artifact for an environment (APPROVER)")
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--comment")
    p.add_argument("--sign-only", action="store_true", help="sign an EIP-712 approval offline instead of sending")
    p.add_argument("--out", help="where --sign-only writes the signature (JSON)")
    p.add_argument("--valid-for", type=duration, help="signature lifetime (default 7d)")

    approvals = sub.add_parser("approvals", help="offline-signed approvals").add_subparsers(dest="approvals_cmd", required=True)
    p = command("submit", cmd_approvals_submit, "submit signed approvals (any account)", approvals)
    p.add_argument("files", nargs="+")

    p = command("reject", cmd_reject, "veto an artifact for an environment until withdrawn (APPROVER)")
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--reason", required=True)

    p = command("withdraw", cmd_withdraw, "withdraw your approval or rejection (APPROVER)")
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)

    p = command("gate", cmd_gate, "may this artifact be deployed now? exit 0 allowed, 3 denied, 1 unknown")
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)

    deploy = sub.add_parser("deploy", help="rollouts (DEPLOYER)").add_subparsers(dest="deploy_cmd", required=True)
    p = command("start", cmd_deploy, "start a rollout if the gate allows it; prints the deployment id", deploy)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--percent", type=int, default=100)
    p = command("promote", cmd_deploy, "raise the rollout percentage", deploy)
    p.add_argument("id", type=positive_int)
    p.add_argument("--percent", type=int, required=True)
    p = command("complete", cmd_deploy, "mark a 100%% rollout completed (it becomes live)", deploy)
    p.add_argument("id", type=positive_int)
    for name, text in (("fail", "mark a rollout failed"), ("rollback", "roll back to the deployment live before")):
        p = command(name, cmd_deploy, text, deploy)
        p.add_argument("id", type=positive_int)
        p.add_argument("--reason", required=True)

    incident = sub.add_parser("incident", help="incidents (RESPONDER)").add_subparsers(dest="incident_cmd", required=True)
    p = command("open", cmd_incident, "open an incident; prints its id", incident)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--severity", type=int, required=True, help="1 (most severe) to 4")
    p.add_argument("--title", required=True)
    p.add_argument("--suspect", type=positive_int, action="append", help="suspected deployment id (repeatable)")
    p.add_argument("--details", metavar="FILE", help="details document to hash")
    p.add_argument("--details-uri")
    for name in ("ack", "mitigate", "resolve"):
        p = command(name, cmd_incident, f"{name} an incident", incident)
        p.add_argument("id", type=positive_int)
        if name == "mitigate":
            p.add_argument("--rollback", type=positive_int, help="the rolled-back deployment that mitigated it")
        if name == "resolve":
            p.add_argument("--postmortem", metavar="FILE", help="postmortem document to hash")
            p.add_argument("--postmortem-uri")

    p = command("status", cmd_status, "live artifact, rollout, open incidents and policy of a service in an environment")
    p.add_argument("service")
    p.add_argument("env")

    p = command("history", cmd_history, "every recorded event, from the chain")
    p.add_argument("--service")
    p.add_argument("--env")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("rpc", None), ("deployment", None), ("key_env", "SHIPLEDGER_PRIVATE_KEY"), ("keystore", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        return args.handler(args)
    except ShipledgerError as exc:
        print(f"shipledger: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("shipledger: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, no traceback unless asked
        if os.environ.get("SHIPLEDGER_DEBUG"):
            raise
        print(f"shipledger: internal error: {exc.__class__.__name__}: {exc} (set SHIPLEDGER_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

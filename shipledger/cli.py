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
    from shipledger.network.devnet import devnet_up

    say(args, "starting the devnet (anvil), deploying the suite and a demo consortium...")
    state = devnet_up(port=args.port)
    public = {k: state[k] for k in ("rpc_url", "deployment", "chain_id", "accounts")}
    emit(args, public, f"devnet on {state['rpc_url']} (chain {state['chain_id']}); address book {state['deployment']}\n"
         f"export SHIPLEDGER_RPC_URL={state['rpc_url']} SHIPLEDGER_DEPLOYMENT={state['deployment']}")
    return EXIT_OK


def cmd_devnet_down(args) -> int:
    from shipledger.network.devnet import devnet_down

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
        suspects, chosen = list(args.suspect or []), []
        if args.auto_suspect:
            chosen = _auto_suspects(args, ledger)
            suspects += [s.deployment_id for s in chosen if s.deployment_id not in suspects]
        elif args.deps:
            raise UsageError("--deps goes with --auto-suspect")
        incident_id = ledger.open_incident(args.service, args.env, args.severity, args.title, suspects,
                                           file_digest(args.details), args.details_uri or "")
        extra = {"suspects": suspects, "auto_suspects": [asdict(s) for s in chosen]} if args.auto_suspect else {}
        emit(args, {"incident_id": incident_id, **extra}, f"incident {incident_id} opened (severity {args.severity}): {args.title}")
        if not args.json:
            print(incident_id)
        return EXIT_OK
    if args.incident_cmd == "ack":
        receipt, text = ledger.acknowledge(args.id), f"incident {args.id} acknowledged"
    elif args.incident_cmd == "mitigate":
        receipt, text = ledger.mitigate(args.id, args.rollback or 0), f"incident {args.id} mitigated"
    else:
        receipt = ledger.resolve(args.id, file_digest(args.postmortem), args.postmortem_uri or "")  # a local path means nothing to other parties
        text = f"incident {args.id} resolved"
    emit(args, {"incident_id": args.id, **tx_data(receipt)}, text)
    return EXIT_OK


# `incident suspects` and `incident open --auto-suspect` (the ranking is shipledger/delivery/suspects.py)

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
        say(args, f"auto-suspect: deployment {s.deployment_id} ({s.service} in {s.environment}), score {s.score}: "
                  + "; ".join(s.reasons))
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
    print(f"incident {incident.id} sev{incident.severity} {incident.service} in {incident.environment}, opened {opened}"
          f" (block {incident.opened.block_number}): {incident.title}")
    if not ranked:
        window = f"{args.window // 3600}h" if args.window % 3600 == 0 else f"{args.window}s"
        print(f"  no deployment of {incident.service} or its dependencies in {incident.environment} in the {window} before it")
    for place, s in enumerate(ranked, 1):
        named = ", named when opened" if s.named else ""
        print(f"{place:>3}. deployment {s.deployment_id}  {s.service} in {s.environment}  score {s.score}"
              f"  ({s.state}, {s.digest[:19]}..{named})")
        for reason in s.reasons:
            print(f"       {reason}")
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


def _history_filters(args) -> dict:
    """Index.history(...) arguments from the history filters, all checked before any sync."""
    from eth_utils import is_address

    from shipledger.compliance.index import digest_hex, expand_kinds, parse_when

    if args.approver and not is_address(args.approver):
        raise UsageError(f"--approver {args.approver!r} is not an Ethereum address")
    return {
        "service": args.service, "environment": args.env, "approver": args.approver, "org": args.org,
        "digest": digest_hex(args.digest) if args.digest else None,
        "kinds": expand_kinds(args.kind) if args.kind else None,
        "since": parse_when(args.since) if args.since else None,
        "until": parse_when(args.until, end=True) if args.until else None,
    }


def cmd_history(args) -> int:
    import datetime as dt

    filters = _history_filters(args)
    index = synced_index(args)
    try:
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
        for r in rows:
            print(f"{r['block']:>6}  {r['time']:25}  {r['kind']:22}  {r['service']:12}  {r['environment']:8}  {r['summary']}")
    return EXIT_OK


# ---------------------------------------------------------------------- the index (shipledger/compliance/index.py)

def index_args(parser) -> None:
    """--db and --no-sync for every command that reads the index."""
    parser.add_argument("--db", default=None, metavar="PATH", help="index database (default .shipledger/index.sqlite)")
    parser.add_argument("--no-sync", action="store_true", help="read the index as it is, without syncing it first")


def _sync_index(index, source, args, confirmations: int = 0):
    """Sync with a progress bar on a terminal (never with --json)."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return index.sync(source, confirmations=confirmations)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:  # stdout is for the command's output
        task = bar.add_task("indexing blocks", total=None)
        return index.sync(source, confirmations=confirmations,
                          progress=lambda done, total: bar.update(task, completed=done, total=total))


def index_source(args):
    """Where an index sync reads: the node and the suite of the address book, checked without web3."""
    from shipledger._internal.book import load_address_book
    from shipledger.compliance.index import Endpoint

    book = load_address_book(book_path(args))
    return Endpoint.connect(rpc_url(args, book), book)


def synced_index(args, source=None):
    """The index at args.db, synced first unless args.no_sync from `source` (an index Endpoint or a
    connected Ledger; by default the address book's, see index_source)."""
    from shipledger.compliance.index import DEFAULT_DB, Index

    index = Index.open(getattr(args, "db", None) or DEFAULT_DB)
    if getattr(args, "no_sync", False):
        return index
    try:
        _sync_index(index, source or index_source(args), args, getattr(args, "confirmations", 0) or 0)
    except BaseException:
        index.close()
        raise
    return index


def cmd_index_sync(args) -> int:
    from dataclasses import asdict as as_dict

    from shipledger.compliance.index import DEFAULT_DB, Index

    source = index_source(args)
    index = Index.open(args.db or DEFAULT_DB)
    try:
        result = _sync_index(index, source, args, args.confirmations)
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


# ---------------------------------------------------------------------- trace and audit (shipledger/compliance/trace.py, audit.py)

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
    print(f"{result.service} {result.version} {result.digest}{' (REVOKED)' if result.revoked else ''}")
    for s in result.steps:
        when = dt.datetime.fromtimestamp(s.timestamp, dt.timezone.utc).isoformat(timespec="seconds")
        print(f"{s.block_number:>7}  {when}  {s.kind:21}  {s.environment or '-':10}  {s.summary}  (tx {s.tx_hash})")
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
                f" {summary['rollbacks']} rollbacks, {summary['contracts_checked']} contracts and"
                f" {summary['blocks_checked']} blocks{' (all)' if args.full else ' (a sample)'}")
    if args.json:
        emit(args, {"clean": report.clean, "findings": [asdict(f) for f in report.findings], "summary": summary})
    else:
        for f in report.findings:
            where = f"deployment {f.deployment}" if f.deployment is not None else (f.address or f"block {f.block}")
            print(f"{f.rule:34}  {where:20}  {f.message}" + (f" (tx {f.tx_hash})" if f.tx_hash else ""))
        say(args, sentence)
    return EXIT_OK if report.clean else EXIT_DENIED


# ---------------------------------------------------------------------- the canary judge (shipledger/delivery/judge.py)

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


# ---------------------------------------------------------------------- progressive delivery (shipledger/delivery/rollout.py)

def _progress_line(text: str) -> None:
    """The controller's one line per step and verdict, on stderr (stdout keeps --json's one document)."""
    print(text, file=sys.stderr, flush=True)


def _rollout_done(args, state: dict, store) -> int:
    from shipledger.delivery.rollout import exit_code, summary

    data = summary(state, store)
    reason = (data.get("reason") or "").removeprefix("aborted: ")  # the phase already says it
    tail = f": {data['error']}" if data.get("error") else (f": {reason}" if reason else "")
    incident = f"; incident {data['incident_id']} opened" if data.get("incident_id") else ""
    emit(args, data, f"rollout {data['deployment_id']} {data['phase']} at {data['percent']}%{tail}{incident}")
    return exit_code(state)


def cmd_rollout(args) -> int:
    from shipledger.delivery import rollout
    from shipledger._internal.names import check_name

    store = rollout.Store(args.state_dir)
    if args.rollout_cmd == "status":
        return _rollout_status(args, store)
    if args.rollout_cmd == "run":
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
    elif args.rollout_cmd == "resume":
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
    judge_name = args.judge
    if judge_name is None:
        try:
            judge_name = json.loads(path.read_text()).get("judge_version") or "manual"
        except (ValueError, UnicodeDecodeError, AttributeError):
            judge_name = "manual"
    digest = file_digest(args.report)
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


# ---------------------------------------------------------------------- exports and the DORA report (export.py, dora.py, report.py)

def _output_path(text: str) -> Path:
    path = Path(text)
    if path.is_dir() or not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: " + ("it is a directory" if path.is_dir() else f"{path.parent} does not exist"))
    return path


def cmd_export(args) -> int:
    from shipledger.compliance import export

    filters = _history_filters(args)
    out = _output_path(args.out)
    index = synced_index(args)
    try:
        count = export.write_export(export.records(index, index.history(**filters)), out, args.format)
    finally:
        index.close()
    emit(args, {"out": str(out), "format": args.format, "records": count}, f"exported {count} records to {out} ({args.format})")
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
        (chain_id,) = export.Rpc(url).batch([("eth_chainId", [])])
        if int(chain_id, 16) != int(book["chain_id"]):
            raise AddressBookError(f"the address book is for chain {book['chain_id']} but {url} is chain {int(chain_id, 16)}")
    if args.json or not sys.stderr.isatty():
        result = export.verify_export(args.file, url, book=book, batch_size=args.batch_size)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("fetching receipts and blocks", total=None)
            result = export.verify_export(args.file, url, book=book, batch_size=args.batch_size,
                                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    data = {"file": str(args.file), "ok": result.ok, "lines": result.lines, "transactions": result.transactions,
            "blocks": result.blocks, "suite_checked": book is not None,
            "mismatches": [{"line": m.line, "problems": m.problems} for m in result.mismatches]}
    if args.json:
        emit(args, data)
    else:
        for m in result.mismatches:
            for problem in m.problems:
                print(f"{args.file}:{m.line}: {problem}", file=sys.stderr)
        print(f"{len(result.mismatches)} of {result.lines} lines do not match the chain" if result.mismatches
              else f"all {result.lines} lines match the chain ({result.transactions} transactions, {result.blocks} blocks)",
              file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_DENIED


def _report_time(text: str | None, end: bool) -> int | None:
    import datetime as dt

    from shipledger.compliance.index import parse_when

    if not text:
        return None
    when = parse_when(text, end=end)
    if not isinstance(when, dt.datetime):
        raise UsageError(f"{text!r}: the report takes a date (YYYY-MM-DD) or an ISO datetime, not a block number")
    return int(when.timestamp())


def cmd_report(args) -> int:
    from shipledger.compliance import dora

    if not args.out and not args.json:
        raise UsageError("report needs --out FILE.html (or --json for the numbers)")
    since, until = _report_time(args.since, False), _report_time(args.until, True)
    out = _output_path(args.out) if args.out else None
    prod_envs = tuple(e.strip() for value in (args.prod_env or ["prod,production"]) for e in value.split(",") if e.strip())
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

    def history_filter_args(p):
        """The filters of `history` and `export` (Index.history's), and the index options."""
        p.add_argument("--digest", help="events of one artifact (sha256:<hex> or 0x<hex>), its deployments' steps included")
        p.add_argument("--approver", metavar="ADDR", help="votes cast by this approver")
        p.add_argument("--org", metavar="NAME|ID", help="events naming this organisation (votes, members, slots)")
        p.add_argument("--kind", action="append", metavar="KIND",
                       help="event kind (repeatable): registered, approved, rejected, deployed, rolled-back, incident, ...")
        p.add_argument("--since", metavar="WHEN", help="from this block number, date (YYYY-MM-DD) or ISO datetime (UTC)")
        p.add_argument("--until", metavar="WHEN", help="up to this block number, date (whole day) or ISO datetime")
        index_args(p)

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
    suspect_args(p, auto=True)
    for name in ("ack", "mitigate", "resolve"):
        p = command(name, cmd_incident, f"{name} an incident", incident)
        p.add_argument("id", type=positive_int)
        if name == "mitigate":
            p.add_argument("--rollback", type=positive_int, help="the rolled-back deployment that mitigated it")
        if name == "resolve":
            p.add_argument("--postmortem", metavar="FILE", help="postmortem document to hash")
            p.add_argument("--postmortem-uri")

    p = command("suspects", cmd_incident_suspects, "rank the deployments that may have caused an incident, with reasons", incident)
    p.add_argument("id", type=positive_int)
    p.add_argument("--limit", type=positive_int, help="show only the top N")
    suspect_args(p)

    canary = sub.add_parser("canary", help="canary analysis").add_subparsers(dest="canary_cmd", required=True)
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

    rollout = sub.add_parser("rollout", help="progressive delivery judged by the canary (DEPLOYER; RESPONDER for incidents)")
    rollout = rollout.add_subparsers(dest="rollout_cmd", required=True)
    state_dir_help = "where rollout state and reports live (env SHIPLEDGER_ROLLOUT_DIR; default .shipledger/rollouts)"
    p = command("run", cmd_rollout, "roll out in steps; each step judged; pass promotes, marginal pauses, fail rolls back. "
                "Exit 0 completed, 3 paused/rolled back, 1 stopped on an error", rollout)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
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
    p.add_argument("--reason", required=True)
    p.add_argument("--state-dir", help=state_dir_help)

    p = command("status", cmd_status, "live artifact, rollout, open incidents and policy of a service in an environment")
    p.add_argument("service")
    p.add_argument("env")

    p = command("history", cmd_history, "every recorded event, from the index (synced with the chain first)")
    p.add_argument("--service")
    p.add_argument("--env")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    history_filter_args(p)

    index = sub.add_parser("index", help="the SQLite index of the ledger's events").add_subparsers(dest="index_cmd", required=True)
    p = command("sync", cmd_index_sync, "pull new events of the suite into the index (incremental, reorg-safe)", index)
    p.add_argument("--db", default=None, metavar="PATH", help="index database (default .shipledger/index.sqlite)")
    p.add_argument("--confirmations", type=int, default=0, metavar="N", help="index only blocks at least N deep")

    p = command("trace", cmd_trace, "chain of custody of an artifact: registration, votes, deployments, verdicts, incidents")
    artifact_args(p)
    p.add_argument("--service", required=True)
    index_args(p)

    p = command("audit", cmd_audit, "re-check every deployment against the rules, the code and the index; exit 3 on findings")
    p.add_argument("--service")
    p.add_argument("--env")
    p.add_argument("--full", action="store_true", help="check every indexed block against the chain, not a sample")
    index_args(p)

    p = command("export", cmd_export, "write the (filtered) history to CSV or JSON Lines, one record per event, atomically")
    p.add_argument("--format", choices=("csv", "jsonl"), required=True)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--service")
    p.add_argument("--env")
    history_filter_args(p)

    p = command("verify-export", cmd_verify_export, "check every line of an export against the chain; exit 3 on any mismatch")
    p.add_argument("file")
    p.add_argument("--batch-size", type=positive_int, default=250, metavar="N", help="JSON-RPC requests per batch (default 250)")

    p = command("report", cmd_report, "DORA metrics of production as a self-contained HTML report (or --json)")
    p.add_argument("--out", metavar="FILE.html")
    p.add_argument("--service")
    p.add_argument("--env", help="report on this environment alone (default: the production environments)")
    p.add_argument("--since", metavar="DATE", help="from this date (YYYY-MM-DD) or ISO datetime (UTC)")
    p.add_argument("--until", metavar="DATE", help="up to this date (whole day) or ISO datetime (default: now)")
    p.add_argument("--prod-env", action="append", metavar="NAMES",
                   help="production environment names, comma-separated or repeated (default prod,production)")
    p.add_argument("--repo", default=".", metavar="DIR", help="git repository for commit times not on the ledger (default .)")
    index_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("rpc", None), ("deployment", None), ("key_env", "SHIPLEDGER_PRIVATE_KEY"), ("keystore", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows up here rather than at exit, where it can still be handled
        return code
    except BrokenPipeError:
        # The reader went away (`shipledger history --json | head`): nothing is wrong with the command.
        # Point stdout at /dev/null so Python's own flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
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

"""The release path: `register`, `revoke`, `approve` (by transaction or signed offline), `approvals
submit`, `reject`, `withdraw`, and `gate`, which runs before every deployment.

The gate's path imports no web3 and builds no other command group: its start-up time is measured
against `cast` in bench/gate_vs_cast.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from shipledger.cli import EXIT_DENIED, EXIT_OK, emit, tx_data
from shipledger.cli.shared import artifact_args, artifact_digest, book_path, duration, file_digest, load_signer, open_ledger, output_path, rpc_url
from shipledger.errors import AddressBookError, UsageError, gate_sentence, path_error


def cmd_gate(args) -> int:
    from shipledger._internal.gatecall import decode_gate_result, encode_gate_call
    from shipledger._internal.rpc import quick_batch
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
    chain_id, code, answer = quick_batch(rpc_url(args, book), [
        ("eth_chainId", []),
        ("eth_getCode", [ledger_address, "latest"]),
        ("eth_call", [{"to": ledger_address, "data": "0x" + call.hex()}, "latest"]),
    ], timeout=15)
    if int(chain_id, 16) != expected_chain:
        raise AddressBookError(f"the address book is for chain {expected_chain} but the node is chain {int(chain_id, 16)}")
    if code in ("0x", ""):
        raise AddressBookError(f"no contract code at {ledger_address} on chain {expected_chain}")
    result = decode_gate_result(bytes.fromhex(answer.removeprefix("0x")))
    sentence = gate_sentence(result.reason, result.details)
    emit(args, {"allowed": result.allowed, "reason": result.reason, "details": result.details, "digest": digest},
         f"{'ALLOWED' if result.allowed else 'DENIED'}: {args.service} {digest} to {args.env}: {sentence}")
    return EXIT_OK if result.allowed else EXIT_DENIED




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


def cmd_approve(args) -> int:
    if not args.sign_only:
        stray = [option for option, value in (("--out", args.out), ("--valid-for", args.valid_for)) if value is not None]
        if stray:
            raise UsageError(f"{' and '.join(stray)} only go with --sign-only (a vote sent now has neither)")
    elif args.comment:
        raise UsageError("--comment is not part of a signed vote: sign without it, or approve by transaction")
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
    if args.valid_for is not None and args.valid_for < 1:
        raise UsageError(f"--valid-for must be more than 0s: a signature valid for {args.valid_for}s has expired when it is made")
    out = output_path(args.out)
    book = load_address_book(book_path(args))
    signer = load_signer(args)
    if signer is None:
        raise UsageError(f"signing needs a key: set ${args.key_env} or pass --keystore FILE")
    signed = sign_approval(
        signer, chain_id=int(book["chain_id"]), registry=book["contracts"]["ReleaseRegistry"]["address"],
        digest=digest, service=args.service, environment=args.env, decision=decision,
        deadline=None if args.valid_for is None else int(__import__("time").time()) + args.valid_for,
    )
    try:
        out.write_text(json.dumps(asdict(signed), indent=2) + "\n")
    except OSError as exc:
        raise path_error(out, exc, "write") from None
    emit(args, {"out": args.out, **asdict(signed)}, f"signed a {decision} by {signer.address} into {args.out}; anyone may submit it")
    return EXIT_OK


def cmd_approvals_submit(args) -> int:
    from shipledger.client import Ledger
    from shipledger.models import SignedApproval

    approvals = []
    for path in args.files:
        try:
            approval = SignedApproval(**json.loads(Path(path).read_text()))
            Ledger.validate_approval(approval)
        except (OSError, UnicodeDecodeError) as exc:
            raise path_error(path, exc) from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise UsageError(f"{path} is not a signed approval: {exc}") from None
        except UsageError as exc:
            raise UsageError(f"{path} is not a valid signed approval: {exc}") from None
        approvals.append(approval)
    ledger = open_ledger(args)
    receipt = ledger.submit_approvals(approvals)
    emit(args, {"submitted": len(approvals), **tx_data(receipt)}, f"submitted {len(approvals)} signed votes")
    return EXIT_OK


def cmd_reject(args) -> int:
    digest = artifact_digest(args)
    ledger = open_ledger(args)
    receipt = ledger.reject(digest, args.service, args.env, args.reason)
    emit(args, {"digest": digest, "recorded": receipt is not None, **tx_data(receipt)},
         f"{ledger.signer_address} rejected {args.service} {digest} for {args.env}: {args.reason}" if receipt
         else f"{ledger.signer_address}'s veto of {args.service} {digest} for {args.env} already stands: nothing sent, "
              f"and the reason {args.reason!r} is not recorded (withdraw, then reject again, to record a new one)")
    return EXIT_OK


def cmd_withdraw(args) -> int:
    digest = artifact_digest(args)
    ledger = open_ledger(args)
    receipt = ledger.withdraw(digest, args.service, args.env)
    emit(args, {"digest": digest, **tx_data(receipt)}, f"{ledger.signer_address} withdrew its vote")
    return EXIT_OK



def add_commands(parsers) -> None:
    command = parsers.command
    p = command("register", cmd_register)
    artifact_args(p)
    p.add_argument("--service")
    p.add_argument("--version")
    p.add_argument("--commit", help="source commit SHA (40 or 64 hex)")
    p.add_argument("--committed-at", type=int, help="commit time, unix seconds")
    p.add_argument("--uri", help="where the artifact lives")
    p.add_argument("--provenance", metavar="FILE", help="provenance document to hash")
    p.add_argument("--sbom", metavar="FILE", help="SBOM document to hash")
    p.add_argument("--batch", metavar="FILE.jsonl", help="register many: one JSON object per line")

    p = command("revoke", cmd_revoke)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--reason", required=True)

    p = command("approve", cmd_approve)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--comment")
    p.add_argument("--sign-only", action="store_true", help="sign an EIP-712 approval offline instead of sending")
    p.add_argument("--out", help="where --sign-only writes the signature (JSON)")
    p.add_argument("--valid-for", type=duration, help="signature lifetime (default 7d)")

    approvals = parsers.group("approvals")
    p = command("submit", cmd_approvals_submit, "submit signed approvals (any account)", approvals)
    p.add_argument("files", nargs="+")

    p = command("reject", cmd_reject)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--reason", required=True)

    p = command("withdraw", cmd_withdraw)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)

    p = command("gate", cmd_gate)
    artifact_args(p)
    p.add_argument("--service", required=True)
    p.add_argument("--env", required=True)

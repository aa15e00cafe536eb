"""The release path: `register`, `attest`, `revoke`, `approve` (by transaction or signed offline),
`approvals submit`, `reject`, `withdraw`, and `gate`, which runs before every deployment.

The gate's path imports no web3 and builds no other command group: its start-up time is measured
against `cast` in bench/gate_vs_cast.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shipledger.cli import EXIT_DENIED, EXIT_OK, emit, tx_data
from shipledger.cli.shared import (
    SERVICE_HELP, artifact_args, artifact_digest, book_path, counted, duration, file_digest, load_signer, open_ledger,
    output_path, rpc_urls, target_args, warn_case_twins,
)
from shipledger.errors import AddressBookError, ConnectionFailed, NothingRecorded, UsageError, gate_sentence, path_error


def asdict(value) -> dict:
    """dataclasses.asdict, imported when used: dataclasses pulls in inspect (~13 ms), which the gate
    does not need."""
    from dataclasses import asdict as to_dict

    return to_dict(value)


GATE_TIMEOUT = 15  # seconds for the node's answer unless --timeout says otherwise; then the gate fails closed


def cmd_gate(args) -> int:
    from shipledger._internal.endpoints import in_sync
    from shipledger._internal.freshness import check_block_age, max_block_age
    from shipledger._internal.gatecall import decode_gate_answer, encode_gate_call
    from shipledger._internal.rpc import quick_batch
    from shipledger._internal.names import check_name, parse_digest

    digest = artifact_digest(args)
    call = encode_gate_call(parse_digest(digest), check_name("service", args.service), check_name("environment", args.env))
    path = book_path(args)
    try:
        book = json.loads(path.read_text())
    except OSError as exc:
        raise AddressBookError(f"cannot read address book {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AddressBookError(f"address book {path} is not readable JSON: {exc}") from None
    try:
        ledger_address = book["contracts"]["DeploymentLedger"]["address"]
        expected_chain = int(book["chain_id"])
        if not isinstance(ledger_address, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, IndexError):
        # the gate checks the book's shape without eth_utils (its start-up time counts)
        raise AddressBookError(f"address book {path} is malformed: it needs a numeric chain_id and"
                               " contracts.DeploymentLedger.address") from None
    limit = max_block_age(book)
    calls = [
        ("eth_chainId", []),
        ("eth_getCode", [ledger_address, "latest"]),
        ("eth_call", [{"to": ledger_address, "data": "0x" + call.hex()}, "latest"]),
    ]
    if limit is not None:  # the newest block's time, in the same request: a stalled chain's answer is stale
        calls.append(("eth_getBlockByNumber", ["latest", False]))
    timeout = args.timeout or GATE_TIMEOUT
    urls = rpc_urls(args, book)
    nodes = in_sync(urls, timeout) if len(urls) > 1 else urls
    for url in nodes:  # a node that goes away between the head check and the gate: the next in sync
        try:
            chain_id, code, answer, *newest = quick_batch(url, calls, timeout=timeout)
            break
        except ConnectionFailed:
            if url == nodes[-1]:
                raise
    if int(chain_id, 16) != expected_chain:
        raise AddressBookError(f"the address book is for chain {expected_chain} but the node is chain {int(chain_id, 16)}")
    if newest:
        if not isinstance(newest[0], dict) or "timestamp" not in newest[0]:
            raise ConnectionFailed("the node gave no newest block: cannot tell whether the chain is making blocks")
        check_block_age(newest[0]["timestamp"], limit)
    if code in ("0x", ""):
        raise AddressBookError(f"no contract code at {ledger_address} on chain {expected_chain}")
    allowed, reason, details = decode_gate_answer(bytes.fromhex(answer.removeprefix("0x")))
    if "environment_key" in details or "attestation_key" in details:  # a name the answer holds by hash: name it
        details = _name_policy_key(details, book, url, args.service, args.env)
    emit(args, {"allowed": allowed, "reason": reason, "details": details, "digest": digest},
         f"{'ALLOWED' if allowed else 'DENIED'}: {args.service} {digest} to {args.env}: {gate_sentence(reason, details)}")
    return EXIT_OK if allowed else EXIT_DENIED


def _name_policy_key(details: dict, book: dict, url: str, service: str, environment: str) -> dict:
    """The gate's details with the prior environment's or the attestation type's name; as they were
    when it cannot be learnt (the answer, a denial, stands either way)."""
    from types import SimpleNamespace

    from shipledger.cli.shared import prior_environment_name

    try:
        endpoint = SimpleNamespace(url=url, registry=book["contracts"]["ReleaseRegistry"]["address"],
                                   start_block=min(int(c.get("block", 0)) for c in book["contracts"].values()))
    except (KeyError, TypeError, ValueError, AttributeError):
        return details
    if "environment_key" in details:
        return {**details, "environment": prior_environment_name(endpoint, service, environment, details["environment_key"])}
    return {**details, "attestation_type": prior_environment_name(endpoint, service, environment, details["attestation_key"],
                                                                  which="attestation")}


def _spec_from_args(args, digest: str):
    from shipledger.models import ArtifactSpec

    kind, uri = args.kind or "build", args.uri or ""
    if args.image:  # an image is kind image, and where it lives is its reference unless --uri says otherwise
        if args.kind not in (None, "image"):
            raise UsageError(f"--image registers an artifact of kind image, not {args.kind}")
        kind, uri = "image", uri or args.image.strip()
    return ArtifactSpec(
        digest=digest, service=args.service, version=args.version, commit=args.commit or "",
        committed_at=args.committed_at or 0, provenance=file_digest(args.provenance), sbom=file_digest(args.sbom),
        uri=uri, kind=kind,
    )


BATCH_KEYS = ("digest", "artifact", "service", "version", "kind", "commit", "committed_at", "provenance", "sbom", "uri")
BATCH_FORMAT = (
    "one JSON object per line (UTF-8, blank lines skipped): \"service\" and \"version\" (strings), "
    "\"digest\" (sha256:<64 hex>) or \"artifact\" (a path to hash, relative to the current directory), "
    "and optionally \"kind\" (build, image, config or infrastructure; default build), \"commit\" (hex SHA), \"committed_at\" (unix seconds, an integer), \"provenance\" and "
    "\"sbom\" (sha256: digests of those documents, not files as on the command line), \"uri\" (at most 2048 bytes)"
)


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise UsageError(f"key {key!r} appears twice")
    return dict(pairs)


def _spec_from_line(item):
    from shipledger.digests import digest_path
    from shipledger.models import ArtifactSpec

    if not isinstance(item, dict):
        raise UsageError("each line must be a JSON object")
    unknown = [k for k in item if k not in BATCH_KEYS]
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r}; the keys are {', '.join(BATCH_KEYS)}")
    for key in ("service", "version"):
        if key not in item:
            raise UsageError(f"missing key {key!r}")
    fields = {k: v for k, v in item.items() if v is not None or k in ("service", "version")}  # null: not given
    if ("digest" in fields) == ("artifact" in fields):
        raise UsageError('give "digest" or "artifact" (a path to hash), one of the two')
    if "artifact" in fields:
        path = fields.pop("artifact")
        if not isinstance(path, str) or not path:
            raise UsageError(f"artifact {path!r} must be a path")
        if not Path(path).exists():
            raise UsageError(f"artifact {path} does not exist")
        fields["digest"] = digest_path(path)
    return ArtifactSpec(**fields)


def _specs_from_batch(path: str):
    """The artifacts of a --batch file and their labels (FILE:LINE), every line checked."""
    from shipledger.client import Ledger

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read batch file {path}: {exc.strerror}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some Windows tools write
    specs, labels = [], []
    # split on newlines only: JSON strings may hold U+2028 and other characters str.splitlines() splits on
    for number, raw in enumerate(data.split(b"\n"), 1):
        label = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{label}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
        if not line.strip():
            continue
        try:
            spec = _spec_from_line(json.loads(line, object_pairs_hook=_unique_keys))
            Ledger.validate_spec(spec)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{label}: not JSON: {exc.msg} at column {exc.colno}") from None
        except (UsageError, ValueError) as exc:  # ValueError: an integer too long to parse
            raise UsageError(f"{label}: {exc}") from None
        specs.append(spec)
        labels.append(label)
    if not specs:
        raise UsageError(f"{path} holds no artifacts")
    return specs, labels


def cmd_register(args) -> int:
    if args.batch:
        return _register_batch(args)
    if not args.service or not args.version:
        raise UsageError("register needs --service and --version (or --batch FILE)")
    from shipledger._internal.names import parse_digest

    spec = _spec_from_args(args, artifact_digest(args))
    ledger = open_ledger(args)
    parse_digest(spec.digest)
    warn_case_twins(ledger, services=[spec.service])
    receipt = ledger.register(spec)
    text = (f"registered {args.service} {args.version} ({spec.kind}) as {spec.digest}" if receipt
            else f"{args.service} {args.version} ({spec.kind}, {spec.digest}) was already registered identically: nothing sent")
    emit(args, {"digest": spec.digest, "service": args.service, "version": args.version, "kind": spec.kind,
                "registered": receipt is not None, **tx_data(receipt)}, text)
    return EXIT_OK


def _register_batch(args) -> int:
    from shipledger.errors import ShipledgerError

    specs, labels = _specs_from_batch(args.batch)
    ledger = open_ledger(args)
    warn_case_twins(ledger, services=sorted({s.service for s in specs}))
    batch = ledger.batch_registration(specs, labels)  # refuses conflicts before sending anything
    progress = None
    if batch.todo and not args.json and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True, console=None)
        task = bar.add_task("registering", total=len(batch.todo))
        bar.start()
        progress = lambda n: bar.advance(task, n)  # noqa: E731
    failure, code = None, EXIT_OK
    try:
        batch.send(progress)
    except KeyboardInterrupt:
        failure, code = "interrupted", 130
    except ShipledgerError as exc:
        if all(chunk.state == "unsent" for chunk in batch.chunks):
            raise  # refused before anything reached the node (a missing role, say): a plain error
        failure, code = str(exc), exc.exit_code
    finally:
        if progress:
            bar.stop()
    if failure:
        batch.settle()
    result = batch.result()
    data = {
        "artifacts": result.artifacts, "registered": result.registered, "already": result.already,
        "failed": result.failed, "pending": result.pending, "not_sent": result.not_sent,
        "resume_at": result.resume_at, "transactions": [asdict(r) for r in result.transactions],
        "pending_transactions": list(result.pending_transactions), "error": failure,
    }
    if failure is None:
        emit(args, data, f"registered {result.registered} artifacts in {len(result.transactions)} transactions"
             + (f"; {result.already} were already registered" if result.already else "")
             + ("; nothing sent" if not result.transactions else ""))
        return EXIT_OK
    text = f"shipledger: {failure}: {result.registered} artifacts confirmed"
    if result.pending:
        text += (f", {result.pending} sent but not yet confirmed (handed to the node, which still mines them"
                 f" after this exit: {len(result.pending_transactions)} transactions)")
    if result.failed:
        text += f", {result.failed} in a transaction that reverted"
    text += f", {result.not_sent} not sent"
    if result.already:
        text += f", {result.already} already registered"
    if result.resume_at:
        text += (f". Resume from {result.resume_at}: run the same command again, it skips every line"
                 " already registered")
    if args.json:
        print(json.dumps(data))
    print(text, file=sys.stderr)
    return code


def cmd_attest(args) -> int:
    from shipledger._internal.names import check_name

    digest = artifact_digest(args)
    check_name("service", args.service)
    check_name("attestation type", args.type)
    document = file_digest(args.document)
    ledger = open_ledger(args)
    receipt = ledger.attest(digest, args.service, args.type, document, args.uri or "")
    emit(args, {"digest": digest, "service": args.service, "type": args.type, "document_digest": document,
                "uri": args.uri or "", "attestor": ledger.signer_address, **tx_data(receipt)},
         f"{ledger.signer_address} attested {args.service} {digest}: {args.type} document {document}")
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
    signed_at = int(__import__("time").time())  # the vote says when it was decided; the ttl runs from then
    signed = sign_approval(
        signer, chain_id=int(book["chain_id"]), registry=book["contracts"]["ReleaseRegistry"]["address"],
        digest=digest, service=args.service, environment=args.env, decision=decision, signed_at=signed_at,
        deadline=None if args.valid_for is None else signed_at + args.valid_for,
    )
    try:
        out.write_text(json.dumps(asdict(signed), indent=2) + "\n")
    except OSError as exc:
        raise path_error(out, exc, "write") from None
    emit(args, {"out": args.out, **asdict(signed)}, f"signed {'an approval' if decision == 'approve' else 'a rejection'} by {signer.address} into {args.out};"
         " anyone may submit it")
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
    receipt, skipped = ledger.submit_approvals(approvals)
    # The registry skips a bad vote (stale, expired, used nonce, not an approver...) instead of
    # reverting the batch; each skip is named here with the file it came from.
    for entry in skipped:
        entry["file"] = args.files[entry["index"]]
    recorded = len(approvals) - len(skipped)
    why = "".join(f"; skipped {e['file']} (signer {e['signer']}, nonce {e['nonce']}): {e['reason']}, "
                  f"{SKIP_WHY.get(e['reason'], e['reason'])}" for e in skipped)
    if not recorded:
        # Mined, yet nothing recorded: a denial (exit 3), with the transaction named in the sentence.
        raise NothingRecorded(f"none of the {counted(len(approvals), 'signed vote')} was recorded (transaction "
                              f"{receipt.tx_hash}, block {receipt.block_number}){why}")
    text = f"submitted {len(approvals)} signed votes: {recorded} recorded" + why.replace("; ", "\n  ")
    emit(args, {"submitted": len(approvals), "recorded": recorded, "skipped": skipped, **tx_data(receipt)}, text)
    return EXIT_OK


SKIP_WHY = {
    "bad_signature": "the signature does not verify for the signer on this chain and registry",
    "not_approver": "the signer does not hold APPROVER now",
    "nonce_used": "its nonce was already used or invalidated",
    "expired": "its deadline has passed, or lies further after signing than the policy's ttl allows",
    "stale": "the signer acted on this release later than it signed this (its latest action wins), or was "
             "admitted as an approver after signing",
    "signed_in_future": "it says it was signed later than the block's time",
    "refused": "the vote itself is refused (unknown or revoked artifact, no policy, the registrant's own vote, or the "
               "same vote already stands)",
}


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
    p.add_argument("--service", help=SERVICE_HELP)
    p.add_argument("--version", help="the artifact's version label, e.g. 1.4.2 (a version names one digest for good)")
    p.add_argument("--commit", help="source commit SHA (40 or 64 hex)")
    p.add_argument("--committed-at", type=int, help="commit time, unix seconds")
    p.add_argument("--kind", choices=("build", "image", "config", "infrastructure"), default=None,
                   help="what the artifact is (default build, image with --image); config and infrastructure changes go through the same policies")
    p.add_argument("--uri", help="where the artifact lives")
    p.add_argument("--provenance", metavar="FILE", help="provenance document to hash")
    p.add_argument("--sbom", metavar="FILE", help="SBOM document to hash")
    p.add_argument("--batch", metavar="FILE.jsonl", help=f"register many: {BATCH_FORMAT}. Lines already registered "
                   "identically are skipped, so a rerun after an interruption sends only what is missing")

    p = command("attest", cmd_attest)
    artifact_args(p)
    p.add_argument("--service", required=True, help=SERVICE_HELP)
    p.add_argument("--type", required=True, help="the attestation type, e.g. provenance, sbom, vuln-scan (a policy may require it)")
    p.add_argument("--document", required=True, metavar="FILE", help="the attestation document; its sha256 is recorded")
    p.add_argument("--uri", help="where the document can be read")

    p = command("revoke", cmd_revoke)
    artifact_args(p)
    p.add_argument("--service", required=True, help=SERVICE_HELP)
    p.add_argument("--reason", required=True, help="why it is revoked (recorded on chain for everyone to read)")

    p = command("approve", cmd_approve)
    target_args(p)
    p.add_argument("--comment")
    p.add_argument("--sign-only", action="store_true", help="sign an EIP-712 approval offline instead of sending")
    p.add_argument("--out", help="where --sign-only writes the signature (JSON)")
    p.add_argument("--valid-for", type=duration, help="signature lifetime (default 7d)")

    approvals = parsers.group("approvals")
    p = command("submit", cmd_approvals_submit, "submit signed approvals (any account)", approvals)
    p.add_argument("files", nargs="+")

    p = command("reject", cmd_reject)
    target_args(p)
    p.add_argument("--reason", required=True, help="why you veto it (recorded on chain; the veto stands until you withdraw it)")

    p = command("withdraw", cmd_withdraw)
    target_args(p)

    p = command("gate", cmd_gate)
    target_args(p)

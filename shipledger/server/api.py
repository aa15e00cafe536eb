"""The HTTP application: the JSON API under /v1 (OpenAPI at /v1/openapi.json), /healthz, /readyz,
/metrics, and the web app's pages (shipledger/server/web.py).

Every answer comes from the SDK's and the compliance modules' own functions: history filters are
`shipledger history`'s, the export is `shipledger export`'s file, status is `shipledger status`'s,
the DORA numbers are `shipledger report --json`'s and the gate is the contract's. Errors are
{"error": {"code", "message"}}: 400 bad input, 404 unknown, 422 refused by the contract, 429 rate
limited, 413 too large, 503 when the server cannot decide (the gate fails closed: never allowed).
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shipledger.errors import ConnectionFailed, Denied, InvalidInput, ShipledgerError, UsageError
from shipledger.server import votes
from shipledger.server.gatekeeper import digest_of
from shipledger.server.state import State

HISTORY_PAGE = 100  # events per page unless ?limit says otherwise
HISTORY_PAGE_MAX = 1000
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
DIGEST_PATTERN = r"^(sha256:|0x)[0-9a-fA-F]{64}$"


# ---------------------------------------------------------------------- schema

class ErrorBody(BaseModel):
    code: str = Field(description="the contract's error name or ours (UsageError, ConnectionFailed, ...)")
    message: str


class ErrorDoc(BaseModel):
    error: ErrorBody


class GateDecision(BaseModel):
    allowed: bool
    reason: str = Field(description="the contract's GateReason in lower case, e.g. not_enough_approvals")
    details: dict[str, Any]
    block: int = Field(description="the block the answer holds for")


class Artifact(BaseModel):
    artifact: dict[str, Any] = Field(description="the registration: digest, version, kind, registrant, commit, provenance, sbom, uri")
    steps: list[dict[str, Any]] = Field(description="the chain of custody, as `shipledger trace --json`")
    attestations: list[dict[str, Any]] = Field(description="AttestationRecorded for this artifact: type, document, uri, attestor")


class Pending(BaseModel):
    approver: str
    block: int
    releases: list[dict[str, Any]] = Field(description="releases waiting for this approver's vote, with tally and gate answer")


class HistoryPage(BaseModel):
    events: list[dict[str, Any]]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
    indexed_to: int | None


class Status(BaseModel):
    service: str
    environment: str
    live: dict[str, Any] | None
    active: dict[str, Any] | None
    open_incidents: list[dict[str, Any]]
    open_incident_counts: dict[str, int] = Field(description="open incidents by severity, as the ledger counts them")
    pending_approvals: list[dict[str, Any]]
    policy: dict[str, Any] | None


class RelayAnswer(BaseModel):
    tx: dict[str, Any] | None = Field(description="the transaction (null when no vote was sent)")
    submitted: list[dict[str, Any]] = Field(description="votes the registry recorded")
    skipped: list[dict[str, Any]] = Field(description="votes not recorded, each with its reason (the registry's: bad_signature,"
                                                      " expired, nonce_used, ...; or already_submitted by this relay) and tx_hash")


class Proposals(BaseModel):
    block: int
    proposals: list[dict[str, Any]] = Field(description="every governance proposal: proposal_id, kind, state, approvals, needed,"
                                                        " organisations, weakening, executable_at, executed, change")


class Health(BaseModel):
    ok: bool
    head: int | None = None
    indexed_to: int | None = None
    index_lag: int | None = None
    block_age: float | None = None
    problems: list[str] = []


ERRORS = {400: {"model": ErrorDoc, "description": "bad input"}, 503: {"model": ErrorDoc, "description": "cannot decide or read now"}}


# ---------------------------------------------------------------------- errors

def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def status_of(exc: ShipledgerError) -> int:
    if getattr(exc, "http_status", None):
        return exc.http_status
    if isinstance(exc, (UsageError, InvalidInput)):
        return 400
    if isinstance(exc, Denied):
        return 422
    return 503  # operational: the node, the index


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ShipledgerError)
    async def shipledger_error(request, exc: ShipledgerError):
        return error_response(status_of(exc), exc.__class__.__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        return error_response(400, "UsageError", f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        import logging

        logging.getLogger("shipledger.serve").error("internal error on %s", request.url.path, exc_info=exc)
        return error_response(500, "InternalError", f"internal error: {exc.__class__.__name__}")


# ---------------------------------------------------------------------- the app

class RateLimit:
    """A token bucket per client address: `rate` requests a second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        tokens, at = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # forget idle clients rather than grow without bound
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return True


class Guard:
    """Pure ASGI (Starlette's BaseHTTPMiddleware costs about a millisecond a request): refuse a body
    declared larger than the limit, and put the security headers on every answer."""

    def __init__(self, app, limit_of):
        self.app, self.limit_of = app, limit_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_of()
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > limit):
            response = error_response(413, "TooLarge", f"the request body is limited to {limit} bytes")
            return await response(scope, receive, self._with_headers(send))
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send):
        async def sending(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # An SVG chart is shown as an image (it cannot run script there); matplotlib styles it inline.
                svg = any(k == b"content-type" and v.startswith(b"image/svg+xml") for k, v in headers)
                headers += [(b"content-security-policy", (SVG_CSP if svg else CSP).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        return sending


def create_app(state_factory, integrations=()) -> FastAPI:
    """The application; state_factory() builds the State at start-up (it connects to the node).
    integrations: add(app, st) callables that put the CD/CI hooks' routes on it (Flagger, GitHub)."""

    @asynccontextmanager
    async def lifespan(app):
        app.state.shipledger = await asyncio.to_thread(state_factory)
        task = asyncio.create_task(app.state.shipledger.follow())
        try:
            yield
        finally:
            task.cancel()
            app.state.shipledger.close()

    app = FastAPI(title="shipledger", version="1", openapi_url="/v1/openapi.json", docs_url=None, redoc_url=None,
                  lifespan=lifespan, responses=ERRORS)
    _install_errors(app)

    def st(request: Request) -> State:
        return request.app.state.shipledger

    app.add_middleware(Guard, limit_of=lambda: app.state.shipledger.config.max_body)

    # ------------------------------------------------------------------ the gate (the hot path)

    @app.get("/v1/gate", response_model=GateDecision, tags=["gate"])
    async def gate(request: Request, service: str = Query(), environment: str = Query(),
                   digest: str | None = Query(None, pattern=DIGEST_PATTERN),
                   image: str | None = Query(None, description="REGISTRY/REPO@sha256:<digest> instead of digest (Argo's fieldRef to the image)")):
        """May `digest` (or `image`'s digest) go to `environment` of `service` now? 200 with the contract's
        decision; 503 when it cannot be decided (node unreachable, chain stalled): fail closed, never allowed."""
        state = st(request)
        try:
            target = votes.gate_target(digest_of(digest, image), service, environment)
            block = state.known_head()
            answer = state.gates.cached(block, *target) or await run_in_threadpool(state.gates.ask, block, *target)
        except UsageError:
            raise
        except ShipledgerError:
            state.gate_answers["unknown"] += 1
            raise
        state.gate_answers[answer.reason] += 1
        return JSONResponse(answer.to_json())

    # ------------------------------------------------------------------ reads from the index

    @app.get("/v1/artifacts/{digest}", response_model=Artifact, responses={404: {"model": ErrorDoc}}, tags=["reads"])
    def artifact(request: Request, digest: str, service: str = Query()):
        """The artifact's registration and chain of custody (`shipledger trace`)."""
        return trace_of(st(request), digest, service)

    @app.get("/v1/pending", response_model=Pending, tags=["reads"])
    def pending(request: Request, approver: str = Query()):
        """Releases waiting for this approver's vote, each with its tally and the gate's reason."""
        from shipledger._internal.names import parse_address

        account = parse_address(approver, "approver")
        block, waiting = st(request).waiting()
        return {"approver": account, "block": block, "releases": votes.pending_for(waiting, account)}

    @app.get("/v1/history", response_model=HistoryPage, tags=["reads"])
    def history(request: Request, service: str | None = None, environment: str | None = None, digest: str | None = None,
                approver: str | None = None, org: str | None = None, kind: list[str] | None = Query(None),
                since: str | None = None, until: str | None = None, cursor: str | None = None,
                limit: int = Query(HISTORY_PAGE, ge=1, le=HISTORY_PAGE_MAX)):
        """`shipledger history` with the same filters, a page at a time (cursor: the last event's block:log)."""
        state = st(request)
        index = state.reader_db()
        events = filtered_history(index, history_query(service, environment, digest, approver, org, kind, since, until))
        after = parse_cursor(cursor)
        if after is not None:
            import bisect

            events = events[bisect.bisect_right([(e.block_number, e.log_index) for e in events], after):]
        page = events[:limit]
        from shipledger.cli.compliance import _summary

        rows = [{"block": e.block_number, "log_index": e.log_index, "time": e.timestamp, "kind": e.kind, "service": e.service,
                 "environment": e.environment, "summary": _summary(e), "tx": e.tx_hash, "fields": e.fields} for e in page]
        more = len(events) > limit
        return {"events": rows, "next_cursor": f"{page[-1].block_number}:{page[-1].log_index}" if more else None,
                "indexed_to": state.synced_block}

    @app.get("/v1/export", tags=["reads"], response_class=StreamingResponse,
             responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                          "application/x-ndjson": {"schema": {"type": "string"}}},
                              "description": "the file `shipledger export` writes for the same filters"}})
    def export(request: Request, format: Literal["csv", "jsonl"] = Query(), service: str | None = None,
               environment: str | None = None, digest: str | None = None, approver: str | None = None,
               org: str | None = None, kind: list[str] | None = Query(None), since: str | None = None, until: str | None = None):
        """The filtered history as `shipledger export` writes it (CSV or JSON Lines), streamed."""
        from shipledger.compliance import export as exporting

        index = st(request).reader_db()
        query = history_query(service, environment, digest, approver, org, kind, since, until)
        events = filtered_history(index, query)
        # The same `filter` column as the CLI's: a filtered file must not pass for a complete one.
        lines = exporting.export_lines(exporting.records(index, events, query.text()), format)
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        name = f"shipledger-history.{format}"
        return StreamingResponse((line.encode() for line in lines), media_type=media,
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/v1/status/{service}/{environment}", response_model=Status, tags=["reads"])
    def status(request: Request, service: str, environment: str):
        """What `shipledger status` shows: live and rolling deployments, open incidents, policy, pending."""
        return status_of_target(st(request), service, environment)

    @app.get("/v1/dora", response_model=dict[str, Any], tags=["reads"])
    def dora(request: Request, service: str | None = None, environment: str | None = None, since: str | None = None,
             until: str | None = None, prod_env: list[str] | None = Query(None)):
        """The numbers of `shipledger report --json` (commit times only as the ledger holds them)."""
        return dora_of(st(request), service, environment, since, until, prod_env)

    @app.get("/v1/proposals", response_model=Proposals, tags=["reads"])
    def proposals(request: Request, state: Literal["pending", "scheduled", "executed", "cancelled"] | None = None):
        """Governance proposals and where each stands (from the Governance contract at the head block)."""
        block, found = st(request).proposals()
        return {"block": block, "proposals": [p for p in found if state is None or p["state"] == state]}

    # ------------------------------------------------------------------ the relay

    relay_limit = RateLimit(1.0, 10)

    @app.post("/v1/relay", response_model=RelayAnswer, tags=["relay"],
              responses={404: {"model": ErrorDoc, "description": "the relay is off (no relayer key)"},
                         413: {"model": ErrorDoc}, 422: {"model": ErrorDoc, "description": "the contract refused"},
                         429: {"model": ErrorDoc}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "description": "what `shipledger approve --sign-only` writes: one object or a list",
                  "oneOf": [{"$ref": "#/components/schemas/SignedVote"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/SignedVote"}}]}}}}})
    async def relay(request: Request):
        """Submit signed votes with the relayer's account (which needs no role: the contract checks
        every signature). Votes already on chain or already sent are skipped, never sent twice."""
        state = st(request)
        if state.relay is None:
            return error_response(404, "RelayOff", "the relay is off: start the server with --relayer-key-env VAR")
        relay_limit.rate, relay_limit.burst = state.config.relay_rate, state.config.relay_burst
        client = request.client.host if request.client else "?"
        if not relay_limit.allow(client):
            state.relay_outcomes["rate_limited"] += 1
            return error_response(429, "RateLimited", "too many relay requests: try again shortly", {"Retry-After": "1"})
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > state.config.max_body:
                return error_response(413, "TooLarge", f"the request body is limited to {state.config.max_body} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            state.relay_outcomes["invalid"] += 1
            return error_response(400, "UsageError", "the body is not JSON")
        try:
            signed = votes.parse_signed_votes(body)
            answer = await run_in_threadpool(state.relay.submit, signed)
        except Exception as exc:
            state.relay_outcomes[votes.relay_outcome(exc)] += 1
            raise
        state.relay_outcomes["submitted" if answer["submitted"] else "skipped"] += 1
        if answer["submitted"]:
            # Read your writes: the block holding the votes is newer than the head last polled, and the
            # next /v1/gate should answer at it.
            await run_in_threadpool(state.poll_head)
        return JSONResponse(answer)

    # ------------------------------------------------------------------ operations

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz():
        """Liveness: the process answers."""
        return {"ok": True}

    @app.get("/readyz", response_model=Health, tags=["operations"])
    async def readyz(request: Request):
        """503 while the index lags the chain by more than --max-lag blocks, or the chain has stalled."""
        state = st(request)
        problems = []
        try:
            state.known_head()
        except ConnectionFailed as exc:
            problems.append(str(exc))
        lag = state.index_lag()
        if lag is not None and lag > state.config.max_lag:
            problems.append(f"the index is {lag} blocks behind the chain (more than {state.config.max_lag})")
        if state.sync_error:
            problems.append(f"the last index sync failed: {state.sync_error}")
        age = state.block_age()
        body = {"ok": not problems, "head": state.head.number, "indexed_to": state.synced_block, "index_lag": lag,
                "block_age": None if age is None else round(age, 3), "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}})
    def metrics(request: Request):
        """Prometheus metrics (text format 0.0.4)."""
        from shipledger.server.metrics import render

        return PlainTextResponse(render(st(request)), media_type="text/plain; version=0.0.4")

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description="The shipledger server's JSON API. Errors are {\"error\": {\"code\", \"message\"}}.")
        schema["components"]["schemas"]["SignedVote"] = SIGNED_VOTE_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi

    from shipledger.server import admission, observations, web

    admission.add_routes(app, st)
    observations.add_routes(app, st)
    web.add_pages(app, st)
    for add in integrations:
        add(app, st)
    return app


SIGNED_VOTE_SCHEMA = {
    "type": "object",
    "required": ["signer", "digest", "service", "environment", "decision", "nonce", "signed_at", "deadline", "chain_id",
                 "registry", "signature"],
    "properties": {"signer": {"type": "string"}, "digest": {"type": "string"}, "service": {"type": "string"},
                   "environment": {"type": "string"}, "decision": {"type": "integer", "description": "1 approve, 2 reject"},
                   "nonce": {"type": "integer"}, "signed_at": {"type": "integer", "description": "unix time the vote was signed"},
                   "deadline": {"type": "integer"}, "chain_id": {"type": "integer"},
                   "registry": {"type": "string"}, "signature": {"type": "string"}},
    "additionalProperties": False,
}


# ---------------------------------------------------------------------- the shared reads (API and pages)

def history_query(service, environment, digest, approver, org, kind, since, until):
    """The query parameters as `shipledger history`'s filters (compliance/filters.py)."""
    from shipledger._internal.names import parse_address
    from shipledger.compliance.filters import HistoryQuery

    return HistoryQuery(service=service, environment=environment, digest=digest, org=org,
                        kinds=tuple(kind) if kind else None, since=since, until=until,
                        approver=parse_address(approver, "approver") if approver else None)


def filtered_history(index, query) -> list:
    """Index.history with `shipledger history`'s own filter checks."""
    from shipledger.compliance.filters import check_org

    filters = query.filters()
    check_org(index, filters["org"])
    return index.history(**filters)


def parse_cursor(cursor: str | None) -> tuple[int, int] | None:
    if cursor is None:
        return None
    block, _, log_index = cursor.partition(":")
    if not (block.isdigit() and log_index.isdigit()):
        raise UsageError(f"cursor {cursor!r} is not one this server gave (BLOCK:LOG)")
    return int(block), int(log_index)


class NotFound(UsageError):
    """An artifact the index does not hold."""

    http_status = 404


def trace_of(state: State, digest: str, service: str) -> dict:
    from dataclasses import asdict

    from shipledger._internal.names import check_name
    from shipledger.compliance.index import digest_hex
    from shipledger.compliance.trace import trace

    check_name("service", service)
    key = digest_hex(digest)
    db = state.reader_db().db
    if db.execute("SELECT 1 FROM artifact_registered WHERE digest = ? AND service = ?", (key, service)).fetchone() is None:
        raise NotFound(f"sha256:{key[2:]} is not registered for {service} (as far as the index has synced)")
    result = trace(db, key, service)
    [kind] = db.execute("SELECT kind FROM artifact_registered WHERE digest = ? AND service = ?", (key, service)).fetchone()
    attested = db.execute(
        "SELECT attestation_type, document_digest, uri, attestor, block_number, timestamp, tx_hash FROM attestation_recorded"
        " WHERE digest = ? AND service = ? ORDER BY block_number, log_index", (key, service)).fetchall()
    return {"artifact": {**{k: v for k, v in asdict(result).items() if k != "steps"}, "kind": votes.artifact_kind(kind)},
            "steps": [asdict(s) for s in result.steps],
            "attestations": [{"type": r["attestation_type"], "document": _sha256(r["document_digest"]), "uri": r["uri"],
                              "attestor": r["attestor"], "block": r["block_number"], "time": r["timestamp"], "tx": r["tx_hash"]}
                             for r in attested]}


def _sha256(value: str | None) -> str:
    from shipledger.compliance.trace import _sha

    return _sha(value)


def status_of_target(state: State, service: str, environment: str) -> dict:
    from shipledger._internal.names import check_name
    from shipledger.cli.compliance import status_data

    class _Open:  # the server's index stays open: status_data closes what it is handed
        def __init__(self, index):
            self.index = index

        def __getattr__(self, name):
            return getattr(self.index, name)

        def close(self):
            pass

    return status_data(state.endpoint, check_name("service", service), check_name("environment", environment),
                       lambda: _Open(state.reader_db()))


def dora_of(state: State, service, environment, since, until, prod_env) -> dict:
    from shipledger._internal.names import check_name
    from shipledger.compliance import dora
    from shipledger.compliance.filters import check_period, report_time

    for kind, value in (("service", service), ("environment", environment)):
        if value is not None:
            check_name(kind, value)
    start, end = report_time("since", since, end=False), report_time("until", until, end=True)
    check_period(start, end, since, until)
    envs = tuple(e.strip() for value in (prod_env or ["prod,production"]) for e in value.split(",") if e.strip())
    if not envs:
        raise UsageError("prod_env names no environment")
    for env in envs:
        check_name("prod_env environment", env)
    return dora.from_index(state.reader_db(), service=service, environment=environment, since=start, until=end,
                           prod_envs=envs).to_json()

"""Drift on the server: POST /v1/observations takes what runs (the observations of `shipledger drift
--observed`, per source: a cluster, a fleet), GET /v1/drift and /metrics show the findings.

Posting is gated by a bearer token (`serve --observations-token-env VAR`; without it the endpoint is
off): a forged observation could hide drift. Observations are held in memory, replaced per source.
The findings are computed as `shipledger drift` computes them (shipledger/delivery/drift.py): what
runs at a target from the chain at the head the server last saw, artifacts and deployments from the
index (which may trail the head by a block or two).
"""

import hmac
import threading
from types import SimpleNamespace

from shipledger.errors import UsageError

MAX_OBSERVATIONS = 10_000  # per source


class Observed:
    """The observations of every source, and the findings per (head, index checkpoint)."""

    def __init__(self, token: str | None):
        self.token = token
        self.sources: dict[str, list] = {}
        self._findings: tuple | None = None
        self._lock = threading.Lock()

    def authorised(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return bool(self.token) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), self.token.encode())

    def replace(self, body) -> tuple[str, int]:
        """Take {"source": NAME, "observations": [{service, environment, digest, where}, ...]}."""
        from shipledger.delivery.drift import Observation, observations_from_lines

        if not isinstance(body, dict) or set(body) != {"source", "observations"} or not isinstance(body["source"], str) \
                or not body["source"] or not isinstance(body["observations"], list):
            raise UsageError('the body must be {"source": NAME, "observations": [{"service", "environment", "digest", "where"}, ...]}')
        if len(body["observations"]) > MAX_OBSERVATIONS:
            raise UsageError(f"at most {MAX_OBSERVATIONS} observations per source")
        import json

        lines = "\n".join(json.dumps(o) for o in body["observations"])
        observations: list[Observation] = observations_from_lines(lines, "observations")
        with self._lock:
            self.sources[body["source"]] = observations
            self._findings = None
        return body["source"], len(observations)

    def findings(self, state) -> list:
        """The drift findings now (cached per head block, index checkpoint and set of observations)."""
        from shipledger._internal.targets import target_releases
        from shipledger.compliance.index import digest_hex
        from shipledger.delivery.drift import compare

        block = state.known_head()
        key = (block, state.synced_block)  # replace() clears the cache
        cached = self._findings
        if cached and cached[0] == key:
            return cached[1]
        db = state.reader_db().db

        def artifact_of(digest: str, service: str):
            d = digest_hex(digest)
            if db.execute("SELECT 1 FROM artifact_registered WHERE digest = ? AND service = ?", (d, service)).fetchone() is None:
                return None
            revoked = db.execute("SELECT 1 FROM artifact_revoked WHERE digest = ? AND service = ?", (d, service)).fetchone()
            return SimpleNamespace(revoked=revoked is not None)

        def digest_of_deployment(deployment_id: int) -> str:
            row = db.execute("SELECT digest FROM deployment_started WHERE id = ?", (deployment_id,)).fetchone()
            return "sha256:" + row[0][2:] if row else "not indexed yet"

        def releases_of(service: str, environment: str) -> dict:
            return target_releases(state.rpc_batch, state.endpoint.ledger, service, environment, hex(block))

        observations = [o for source in self.sources.values() for o in source]
        found = compare(observations, artifact_of, releases_of, digest_of_deployment)
        self._findings = (key, found)
        return found


def add_routes(app, st) -> None:
    import json

    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from shipledger.server.api import ErrorDoc, error_response

    @app.post("/v1/observations", tags=["drift"], responses={401: {"model": ErrorDoc, "description": "no or a wrong bearer token"},
                                                             404: {"model": ErrorDoc, "description": "observations are off"}})
    async def observations(request: Request):
        """Replace one source's observations of what runs (bearer token); answers the drift findings now."""
        state = st(request)
        if not state.observed.token:
            return error_response(404, "ObservationsOff", "observations are off: start the server with --observations-token-env VAR")
        if not state.observed.authorised(request.headers.get("authorization")):
            return error_response(401, "Unauthorized", "POST /v1/observations needs Authorization: Bearer <token>",
                                  {"WWW-Authenticate": "Bearer"})
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error_response(400, "UsageError", "the body is not JSON")
        source, count = state.observed.replace(body)
        findings = await run_in_threadpool(state.observed.findings, state)
        return JSONResponse({"source": source, "observations": count, "findings": [f.to_json() for f in findings]})

    @app.get("/v1/drift", tags=["drift"])
    async def drift(request: Request):
        """The drift findings over every source's observations, as `shipledger drift --json` gives them."""
        state = st(request)
        findings = await run_in_threadpool(state.observed.findings, state)
        return JSONResponse({"sources": sorted(state.observed.sources), "findings": [f.to_json() for f in findings]})

"""Flagger's webhooks on `shipledger serve` (POST /flagger/<hook>).

Flagger POSTs {name, namespace, phase, checksum, metadata} with Content-Type application/json and
counts any status up to 202 as success, anything else (or its timeout, 10 s unless the webhook says
otherwise) as failure (fluxcd/flagger pkg/controller/webhook.go, callWebhook). The payload names no
image, so the Canary's webhook `metadata` carries `service`, `environment` and `digest`
(deploy/flagger/canary.yaml shows how).

- confirm-rollout, confirm-promotion: 200 when the gate allows, 403 with its sentence when it denies,
  503 when it cannot decide. The rollout this Canary started itself (pre-rollout) does not count as
  "another rollout in progress".
- pre-rollout: `deploy start` at metadata `percent` (default 10), once per Flagger checksum.
- post-rollout: phase Succeeded promotes to 100 and completes, Failed fails the rollout.
- rollback: 200 (Flagger rolls back) while the artifact is revoked or a freezing incident is open,
  409 otherwise, 503 when the gate cannot say (no signal: confirm-promotion stops the rollout anyway).
- event: logged as a JSON line, 202.

pre- and post-rollout send transactions with the deployer's key (role DEPLOYER): not an approver's
key, it can only record rollout steps the ledger itself re-checks against the gate.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shipledger.errors import ConnectionFailed, Denied, ShipledgerError, UsageError
from shipledger.server import gatekeeper

HOOKS = ("confirm-rollout", "confirm-promotion", "pre-rollout", "post-rollout", "rollback", "event")
DEFAULT_PERCENT = 10  # the first canary step when the metadata names none
PHASES = frozenset({"Initializing", "Initialized", "Waiting", "Progressing", "WaitingPromotion", "Promoting",
                    "Finalising", "Succeeded", "Failed", "Terminating", "Terminated"})  # flagger v1beta1 CanaryPhase

log = logging.getLogger("shipledger.serve")


class BadPayload(UsageError):
    pass


def parse_payload(raw: bytes) -> dict:
    """Flagger's CanaryWebhookPayload, checked: name, namespace, phase, checksum and string metadata."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadPayload("the body must be Flagger's webhook payload (an object)")
    for field in ("name", "namespace", "phase", "checksum"):
        if not isinstance(body.get(field), str):
            raise BadPayload(f"the payload has no {field} (is this Flagger calling?)")
    if body["phase"] not in PHASES:
        raise BadPayload(f"phase {body['phase']!r} is not a Flagger canary phase")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadPayload("metadata must map names to strings")
    return {**body, "metadata": metadata}


def target_of(payload: dict) -> tuple[str, str, str]:
    """(digest, service, environment) from the webhook metadata, checked like /v1/gate's inputs."""
    from shipledger.server.votes import gate_target

    metadata = payload["metadata"]
    missing = [k for k in ("digest", "service", "environment") if not metadata.get(k)]
    if missing:
        raise BadPayload(f"the Canary's webhook metadata lacks {', '.join(missing)} (see deploy/flagger/canary.yaml)")
    return gate_target(metadata["digest"], metadata["service"], metadata["environment"])


class Rollouts:
    """Which deployment each Flagger checksum started (SQLite beside the index), and the deployer's
    ledger connection that records the steps. One lock: a retried pre-rollout never starts twice."""

    def __init__(self, path: Path, connect):
        self._connect, self._ledger = connect, None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS flagger_rollout (checksum TEXT NOT NULL, canary TEXT NOT NULL,"
                        " deployment_id INTEGER NOT NULL, digest TEXT NOT NULL, service TEXT NOT NULL,"
                        " environment TEXT NOT NULL, PRIMARY KEY (canary, checksum))")
        self.lock = threading.Lock()

    @property
    def ledger(self):
        """The deployer's connection, opened on the first step (it reaches the node)."""
        if self._ledger is None:
            self._ledger = self._connect()
        return self._ledger

    def started(self, canary: str, checksum: str) -> int | None:
        row = self.db.execute("SELECT deployment_id FROM flagger_rollout WHERE canary = ? AND checksum = ?",
                              (canary, checksum)).fetchone()
        return row[0] if row else None

    def start(self, canary: str, checksum: str, target: tuple[str, str, str], percent: int) -> tuple[int, bool]:
        """(deployment id, whether this call started it)."""
        with self.lock:
            known = self.started(canary, checksum)
            if known is not None:
                return known, False
            deployment_id = self.ledger.start_deployment(*target, percent)
            self.db.execute("INSERT INTO flagger_rollout VALUES (?, ?, ?, ?, ?, ?)", (checksum, canary, deployment_id, *target))
            return deployment_id, True

    def finish(self, deployment_id: int, succeeded: bool, why: str) -> str:
        """Complete (promoting to 100 first) or fail; a step already taken is not taken again."""
        with self.lock:
            deployment = self.ledger.deployment(deployment_id)
            if deployment.status != "in_progress":
                return deployment.status
            if not succeeded:
                self.ledger.fail(deployment_id, why)
                return "failed"
            if deployment.percent < 100:
                self.ledger.promote(deployment_id, 100)
            self.ledger.complete(deployment_id)
            return "completed"


def answer(http_status: int, /, **body) -> JSONResponse:
    return JSONResponse(body, status_code=http_status)


def add_routes(app, st, deployer_key: str | None, store_path: Path) -> None:
    def deployer():
        from shipledger.client import Ledger

        config = app.state.shipledger.config
        return Ledger.connect(config.rpc_url, config.book, deployer_key, rpc_timeout=10)

    rollouts = Rollouts(store_path, deployer)

    async def decide(state, payload: dict, hook: str) -> JSONResponse:
        digest, service, environment = target_of(payload)
        gate = await gatekeeper.ask(state, digest, service, environment)
        allowed = gate.allowed
        if gate.reason == "rollout_in_progress":  # the rollout this Canary started is not in the way
            allowed = gate.details.get("deployment") == rollouts.started(canary_of(payload), payload["checksum"])
        if hook == "rollback":
            if gate.reason in gatekeeper.ROLLBACK_REASONS:
                return answer(200, rollback=True, reason=gate.reason, message=gatekeeper.sentence(gate), block=gate.block)
            return answer(409, rollback=False, reason=gate.reason, block=gate.block)
        message = "the gate allows it" if allowed else gatekeeper.sentence(gate)
        return answer(200 if allowed else 403, allowed=allowed, reason="allowed" if allowed else gate.reason,
                      message=message, block=gate.block)

    async def record(state, payload: dict, hook: str) -> JSONResponse:
        if deployer_key is None:
            return answer(404, error={"code": "DeployerOff", "message":
                                      "pre- and post-rollout are off: start the server with --deployer-key-env VAR"})
        digest, service, environment = target_of(payload)
        canary = canary_of(payload)
        store = rollouts
        if hook == "pre-rollout":
            text = payload["metadata"].get("percent", str(DEFAULT_PERCENT))
            if not text.isdigit() or not 1 <= int(text) <= 100:
                raise BadPayload(f"metadata percent {text!r} must be 1 to 100")
            deployment_id, fresh = await run_in_threadpool(store.start, canary, payload["checksum"],
                                                           (digest, service, environment), int(text))
            await run_in_threadpool(state.poll_head)  # read your writes: the next confirm-promotion sees this rollout
            log.info(json.dumps({"flagger": hook, "canary": canary, "checksum": payload["checksum"],
                                 "deployment": deployment_id, "started": fresh}))
            return answer(200, deployment=deployment_id, started=fresh)
        if payload["phase"] not in ("Succeeded", "Failed"):
            raise BadPayload(f"post-rollout with phase {payload['phase']!r}: Flagger sends Succeeded or Failed")
        deployment_id = store.started(canary, payload["checksum"])
        if deployment_id is None:
            return answer(404, error={"code": "NotFound", "message":
                                      f"no rollout of {canary} with checksum {payload['checksum']} was started here"})
        status = await run_in_threadpool(store.finish, deployment_id, payload["phase"] == "Succeeded",
                                         f"flagger: canary {canary} failed")
        await run_in_threadpool(state.poll_head)
        log.info(json.dumps({"flagger": hook, "canary": canary, "deployment": deployment_id, "status": status}))
        return answer(200, deployment=deployment_id, status=status)

    @app.post("/flagger/{hook}", tags=["flagger"], include_in_schema=False)
    async def flagger(request: Request, hook: str):
        if hook not in HOOKS:
            return answer(404, error={"code": "NotFound", "message": f"no Flagger hook {hook!r}; hooks: {', '.join(HOOKS)}"})
        state = st(request)
        try:
            payload = parse_payload(await request.body())
            if hook == "event":
                log.info(json.dumps({"flagger": "event", "canary": canary_of(payload), "phase": payload["phase"],
                                     "checksum": payload["checksum"], "metadata": payload["metadata"]}))
                return answer(202, recorded=True)
            if hook in ("pre-rollout", "post-rollout"):
                return await record(state, payload, hook)
            return await decide(state, payload, hook)
        except UsageError as exc:
            return answer(400, error={"code": "UsageError", "message": str(exc)})
        except Denied as exc:  # the ledger refused the step: the gate or the canary says no
            return answer(403, error={"code": exc.__class__.__name__, "message": str(exc)})
        except (ConnectionFailed, ShipledgerError) as exc:
            return answer(503, error={"code": exc.__class__.__name__, "message": f"cannot decide: {exc}"})


def canary_of(payload: dict) -> str:
    return f"{payload['namespace']}/{payload['name']}"

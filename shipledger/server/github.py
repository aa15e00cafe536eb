"""The GitHub deployment protection rule app on `shipledger serve` (POST /github/webhook).

GitHub sends `deployment_protection_rule` (action `requested`) when a job's environment has this App
as a protection rule. The app:
1. verifies X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the webhook secret, compared in
   constant time) before it parses anything, and answers 401 otherwise;
2. records X-GitHub-Delivery, so a replayed delivery is answered and ignored;
3. maps the deployment to (digest, service, environment): the digest from the deployment payload
   (`digest`, or `image` as REPO@sha256:...) or else the artifact of that service registered with
   the deployment's commit; the service from the payload or the mapping file's `repositories`;
   the environment from the payload or the mapping file's `environments` (else GitHub's name);
4. answers 202 at once (GitHub waits 10 s), and a background task asks the gate: allowed is
   `approved`, a denial no vote can lift is `rejected` (the gate's sentence as the comment), while
   approvals are missing it posts status reports (a comment without a state) and decides once the
   votes are on chain. A review is marked done only when GitHub accepted the callback: while its API
   is down nothing is approved and the callback is retried with backoff.

The callback goes to POST {api}/repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule,
built from the repository's full name and the run id; the payload's deployment_callback_url is only
checked to name that same repository and read for the run id, never called. The App authenticates with
a JWT (RS256, signed with its private key) for an installation token, cached until shortly before it
expires. The App holds no approver's key: it only relays the gate's answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse

from shipledger.errors import ShipledgerError, UsageError
from shipledger.server import gatekeeper

API_VERSION = "2022-11-28"
WORKER_INTERVAL = 1.0  # seconds between passes over the open reviews
RETRY_MAX = 60.0  # seconds: the longest wait between two callbacks to an API that failed
HTTP_TIMEOUT = 10.0
_FULL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")

log = logging.getLogger("shipledger.serve")


@dataclass
class AppConfig:
    app_id: str
    private_key: object = field(repr=False)  # Crypto.PublicKey.RSA.RsaKey
    webhook_secret: bytes = field(repr=False)
    api_url: str = "https://api.github.com"
    repositories: dict = field(default_factory=dict)  # owner/repo -> service
    environments: dict = field(default_factory=dict)  # GitHub environment -> shipledger environment
    store: Path = Path(".shipledger/index-hooks.sqlite")


def config_from(args, webhook_secret: str | None, store: Path) -> AppConfig:
    """The App's settings from serve's options; UsageError for anything missing or unreadable."""
    from Crypto.PublicKey import RSA

    if not str(args.github_app_id).isdigit():
        raise UsageError(f"--github-app-id {args.github_app_id!r} must be the App's numeric id")
    if not args.github_app_key:
        raise UsageError("--github-app-id needs --github-app-key FILE (the App's private key, PEM)")
    if webhook_secret is None:
        raise UsageError("--github-app-id needs --github-webhook-secret-env VAR or --github-webhook-secret-file FILE")
    try:
        key = RSA.import_key(Path(args.github_app_key).read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read --github-app-key {args.github_app_key}: {exc.strerror}") from None
    except (ValueError, IndexError, TypeError):
        raise UsageError(f"--github-app-key {args.github_app_key} is not an RSA private key in PEM") from None
    if not key.has_private():
        raise UsageError(f"--github-app-key {args.github_app_key} holds a public key, not the App's private key")
    api = args.github_api_url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", api):
        raise UsageError(f"--github-api-url {args.github_api_url!r} must be an http(s) URL")
    repositories, environments = load_map(args.github_map) if args.github_map else ({}, {})
    return AppConfig(app_id=str(args.github_app_id), private_key=key, webhook_secret=webhook_secret.encode(), api_url=api,
                     repositories=repositories, environments=environments, store=store)


def load_map(path: str) -> tuple[dict, dict]:
    """--github-map: {repositories: {owner/repo: service}, environments: {github-env: env}} (YAML or JSON)."""
    import yaml

    from shipledger._internal.names import check_name

    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise UsageError(f"cannot read --github-map {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--github-map {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict) or set(document) - {"repositories", "environments"}:
        raise UsageError(f"--github-map {path} must hold only `repositories` and `environments` maps")
    maps = []
    for name, kind in (("repositories", "service"), ("environments", "environment")):
        entries = document.get(name) or {}
        if not isinstance(entries, dict):
            raise UsageError(f"--github-map {path}: {name} must map names to {kind} names")
        maps.append({str(k): check_name(kind, str(v)) for k, v in entries.items()})
    return maps[0], maps[1]


# ---------------------------------------------------------------------- authentication

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, key, now: float | None = None) -> str:
    """The App's JWT: RS256, issued 60 s in the past (clock drift), valid 9 minutes (GitHub allows 10)."""
    from Crypto.Hash import SHA256
    from Crypto.Signature import pkcs1_15

    issued = int(now if now is not None else time.time()) - 60
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"iat": issued, "exp": issued + 600, "iss": app_id}, separators=(",", ":")).encode())
    signed = f"{header}.{claims}".encode()
    return f"{header}.{claims}.{_b64(pkcs1_15.new(key).sign(SHA256.new(signed)))}"


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 is "sha256=" + the hex HMAC-SHA256 of the raw body; compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode())


class GitHubUnavailable(Exception):
    """GitHub's API did not take the request (down, timed out, 5xx, or refused the token)."""


class GitHubApi:
    def __init__(self, config: AppConfig):
        self.config = config
        self._tokens: dict[int, tuple[str, float]] = {}  # installation id -> (token, expires at)

    def _request(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict | None]:
        request = urllib.request.Request(
            self.config.api_url + path, json.dumps(body).encode() if body is not None else None, method=method,
            headers={"Accept": "application/vnd.github+json", "Authorization": f"Bearer {token}",
                     "X-GitHub-Api-Version": API_VERSION, "User-Agent": "shipledger",
                     **({"Content-Type": "application/json"} if body is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise GitHubUnavailable(f"{method} {path}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise GitHubUnavailable(f"{method} {path}: {exc.__class__.__name__}: {exc}") from None

    def installation_token(self, installation_id: int) -> str:
        token, expires = self._tokens.get(installation_id, ("", 0.0))
        if time.time() < expires - 60:
            return token
        jwt = app_jwt(self.config.app_id, self.config.private_key)
        _, answer = self._request("POST", f"/app/installations/{installation_id}/access_tokens", jwt)
        if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
            raise GitHubUnavailable("the installation token answer holds no token")
        from datetime import datetime

        try:
            expires = datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00")).timestamp()
        except (KeyError, AttributeError, ValueError):
            expires = time.time() + 600
        self._tokens[installation_id] = (answer["token"], expires)
        return answer["token"]

    def review(self, review: dict, state: str | None, comment: str) -> None:
        """The callback: approved/rejected with a comment, or (state None) a status report."""
        body = {"environment_name": review["github_environment"], "comment": comment[:65535]}
        if state is not None:
            body["state"] = state
        token = self.installation_token(review["installation_id"])
        self._request("POST", f"/repos/{review['repository']}/actions/runs/{review['run_id']}/deployment_protection_rule",
                      token, body)


# ---------------------------------------------------------------------- the reviews waiting for a decision

class Reviews:
    """Deliveries seen and reviews still open, in SQLite beside the index (they outlive a restart)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS github_delivery (delivery TEXT PRIMARY KEY, received_at REAL NOT NULL);"
            "CREATE TABLE IF NOT EXISTS github_review (delivery TEXT PRIMARY KEY, repository TEXT NOT NULL,"
            " run_id INTEGER NOT NULL, github_environment TEXT NOT NULL, installation_id INTEGER NOT NULL,"
            " digest TEXT, service TEXT, environment TEXT, problem TEXT, status TEXT NOT NULL DEFAULT 'open',"
            " reported TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,"
            " decision TEXT, comment TEXT);")
        self.lock = threading.Lock()

    def first_delivery(self, delivery: str) -> bool:
        """True the first time a delivery id is seen (a replay is not acted on twice)."""
        with self.lock:
            cursor = self.db.execute("INSERT OR IGNORE INTO github_delivery VALUES (?, ?)", (delivery, time.time()))
            return cursor.rowcount == 1

    def open(self, delivery: str, review: dict) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO github_review (delivery, repository, run_id, github_environment, installation_id, digest, service,"
                " environment, problem) VALUES (:delivery, :repository, :run_id, :github_environment, :installation_id, :digest,"
                " :service, :environment, :problem)", {"delivery": delivery, **review})

    def due(self) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.db.execute(
                "SELECT * FROM github_review WHERE status = 'open' AND next_try <= ? ORDER BY rowid", (time.time(),))]

    def update(self, delivery: str, **values) -> None:
        with self.lock:
            names = ", ".join(f"{k} = :{k}" for k in values)
            self.db.execute(f"UPDATE github_review SET {names} WHERE delivery = :delivery", {"delivery": delivery, **values})

    def get(self, delivery: str) -> dict | None:
        row = self.db.execute("SELECT * FROM github_review WHERE delivery = ?", (delivery,)).fetchone()
        return dict(row) if row else None


# ---------------------------------------------------------------------- mapping a deployment to a release

class BadEvent(UsageError):
    pass


def review_of(event: dict, config: AppConfig, find_by_commit) -> dict:
    """What to review for a deployment_protection_rule event: repository, run id, environments,
    installation, and (digest, service, environment) or the problem that makes it a rejection."""
    repository = (event.get("repository") or {}).get("full_name")
    if not isinstance(repository, str) or not _FULL_NAME.match(repository):
        raise BadEvent("the event names no repository (owner/name)")
    callback = event.get("deployment_callback_url")
    # Only the run id is taken from the payload's callback URL, and only when that URL is this
    # repository's: the request itself always goes to our API base (a payload cannot redirect it).
    match = re.search(r"/repos/([^/]+/[^/]+)/actions/runs/(\d{1,19})/deployment_protection_rule$", callback or "")
    if not match or match.group(1).lower() != repository.lower():
        raise BadEvent("deployment_callback_url is not this repository's deployment_protection_rule URL of a run")
    installation = (event.get("installation") or {}).get("id")
    github_environment = event.get("environment")
    if not isinstance(installation, int) or not isinstance(github_environment, str) or not github_environment:
        raise BadEvent("the event names no installation or environment")
    review = {"repository": repository, "run_id": int(match.group(2)), "github_environment": github_environment,
              "installation_id": installation, "digest": None, "service": None, "environment": None, "problem": None}
    deployment = event.get("deployment") or {}
    payload = deployment.get("payload") or {}
    if isinstance(payload, str):
        try:
            payload = json.loads(payload) if payload.strip() else {}
        except ValueError:
            payload = {}
    if not isinstance(payload, dict):
        payload = {}
    payload = payload.get("shipledger", payload) if isinstance(payload.get("shipledger"), dict) else payload
    try:
        service = payload.get("service") or config.repositories.get(repository)
        if not service:
            raise UsageError(f"no service for {repository}: the deployment payload names none and the mapping has no entry")
        environment = payload.get("environment") or config.environments.get(github_environment, github_environment)
        digest = payload.get("digest")
        image = payload.get("image")
        if digest or image:
            digest = gatekeeper.digest_of(digest or None, None if digest else image)
        else:
            sha = deployment.get("sha")
            digest = find_by_commit(str(service), sha) if isinstance(sha, str) else None
            if digest is None:
                raise UsageError(f"no artifact of {service} is registered for commit {sha} and the deployment payload"
                                 " names no digest")
        from shipledger.server.votes import gate_target

        review["digest"], review["service"], review["environment"] = gate_target(digest, str(service), str(environment))
    except UsageError as exc:
        review["problem"] = str(exc)
    return review


def digest_by_commit(db, service: str, sha: str) -> str | None:
    """The newest artifact of `service` registered with this commit, as the index holds it."""
    sha = sha.lower()
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        return None
    row = db.execute("SELECT digest FROM artifact_registered WHERE service = ? AND \"commit\" = ?"
                     " ORDER BY block_number DESC, log_index DESC LIMIT 1", (service, "0x" + sha.ljust(64, "0"))).fetchone()
    return "sha256:" + row[0][2:] if row else None


# ---------------------------------------------------------------------- deciding

async def decide(state, reviews: Reviews, api: GitHubApi, review: dict) -> None:
    """One pass over an open review: ask the gate, then approve, reject, or report while it waits."""
    from starlette.concurrency import run_in_threadpool

    delivery = review["delivery"]
    if review["problem"]:
        decision, comment = "rejected", f"shipledger: {review['problem']}"
    else:
        try:
            # A decision is final: take it on the node's newest block, not the one the server last
            # polled (a registration, vote or revocation just before the webhook may be newer).
            await run_in_threadpool(state.poll_head)
            answer = await gatekeeper.ask(state, review["digest"], review["service"], review["environment"])
        except ShipledgerError as exc:  # cannot decide now: never an approval; look again shortly
            reviews.update(delivery, next_try=time.time() + WORKER_INTERVAL * 5)
            log.warning(json.dumps({"github": "undecided", "delivery": delivery, "why": str(exc)}))
            return
        release = f"{review['digest']} of {review['service']} to {review['environment']} (block {answer.block})"
        if answer.allowed:
            decision, comment = "approved", f"shipledger: the gate allows {release}"
        elif answer.reason in gatekeeper.WAITING_REASONS:
            decision, comment = None, f"shipledger: waiting: {gatekeeper.sentence(answer)} for {release}"
        else:
            decision, comment = "rejected", f"shipledger: {gatekeeper.sentence(answer)} ({answer.reason}) for {release}"
    if decision is None and review["reported"] == comment.rsplit(" (block", 1)[0]:
        return  # the same status was reported already
    try:
        await run_in_threadpool(api.review, review, decision, comment)
    except GitHubUnavailable as exc:
        attempts = review["attempts"] + 1
        reviews.update(delivery, attempts=attempts, next_try=time.time() + min(RETRY_MAX, 2.0 ** attempts))
        log.warning(json.dumps({"github": "callback failed", "delivery": delivery, "attempts": attempts, "why": str(exc)}))
        return
    if decision is None:
        reviews.update(delivery, reported=comment.rsplit(" (block", 1)[0], attempts=0)
    else:
        reviews.update(delivery, status="decided", decision=decision, comment=comment, attempts=0)
    log.info(json.dumps({"github": decision or "status", "delivery": delivery, "repository": review["repository"],
                         "run_id": review["run_id"], "comment": comment}))


def add_routes(app, st, config: AppConfig) -> None:
    reviews = Reviews(config.store)
    api = GitHubApi(config)
    wake = asyncio.Event()

    async def work():
        while True:
            state = app.state.shipledger
            for review in reviews.due():
                try:
                    await decide(state, reviews, api, review)
                except Exception:  # noqa: BLE001 - one bad review must not stop the others
                    log.exception("github review %s", review["delivery"])
                    reviews.update(review["delivery"], next_try=time.time() + RETRY_MAX)
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), WORKER_INTERVAL)
            except asyncio.TimeoutError:
                pass

    served = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application):
        async with served(application) as value:
            task = asyncio.create_task(work())
            try:
                yield value
            finally:
                task.cancel()

    app.router.lifespan_context = lifespan

    @app.post("/github/webhook", tags=["github"], include_in_schema=False)
    async def webhook(request: Request):
        body = await request.body()
        if not signature_ok(config.webhook_secret, body, request.headers.get("x-hub-signature-256")):
            return JSONResponse({"error": {"code": "BadSignature", "message": "X-Hub-Signature-256 does not match the body"}},
                                status_code=401)
        delivery = request.headers.get("x-github-delivery", "")
        if not re.fullmatch(r"[0-9A-Za-z-]{1,64}", delivery):
            return JSONResponse({"error": {"code": "UsageError", "message": "no X-GitHub-Delivery id"}}, status_code=400)
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            return JSONResponse({"ok": True})
        if event != "deployment_protection_rule":
            return JSONResponse({"ignored": event}, status_code=202)
        if not reviews.first_delivery(delivery):
            return JSONResponse({"duplicate": delivery})
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": {"code": "UsageError", "message": "the body is not a JSON object"}}, status_code=400)
        if payload.get("action") != "requested":
            return JSONResponse({"ignored": f"{event}.{payload.get('action')}"}, status_code=202)
        state = st(request)
        try:
            review = review_of(payload, config, lambda service, sha: digest_by_commit(state.reader_db().db, service, sha))
        except BadEvent as exc:
            return JSONResponse({"error": {"code": "UsageError", "message": str(exc)}}, status_code=400)
        reviews.open(delivery, review)
        wake.set()
        log.info(json.dumps({"github": "requested", "delivery": delivery, "repository": review["repository"],
                             "run_id": review["run_id"], "environment": review["github_environment"]}))
        return JSONResponse({"accepted": delivery}, status_code=202)

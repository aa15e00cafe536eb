"""The GitHub deployment protection rule app on a real `shipledger serve` against a real devnet.

GitHub itself cannot run here, so both sides of it are built from what GitHub publishes:
- webhook payloads are generated from the `deployment-protection-rule-requested` schema of npm
  @octokit/openapi-webhooks and validated against it before they are sent;
- they are signed by npm @octokit/webhooks-methods (Octokit's own `sign`), not by our code;
- a loopback HTTP server stands in for GitHub's REST API and validates every request it gets
  (method, path, path parameters, body, authentication) against GitHub's OpenAPI description from
  npm @octokit/openapi; an installation token is issued only for a JWT that verifies (RS256) with the
  App's public key."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema_rs
import pytest
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

from shipledger import ArtifactSpec
from support import ENV, digest_for, unique
from conftest import Server

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.deref.json"
WEBHOOKS = ROOT / "node_modules" / "@octokit" / "openapi-webhooks" / "generated" / "api.github.com.json"
APP_ID = "424242"
INSTALLATION = 31337
SECRET = "It's a Secret to Everybody"


# ---------------------------------------------------------------------- payloads from the published schema

def instance(schema: dict, components: dict, depth: int = 0):
    """A minimal instance of a JSON schema: required properties only, each from its `examples` or
    `enum` where the schema gives one."""
    if "$ref" in schema:
        return instance(components[schema["$ref"].rsplit("/", 1)[1]], components, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return instance(options[0], components, depth + 1)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            value = instance(part, components, depth + 1)
            merged.update(value if isinstance(value, dict) else {})
        return merged
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("examples"):
        return schema["examples"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        return {name: instance(schema["properties"][name], components, depth + 1)
                for name in schema.get("required", []) if name in schema.get("properties", {})}
    if kind == "array":
        return []
    return {"string": {"uri": "https://example.com/x", "date-time": "2026-12-01T00:00:00Z", "email": "a@example.com"}
            .get(schema.get("format"), "x"), "integer": 1, "number": 1, "boolean": False, "null": None}[kind]


@pytest.fixture(scope="module")
def webhook_schema():
    document = json.loads(WEBHOOKS.read_text())
    components = document["components"]["schemas"]
    schema = {"$ref": "#/components/schemas/webhook-deployment-protection-rule-requested", "components": document["components"]}
    return components, jsonschema_rs.validator_for(schema)


def event_payload(webhook_schema, repository: str, run_id: int, environment: str, deployment_payload, sha: str,
                  callback_host: str = "https://api.github.com") -> bytes:
    components, validator = webhook_schema
    event = instance(components["webhook-deployment-protection-rule-requested"], components)
    event.update(action="requested", environment=environment, event="push",
                 deployment_callback_url=f"{callback_host}/repos/{repository}/actions/runs/{run_id}/deployment_protection_rule")
    owner, name = repository.split("/")
    event["repository"].update(full_name=repository, name=name)
    event["repository"]["owner"]["login"] = owner
    # installation and deployment are optional in the schema, and always there for a GitHub App's rule
    event["installation"] = {**instance(components["simple-installation"], components), "id": INSTALLATION}
    event["deployment"] = instance(components["deployment"], components)
    event["deployment"].update(environment=environment, sha=sha, ref="main", payload=deployment_payload)
    errors = [e.message for e in validator.iter_errors(event)]
    assert not errors, errors[:3]  # what we send is what GitHub's schema allows
    return json.dumps(event).encode()


def octokit_sign(secret: str, body: bytes) -> str:
    """X-Hub-Signature-256 as @octokit/webhooks-methods computes it."""
    script = ("import('@octokit/webhooks-methods').then(async m => {const body = require('fs').readFileSync(0, 'utf8');"
              " process.stdout.write(await m.sign(process.argv[1], body))})")
    return subprocess.run(["node", "-e", script, secret], input=body, cwd=ROOT, capture_output=True, check=True,
                          timeout=60).stdout.decode()


# ---------------------------------------------------------------------- GitHub's API, per its OpenAPI description

class FakeGitHub:
    """GitHub's REST API on loopback. Every request is checked against the OpenAPI description; a
    request it does not describe, or that breaks it, is recorded in `violations` and answered 422."""

    def __init__(self, public_key):
        document = json.loads(OPENAPI.read_text())
        self.public_key = public_key
        self.routes = []
        for template, operations in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
            for method, operation in operations.items():
                if isinstance(operation, dict) and "operationId" in operation:
                    self.routes.append((method.upper(), pattern, operation))
        self.requests: list[dict] = []
        self.violations: list[str] = []
        self.down = False
        self.refused = 0
        self.tokens: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer = fake.handle(self.command, self.path, dict(self.headers), body)
                raw = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def violation(self, text: str):
        self.violations.append(text)
        return 422, {"message": text}

    def handle(self, method: str, path: str, headers: dict, body: bytes):
        if self.down:
            with self.lock:
                self.refused += 1
            return 503, {"message": "Service Unavailable"}
        matches = [(p.match(path), op) for m, p, op in self.routes if m == method and p.match(path)]
        if not matches:
            return self.violation(f"{method} {path} is not in GitHub's API description")
        match, operation = matches[0]
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["schema"].get("type") == "integer" and not match[parameter["name"]].isdigit():
                return self.violation(f"{parameter['name']} {match[parameter['name']]!r} is not an integer")
        if headers.get("Accept") != "application/vnd.github+json" or not headers.get("User-Agent"):
            return self.violation("missing Accept: application/vnd.github+json or User-Agent")
        document = json.loads(body) if body else None
        spec = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
        if spec and (document is not None or operation["requestBody"].get("required")):
            errors = [e.message for e in jsonschema_rs.validator_for(spec["schema"]).iter_errors(document)]
            if errors:
                return self.violation(f"{operation['operationId']}: {errors[0]}")
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        with self.lock:
            self.requests.append({"operation": operation["operationId"], "path": path, "body": document, "token": token})
        if operation["operationId"] == "apps/create-installation-access-token":
            if not self.jwt_ok(token) or match["installation_id"] != str(INSTALLATION):
                return 401, {"message": "A JSON web token could not be decoded"}
            issued = f"ghs_{uuid.uuid4().hex}"
            self.tokens.add(issued)
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            return 201, {"token": issued, "expires_at": expires, "permissions": {"deployments": "write"}, "repository_selection": "all"}
        if token not in self.tokens:
            return 401, {"message": "Bad credentials"}
        return 204, None

    def jwt_ok(self, token: str) -> bool:
        try:
            header, claims, signature = token.split(".")
            pad = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
            pkcs1_15.new(self.public_key).verify(SHA256.new(f"{header}.{claims}".encode()), pad(signature))
            head, body = json.loads(pad(header)), json.loads(pad(claims))
        except (ValueError, TypeError):
            return False
        now = time.time()
        return head == {"alg": "RS256", "typ": "JWT"} and body["iss"] == APP_ID and body["iat"] <= now < body["exp"] \
            and body["exp"] - body["iat"] <= 600

    def reviews(self, run_id: int) -> list[dict]:
        with self.lock:
            return [r["body"] for r in self.requests
                    if r["operation"] == "actions/review-custom-gates-for-run" and r["path"].endswith(f"/runs/{run_id}/deployment_protection_rule")]

    def stop(self):
        self.server.shutdown()


# ---------------------------------------------------------------------- the app

@pytest.fixture(scope="module")
def github(dn, tmp_path_factory):
    key = RSA.generate(2048)
    folder = tmp_path_factory.mktemp("github")
    (folder / "app.pem").write_bytes(key.export_key())
    (folder / "map.yaml").write_text("repositories:\n  acme/mapped: mapped-service\nenvironments:\n  production: prod\n")
    fake = FakeGitHub(key.publickey())
    srv = Server(dn, "--github-app-id", APP_ID, "--github-app-key", str(folder / "app.pem"), "--github-webhook-secret-env",
                 "GH_SECRET", "--github-api-url", fake.url, "--github-map", str(folder / "map.yaml"), env={"GH_SECRET": SECRET})
    yield srv, fake
    srv.stop()
    fake.stop()


def deliver(srv: Server, body: bytes, signature: str | None = None, delivery: str | None = None, event: str = "deployment_protection_rule"):
    import urllib.request as u

    headers = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-Hub-Signature-256": signature if signature is not None else octokit_sign(SECRET, body),
               "User-Agent": "GitHub-Hookshot/test"}
    started = time.monotonic()
    answer = None
    try:
        with u.urlopen(u.Request(srv.url + "/github/webhook", body, headers, method="POST"), timeout=10) as response:  # GitHub's 10 s
            answer = response.status, json.loads(response.read())
    except u.HTTPError as exc:
        answer = exc.code, json.loads(exc.read())
    assert time.monotonic() - started < 10
    return answer


def until(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.2)
    return result


def run_id() -> int:
    return int(uuid.uuid4().int % 10**10)


def test_our_signature_is_octokits_and_a_bad_one_is_refused_before_parsing(github, webhook_schema):
    from shipledger.server.github import signature_ok

    srv, fake = github
    body = b'{"not": "even a protection rule event"'
    assert signature_ok(SECRET.encode(), body, octokit_sign(SECRET, body))
    assert not signature_ok(SECRET.encode(), body, octokit_sign("another secret", body))
    before = len(fake.requests)
    status, answer = deliver(srv, body, signature=octokit_sign("another secret", body))
    assert status == 401 and answer["error"]["code"] == "BadSignature"  # not 400: the body was never parsed
    event = event_payload(webhook_schema, "acme/api", run_id(), "production", {"digest": "sha256:" + "1" * 64, "service": "x"}, "a" * 40)
    assert deliver(srv, event, signature="sha256=" + "0" * 64)[0] == 401
    assert deliver(srv, event, signature="")[0] == 401
    time.sleep(1.5)
    assert len(fake.requests) == before and not fake.violations


def test_approval_after_a_late_vote_with_a_status_report_meanwhile(dn, github, webhook_schema):
    srv, fake = github
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=2, min_organisations=2)
    run = run_id()
    # the payload's callback URL names another host: the app calls GitHub's API base all the same
    event = event_payload(webhook_schema, "acme/api", run, "production", {"shipledger": {"service": service, "digest": digest}},
                          "b" * 40, callback_host="https://attacker.example")
    status, answer = deliver(srv, event)
    assert status == 202 and "accepted" in answer
    [report] = until(lambda: fake.reviews(run))
    assert set(report) == {"environment_name", "comment"}  # a status report: no state
    assert report["environment_name"] == "production" and "not enough approvals: 0 of 2" in report["comment"]

    dn.approve(digest, service, approvers=(0,))
    second = until(lambda: len(fake.reviews(run)) >= 2 and fake.reviews(run)[1])
    assert "state" not in second and "not enough approvals: 1 of 2" in second["comment"]
    dn.approve(digest, service, approvers=(1,))
    final = until(lambda: (r := fake.reviews(run)) and r[-1].get("state") and r[-1])
    assert final["state"] == "approved" and f"the gate allows {digest} of {service} to {ENV}" in final["comment"]
    time.sleep(2)
    assert [r.get("state") for r in fake.reviews(run)] == [None, None, "approved"]  # decided once, never again
    assert not fake.violations, fake.violations


def test_a_replayed_delivery_is_not_acted_on_twice(dn, github, webhook_schema):
    srv, fake = github
    service = unique()
    digest = dn.release(service)
    run = run_id()
    event = event_payload(webhook_schema, "acme/api", run, "production", {"service": service, "digest": digest}, "c" * 40)
    delivery = str(uuid.uuid4())
    assert deliver(srv, event, delivery=delivery)[0] == 202
    assert deliver(srv, event, delivery=delivery) == (200, {"duplicate": delivery})
    until(lambda: any(r.get("state") for r in fake.reviews(run)))
    time.sleep(2)
    # Status reports (no state) may come first while the server's index has not yet seen the votes;
    # the decision is made once.
    assert [r["state"] for r in fake.reviews(run) if "state" in r] == ["approved"]


def test_a_denial_is_a_rejection_with_the_gates_sentence(dn, github, webhook_schema):
    srv, fake = github
    service = unique()
    digest = dn.release(service)
    dn.ledger("registrar").revoke(digest, service, "CVE-2026-0002")
    run = run_id()
    event = event_payload(webhook_schema, "acme/api", run, "production", {"service": service, "image": f"r.example/{service}@{digest}"},
                          "d" * 40)
    assert deliver(srv, event)[0] == 202
    [review] = until(lambda: fake.reviews(run))
    assert review["state"] == "rejected" and "the artifact has been revoked (quarantined)" in review["comment"]

    # a deployment the app cannot map is rejected too (fail closed), saying why
    unmapped = run_id()
    event = event_payload(webhook_schema, "acme/unknown", unmapped, "production", {}, "e" * 40)
    assert deliver(srv, event)[0] == 202
    [review] = until(lambda: fake.reviews(unmapped))
    assert review["state"] == "rejected" and "no service for acme/unknown" in review["comment"]

    # a callback URL of another repository is refused outright
    other = json.loads(event_payload(webhook_schema, "acme/api", run_id(), "production", {}, "e" * 40))
    other["deployment_callback_url"] = "https://api.github.com/repos/evil/repo/actions/runs/1/deployment_protection_rule"
    assert deliver(srv, json.dumps(other).encode())[0] == 400
    assert not fake.violations, fake.violations


def test_the_mapping_file_and_the_commit_find_the_release(dn, github, webhook_schema):
    srv, fake = github
    sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    digest = digest_for(sha)
    if dn.ledger().policy("mapped-service", ENV) is None:
        dn.set_policy("mapped-service", threshold=1, min_organisations=1)
    dn.ledger("registrar").register(ArtifactSpec(digest=digest, service="mapped-service", version=sha[:12], commit=sha))
    dn.approve(digest, "mapped-service", approvers=(0,))
    srv.until("/readyz", lambda a: a.status == 200 and a.json()["index_lag"] == 0)
    run = run_id()
    event = event_payload(webhook_schema, "acme/mapped", run, "production", {}, sha)  # Actions deployments carry no payload
    assert deliver(srv, event)[0] == 202
    [review] = until(lambda: fake.reviews(run))
    assert review["state"] == "approved" and digest in review["comment"] and "mapped-service to prod" in review["comment"]


def test_while_githubs_api_is_down_nothing_is_approved_and_the_app_retries(dn, github, webhook_schema):
    srv, fake = github
    service = unique()
    digest = dn.release(service)
    run = run_id()
    fake.down = True
    try:
        event = event_payload(webhook_schema, "acme/api", run, "production", {"service": service, "digest": digest}, "f" * 40)
        assert deliver(srv, event)[0] == 202
        until(lambda: fake.refused >= 2)  # tried, failed, tried again
        assert fake.reviews(run) == []
        assert "callback failed" in srv.log.read_text()
    finally:
        fake.down = False
    [review] = until(lambda: fake.reviews(run), timeout=60)
    assert review["state"] == "approved"
    time.sleep(2)
    assert len(fake.reviews(run)) == 1 and not fake.violations


def test_the_apps_options_are_checked_before_it_listens(dn, tmp_path):
    from support import fails

    (tmp_path / "not.pem").write_text("hello")
    base = ("serve", "--listen", "127.0.0.1:1", "--db", str(tmp_path / "i.sqlite"))
    fails(dn.run(*base, "--github-app-id", "7"), 2, "--github-app-key")
    fails(dn.run(*base, "--github-app-id", "7", "--github-app-key", str(tmp_path / "not.pem"), "--github-webhook-secret-env", "S"),
          2, "S holds no GitHub webhook secret")
    fails(dn.run(*base, "--github-app-id", "7", "--github-app-key", str(tmp_path / "not.pem"), "--github-webhook-secret-env", "S",
                 env={"S": "x"}), 2, "not an RSA private key")
    fails(dn.run(*base, "--github-app-id", "seven"), 2, "numeric id")
    fails(dn.run(*base, "--deployer-key-env", "NOPE"), 2, "NOPE holds no deployer key")

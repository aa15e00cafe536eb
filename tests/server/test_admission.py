"""The admission webhook over real TLS on loopback, asked as kube-apiserver asks it.

No cluster runs here. What is real: `shipledger serve --admission` with a certificate for
SVC.NS.svc signed by a CA made in the test (trustme); a client that does what kube-apiserver does
(POST ?timeout=5s, verify against the CA bundle with the service's DNS name, check uid, kind and
apiVersion of the reply); Debian curl with --resolve and --cacert as a second client; objects as
`kubectl create ... --dry-run=client -o json` writes them (a Pod is such a Deployment's template in a
Pod, as the ReplicaSet controller makes it); the devnet's ledger. What only a cluster shows (the
apiserver's own retries, cert-manager injecting the CA) is not tested here.
"""

from __future__ import annotations

import copy
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import trustme

from conftest import Server
from support import ENV, unique

SERVER_NAME = "shipledger.shipledger.svc"  # SVC.NS.svc: the name kube-apiserver checks for a service reference
NAMESPACE = "shop"  # mapped to ENV by the admission map


# ---------------------------------------------------------------------- TLS and the apiserver-like client

@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert(SERVER_NAME)
    folder = tmp_path_factory.mktemp("tls")
    paths = {"ca": folder / "ca.pem", "cert": folder / "tls.crt", "key": folder / "tls.key", "other_ca": folder / "other.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(paths["cert"]), append=True)
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return paths


class ApiserverClient:
    """What kube-apiserver does when it calls a webhook through a Service: TLS to the pod, the
    certificate verified against the webhook's caBundle for SVC.NS.svc, POST with ?timeout=."""

    def __init__(self, port: int, cafile: Path, server_name: str = SERVER_NAME):
        self.port, self.server_name = port, server_name
        self.context = ssl.create_default_context(cafile=str(cafile))

    def review(self, request: dict, timeout: str = "5s") -> dict:
        seconds = float(timeout.removesuffix("s"))
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=seconds)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Go's net/http, and http.client's own connect()
        connection = http.client.HTTPSConnection(self.server_name, self.port, timeout=seconds, context=self.context)
        connection.sock = self.context.wrap_socket(raw, server_hostname=self.server_name)
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
        try:
            connection.request("POST", f"/admission/v1/validate?timeout={timeout}", body,
                               {"Content-Type": "application/json", "Accept": "application/json, */*"})
            answer = connection.getresponse()
            assert answer.status == 200, (answer.status, answer.read())
            review = json.loads(answer.read())
        finally:
            connection.close()
        assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview", review
        assert review["response"]["uid"] == request["uid"]
        if not review["response"]["allowed"]:
            assert review["response"]["status"]["code"] == 403 and review["response"]["status"]["message"]
        return review["response"]


# ---------------------------------------------------------------------- objects as Kubernetes writes them

def kubectl_json(*args: str) -> dict:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl (Debian kubernetes-client) is not installed")
    return json.loads(subprocess.run(["kubectl", "create", *args, "--dry-run=client", "-o", "json"], check=True,
                                     capture_output=True, text=True, timeout=60).stdout)


def deployment(image: str, annotations: dict | None = None) -> dict:
    obj = kubectl_json("deployment", "web", f"--image={image}")
    obj["metadata"]["namespace"] = NAMESPACE
    if annotations:
        obj["spec"]["template"]["metadata"]["annotations"] = annotations
    return obj


def pod(image: str, annotations: dict | None = None, init: str | None = None, ephemeral: str | None = None) -> dict:
    """A Pod as the ReplicaSet controller makes it from kubectl's Deployment template."""
    template = deployment(image, annotations)["spec"]["template"]
    obj = {"kind": "Pod", "apiVersion": "v1", "metadata": {**copy.deepcopy(template["metadata"]), "generateName": "web-",
                                                          "namespace": NAMESPACE}, "spec": copy.deepcopy(template["spec"])}
    if init:
        obj["spec"]["initContainers"] = [{**obj["spec"]["containers"][0], "name": "migrate", "image": init}]
    if ephemeral:
        obj["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": ephemeral, "resources": {}}]
    return obj


def request_for(obj: dict, operation: str = "CREATE") -> dict:
    group, _, version = obj["apiVersion"].rpartition("/")
    resource = {"Pod": "pods", "Deployment": "deployments", "CronJob": "cronjobs", "Job": "jobs"}[obj["kind"]]
    return {"uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": obj["kind"]},
            "namespace": obj["metadata"].get("namespace", NAMESPACE), "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": obj, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}


# ---------------------------------------------------------------------- the ledger

REPOSITORY = "registry.example/shop/web"


def image(digest: str, repository: str = REPOSITORY) -> str:
    return f"{repository}@{digest}"


@pytest.fixture(scope="module")
def world(dn, tls):
    """Two services: `mapped` (named by the admission map) with an approved release, one registered
    unapproved, and `frozen`: A replaced by B (A is the rollback target, B live), then a freezing incident."""
    mapped, frozen = unique("web"), unique("frozen")
    approved = dn.release(mapped, "1.0.0")
    unapproved = dn.register(mapped, "1.1.0")
    first = dn.release(frozen, "1.0.0", freeze_severity=2)
    deployer = dn.ledger("deployer")
    deployer.complete(deployer.start_deployment(first, frozen, ENV, 100))
    second = dn.release(frozen, "2.0.0")
    deployer.complete(deployer.start_deployment(second, frozen, ENV, 100))
    newer = dn.release(frozen, "3.0.0")
    dn.ledger("responder").open_incident(frozen, ENV, 1, "checkout down")
    map_file = Path(dn.workdir) / "admission-map.yaml"
    map_file.write_text(f"images:\n  {REPOSITORY}: {mapped}\nnamespaces:\n  {NAMESPACE}: {ENV}\n")
    return {"mapped": mapped, "approved": approved, "unapproved": unapproved, "frozen": frozen, "first": first,
            "second": second, "newer": newer, "map": map_file}


class TlsServer(Server):
    """`shipledger serve --admission` over HTTPS; ready once /readyz answers 200 over TLS."""

    def __init__(self, dn, tls, *options: str):
        self.cafile = tls["ca"]
        super().__init__(dn, "--admission", "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]), *options, ready=True)

    def wait(self, path: str, timeout: float = 60):
        context = ssl.create_default_context(cafile=str(self.cafile))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"shipledger serve exited: {self.log.read_text()}"
            try:
                connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context)
                connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", self.port), 5),
                                                      server_hostname=SERVER_NAME)
                connection.request("GET", path)
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{path} never answered 200 over TLS: {self.log.read_text()[-2000:]}")

    def decisions(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith('{"uid"')]


@pytest.fixture(scope="module")
def webhook(dn, tls, world):
    srv = TlsServer(dn, tls, "--admission-map", str(world["map"]))
    yield srv
    srv.stop()


@pytest.fixture
def apiserver(webhook, tls):
    return ApiserverClient(webhook.port, tls["ca"])


# ---------------------------------------------------------------------- the cases

def test_approved_digest_allowed_and_the_decision_logged(apiserver, webhook, world):
    request = request_for(pod(image(world["approved"])))
    answer = apiserver.review(request)
    assert answer["allowed"] is True and "warnings" not in answer
    [logged] = [d for d in webhook.decisions() if d["uid"] == request["uid"]]
    assert logged["allowed"] is True and logged["kind"] == "Pod" and logged["namespace"] == NAMESPACE
    assert logged["images"] == [{"where": "container web", "image": image(world["approved"]), "digest": world["approved"],
                                 "service": world["mapped"], "environment": ENV, "allowed": True, "reason": "allowed"}]


def test_unapproved_digest_denied_with_the_gates_reason(apiserver, world):
    answer = apiserver.review(request_for(pod(image(world["unapproved"]))))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert message.startswith("shipledger denied container web ") and world["unapproved"] in message
    assert "approval" in message  # the gate's sentence: not enough approvals


def test_tag_only_image_denied(apiserver):
    answer = apiserver.review(request_for(pod(f"{REPOSITORY}:1.0.0")))
    assert answer["allowed"] is False and "names no digest" in answer["status"]["message"]


def test_during_a_freeze_the_live_digest_and_the_rollback_target_are_allowed_a_new_one_denied(apiserver, world):
    notes = {"shipledger.io/service": world["frozen"], "shipledger.io/environment": ENV}
    live = apiserver.review(request_for(pod(image(world["second"], "registry.example/shop/frozen"), notes)))
    assert live["allowed"] is True
    assert any("live release" in w and "incident" in w for w in live["warnings"]), live
    rollback = apiserver.review(request_for(pod(image(world["first"], "registry.example/shop/frozen"), notes)))
    assert rollback["allowed"] is True and any("rollback target" in w for w in rollback["warnings"]), rollback
    new = apiserver.review(request_for(pod(image(world["newer"], "registry.example/shop/frozen"), notes)))
    assert new["allowed"] is False and "incident" in new["status"]["message"], new


def test_an_unapproved_init_container_denies_the_pod(apiserver, world):
    answer = apiserver.review(request_for(pod(image(world["approved"]), init=image(world["unapproved"]))))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "init container migrate" in message and world["unapproved"] in message and "container web" not in message


def test_ephemeral_container_is_checked(apiserver, world):
    answer = apiserver.review(request_for(pod(image(world["approved"]), ephemeral="busybox:latest"), "UPDATE"))
    assert answer["allowed"] is False and "ephemeral container debugger" in answer["status"]["message"]


def test_a_deployment_template_and_a_cronjob_template(apiserver, world):
    assert apiserver.review(request_for(deployment(image(world["approved"]))))["allowed"] is True
    denied = apiserver.review(request_for(deployment(image(world["unapproved"]))))
    assert denied["allowed"] is False and world["unapproved"] in denied["status"]["message"]
    cron = kubectl_json("cronjob", "nightly", f"--image={image(world['unapproved'])}", "--schedule=0 3 * * *")
    cron["metadata"]["namespace"] = NAMESPACE
    assert apiserver.review(request_for(cron))["allowed"] is False


def test_unknown_service_and_unknown_namespace_denied(apiserver, world):
    other = apiserver.review(request_for(pod(image(world["approved"], "registry.example/elsewhere/tool"))))
    assert other["allowed"] is False and "no service for registry.example/elsewhere/tool" in other["status"]["message"]
    obj = pod(image(world["approved"]))
    obj["metadata"]["namespace"] = "unmapped"
    request = request_for(obj)
    assert apiserver.review(request)["allowed"] is False


def test_curl_as_a_second_client(webhook, tls, world, tmp_path):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    request = request_for(pod(image(world["approved"])))
    body = tmp_path / "review.json"
    body.write_text(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}))
    url = f"https://{SERVER_NAME}:{webhook.port}/admission/v1/validate?timeout=5s"
    out = subprocess.run(["curl", "-sS", "--fail", "--resolve", f"{SERVER_NAME}:{webhook.port}:127.0.0.1", "--cacert",
                          str(tls["ca"]), "-H", "Content-Type: application/json", "--data-binary", f"@{body}", url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    review = json.loads(out.stdout)
    assert review["response"] == {"uid": request["uid"], "allowed": True}
    refused = subprocess.run(["curl", "-sS", "--resolve", f"{SERVER_NAME}:{webhook.port}:127.0.0.1", "--cacert",
                              str(tls["other_ca"]), "--data-binary", f"@{body}", url], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 60, refused  # curl: peer certificate cannot be authenticated with the given CA


def test_a_wrong_certificate_is_refused_by_the_client(webhook, tls, world):
    request = request_for(pod(image(world["approved"])))
    with pytest.raises(ssl.SSLCertVerificationError):
        ApiserverClient(webhook.port, tls["other_ca"]).review(request)
    with pytest.raises(ssl.SSLCertVerificationError):  # the right CA, but the certificate is for another service
        ApiserverClient(webhook.port, tls["ca"], "other.shipledger.svc").review(request)


def test_not_a_review_is_400_and_delete_is_allowed(webhook, apiserver, world):
    request = request_for(pod(image(world["unapproved"])), "DELETE")
    assert apiserver.review(request)["allowed"] is True
    context = ssl.create_default_context(cafile=str(webhook.cafile))
    connection = http.client.HTTPSConnection("127.0.0.1", webhook.port, timeout=10, context=context)
    connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", webhook.port), 10), server_hostname=SERVER_NAME)
    connection.request("POST", "/admission/v1/validate", json.dumps({"kind": "AdmissionReview"}), {"Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 400 and "admission.k8s.io/v1" in json.loads(answer.read())["error"]["message"]


# ---------------------------------------------------------------------- a node that never answers

class BlackHole:
    """A TCP relay in front of the node; `swallow()` makes it keep every byte it gets and answer nothing."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.swallowing = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def swallow(self) -> None:
        self.swallowing.set()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                if not self.swallowing.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def close(self):
        self.closed = True
        self.listener.close()


def test_a_node_that_never_answers_is_a_denial_within_the_deadline(dn, tls, world):
    hole = BlackHole(dn.port)
    srv = TlsServer(dn, tls, "--admission-map", str(world["map"]), "--rpc", f"http://127.0.0.1:{hole.port}")
    try:
        client = ApiserverClient(srv.port, tls["ca"])
        assert client.review(request_for(pod(image(world["approved"]))))["allowed"] is True
        hole.swallow()
        fresh = dn.register(world["mapped"], unique("v"))  # a digest no answer is cached for
        # ?timeout=2s: the webhook's own deadline is 1 s; the client gives up after 2 s (raising, failing the test)
        answer = client.review(request_for(pod(image(fresh))), timeout="2s")
        assert answer["allowed"] is False
        assert "cannot decide" in answer["status"]["message"], answer
    finally:
        srv.stop()
        hole.close()

"""deploy/kubernetes/ against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: no unknown
field), from 1.30 (matchConditions is GA there) to the newest the package knows, and against each
other: the webhook calls the Service, the Service reaches the container, the certificate names the
Service, the Deployment's arguments are ones `shipledger serve` takes. cert-manager's kinds are CRDs,
which kubernetes-validate has no schema for: they are checked by those cross-references only."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shipledger.server.admission import AdmissionMap, deadline_of

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSIONS = ("1.30", kubernetes_validate.latest_version())


def documents() -> list[dict]:
    docs = []
    for path in sorted(FOLDER.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str) -> dict:
    [found] = [d for d in documents() if d["kind"] == kind]
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_builtin_object_validates_strictly(version):
    checked = 0
    for doc in documents():
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked == 6  # Namespace, 2 ConfigMaps, Deployment, Service, ValidatingWebhookConfiguration


def test_the_webhook_fails_closed_and_never_gates_itself():
    config = one("ValidatingWebhookConfiguration")
    [hook] = config["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None"
    assert deadline_of(f"{hook['timeoutSeconds']}s") < hook["timeoutSeconds"]  # our answer comes before the apiserver gives up
    service = hook["clientConfig"]["service"]
    [expression] = hook["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "NotIn"
    assert {"kube-system", service["namespace"]} <= set(expression["values"])
    assert hook["matchConditions"] and all(c["name"] and c["expression"] for c in hook["matchConditions"])
    resources = {r for rule in hook["rules"] for r in rule["resources"]}
    assert resources == {"pods", "pods/ephemeralcontainers", "deployments", "replicasets", "statefulsets", "daemonsets",
                         "jobs", "cronjobs"}
    assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in hook["rules"])
    # cert-manager injects the CA of the Certificate the server's secret comes from
    certificate = one("Certificate")
    namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert (namespace, name) == (certificate["metadata"]["namespace"], certificate["metadata"]["name"])
    assert f"{service['name']}.{service['namespace']}.svc" in certificate["spec"]["dnsNames"]


def test_the_service_reaches_a_server_started_as_the_webhook_expects(tmp_path):
    from shipledger.cli import build_parser

    hook = one("ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"]
    service, deployment = one("Service"), one("Deployment")
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == (hook["name"], hook["namespace"])
    [port] = [p for p in service["spec"]["ports"] if p["port"] == hook["port"]]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    assert any(p["name"] == port["targetPort"] for p in container["ports"])
    args = build_parser("serve").parse_args(container["args"])  # options `shipledger serve` really has
    assert args.admission and args.listen.endswith(f":{container['ports'][0]['containerPort']}")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    tls = volumes[mounts[str(Path(args.tls_cert).parent)]]
    assert tls["secret"]["secretName"] == one("Certificate")["spec"]["secretName"]
    assert mounts[str(Path(args.tls_key).parent)] == tls["name"]
    # the admission map the ConfigMap carries is one the server loads
    [mapping] = [d for d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volumes[
        mounts[str(Path(args.admission_map).parent)]]["configMap"]["name"]]
    path = tmp_path / "admission-map.yaml"
    path.write_text(mapping["data"][Path(args.admission_map).name])
    loaded = AdmissionMap.load(str(path))
    assert loaded.images and loaded.namespaces

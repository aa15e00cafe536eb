"""Drift: is what runs what the ledger approved? What runs comes as observations (service,
environment, digest, where): from a Kubernetes pod list (`kubectl get pods -A -o json`), mapped to
targets exactly as the admission webhook maps them (shipledger/server/admission.py), or as JSON lines
from anywhere else. Each is compared with the ledger of its target:

- unregistered: the ledger never saw this digest for the service;
- revoked: the artifact is revoked and still runs;
- unexpected: it is neither the live release, nor the rollout in progress, nor the rollback target;
- live_not_running: the target has a live release and nothing observed runs it;
- unmapped / no_digest: a container that cannot be compared (no target, or no digest to go by).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from shipledger._internal.names import check_name, format_digest, parse_digest, parse_image
from shipledger.errors import UsageError

RUNNING_PHASES = ("Running", "Pending", "Unknown")  # a Succeeded or Failed pod runs nothing any more
OBSERVATION_KEYS = ("service", "environment", "digest", "where")


@dataclass(frozen=True)
class Observation:
    service: str
    environment: str
    digest: str  # sha256:<hex>
    where: str  # e.g. "pod shop/web-7f9c container web"


@dataclass(frozen=True)
class Finding:
    kind: str  # unregistered, revoked, unexpected, live_not_running, unmapped, no_digest
    where: str
    reason: str
    service: str = ""
    environment: str = ""
    digest: str = ""

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------- what runs

def _running_digest(status: dict | None) -> str | None:
    """The manifest digest a container status says runs: imageID as REPO@sha256:... (containerd) or
    docker-pullable://REPO@sha256:... (Docker); None when it names none (a bare image config id is
    not a manifest digest)."""
    image_id = (status or {}).get("imageID") or ""
    _, at, digest = image_id.rpartition("@")
    if not at:
        return None
    try:
        return format_digest(parse_digest(digest))
    except UsageError:
        return None


def observations_from_pods(document, mapping) -> tuple[list[Observation], list[Finding]]:
    """Observations of every running container of a pod list, and findings for containers that
    cannot be compared. The digest is what the kubelet reports running (status.imageID), else the
    spec's digest; the target is the webhook's (annotations, then the admission map)."""
    from shipledger.server.admission import CONTAINER_FIELDS, pod_annotations, target_of

    if not isinstance(document, dict) or not isinstance(document.get("items", []), list):
        raise UsageError("the pod list is not the JSON of `kubectl get pods -A -o json` (an object with items)")
    pods = document["items"] if "items" in document else [document]
    observations, findings = [], []
    for pod in pods:
        if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
            raise UsageError("the pod list holds something that is not a Pod")
        metadata = pod.get("metadata") or {}
        namespace = metadata.get("namespace") or ""
        status = pod.get("status") or {}
        if status.get("phase") not in RUNNING_PHASES:
            continue
        annotations = pod_annotations(pod)
        statuses = {s.get("name"): s for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
                    for s in status.get(key) or [] if isinstance(s, dict)}
        for label, key in CONTAINER_FIELDS:
            for container in (pod.get("spec") or {}).get(key) or []:
                name = container.get("name", "?")
                where = f"pod {namespace}/{metadata.get('name', '?')} {label} {name}"
                if key == "initContainers" and (statuses.get(name) or {}).get("state", {}).get("terminated"):
                    continue  # an init container that finished runs nothing
                text = container.get("image") or ""
                try:
                    repository, spec_digest = parse_image(text)
                except UsageError:
                    repository, spec_digest = _repository_of(text), None
                digest = _running_digest(statuses.get(name)) or spec_digest
                if digest is None:
                    findings.append(Finding("no_digest", where, f"{text or 'no image'}: neither the spec nor the kubelet names"
                                                                f" a digest to compare"))
                    continue
                service, environment, problem = target_of(repository, annotations, namespace, mapping)
                if problem:
                    findings.append(Finding("unmapped", where, problem, service, environment, digest))
                    continue
                observations.append(Observation(service, environment, digest, where))
    return observations, findings


def _repository_of(image: str) -> str:
    """The repository of an image named by tag (drift still maps it, by the digest the kubelet reports)."""
    from shipledger._internal.names import normalise_repository

    name = image.split("@")[0]
    head, _, tail = name.rpartition(":")
    if head and "/" not in tail:
        name = head
    return normalise_repository(name) if name else ""


def observations_from_lines(text: str, label: str) -> list[Observation]:
    """--observed: one JSON object a line, {"service", "environment", "digest", "where"}."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{label}:{number}: not JSON: {exc}") from None
        if not isinstance(item, dict) or set(item) != set(OBSERVATION_KEYS) or not all(isinstance(v, str) for v in item.values()):
            raise UsageError(f"{label}:{number}: each line is an object with exactly the string keys {', '.join(OBSERVATION_KEYS)}")
        try:
            found.append(Observation(check_name("service", item["service"]), check_name("environment", item["environment"]),
                                     format_digest(parse_digest(item["digest"])), item["where"]))
        except UsageError as exc:
            raise UsageError(f"{label}:{number}: {exc}") from None
    return found


# ---------------------------------------------------------------------- compared with the ledger

def compare(observations: list[Observation], artifact_of, releases_of, digest_of_deployment) -> list[Finding]:
    """Findings for the observations. artifact_of(digest, service) -> Artifact | None;
    releases_of(service, environment) -> target_releases' dict; digest_of_deployment(id) -> digest."""
    from shipledger._internal.targets import ROLES, artifact_id

    findings = []
    targets: dict[tuple[str, str], set[str]] = {}
    for o in observations:
        running = targets.setdefault((o.service, o.environment), set())
        running.add(artifact_id(o.service, parse_digest(o.digest)))
    releases = {target: releases_of(*target) for target in targets}
    for o in observations:
        artifact = artifact_of(o.digest, o.service)
        if artifact is None:
            findings.append(Finding("unregistered", o.where, f"the ledger never saw {o.digest} for {o.service}", o.service,
                                    o.environment, o.digest))
            continue
        if artifact.revoked:
            findings.append(Finding("revoked", o.where, f"{o.digest} of {o.service} is revoked and still runs", o.service,
                                    o.environment, o.digest))
            continue
        mine = artifact_id(o.service, parse_digest(o.digest))
        if not any(mine == found[1] for role, found in releases[(o.service, o.environment)].items() if role in ROLES):
            findings.append(Finding("unexpected", o.where, f"{o.digest} is neither the live release, the rollout in progress nor"
                                    f" the rollback target of {o.service} in {o.environment}", o.service, o.environment, o.digest))
    for (service, environment), running in sorted(targets.items()):
        live = releases[(service, environment)].get("live")
        if live and live[1] not in running:
            digest = digest_of_deployment(live[0])
            findings.append(Finding("live_not_running", f"{service} in {environment}",
                                    f"nothing running is the live release (deployment {live[0]}, {digest})", service, environment,
                                    digest))
    return findings


def ledger_readers(ledger, rpc):
    """(artifact_of, releases_of, digest_of_deployment) over a connected Ledger and a JSON-RPC batch."""
    from shipledger._internal.targets import target_releases

    def releases_of(service: str, environment: str) -> dict:
        return target_releases(rpc, ledger.ledger.address, service, environment)

    def digest_of_deployment(deployment_id: int) -> str:
        [started] = ledger.events("DeploymentStarted", "0x" + deployment_id.to_bytes(32, "big").hex())
        return format_digest(started["digest"])

    return ledger.artifact, releases_of, digest_of_deployment

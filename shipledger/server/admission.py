"""The Kubernetes validating admission webhook: POST /admission/v1/validate (`serve --admission`).

It reads an AdmissionReview admission.k8s.io/v1 for a Pod or for the pod template of a Deployment,
ReplicaSet, StatefulSet, DaemonSet, Job or CronJob, and checks the image of every container, init
container and ephemeral container against the ledger:

- the target is the pod's annotations `shipledger.io/service` and `shipledger.io/environment`, else
  the admission map (`images`: repository -> service, `namespaces`: namespace -> environment);
- an image is allowed when the gate allows its digest there, or when the digest is the target's live
  release, its rollout in progress, or its rollback target (so a freeze or an expired approval never
  stops Kubernetes from rescheduling or rolling back what runs); a revoked or unknown artifact never;
- anything else is a denial with the gate's sentence: HTTP 200, allowed false, status.code 403. An
  image without a digest, an unknown target, a malformed object, a node that does not answer within
  the internal deadline (below the apiserver's ?timeout): denied, and the message says why.

It never writes to the chain (sideEffects: None), and it logs every decision as one JSON line on the
`shipledger.admission` logger. The same target-resolution is used by `shipledger drift`.
"""


import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

from shipledger._internal.names import check_name, normalise_repository, parse_digest, parse_duration, parse_image
from shipledger.errors import ShipledgerError, UsageError, gate_sentence

SERVICE_ANNOTATION = "shipledger.io/service"
ENVIRONMENT_ANNOTATION = "shipledger.io/environment"
DEFAULT_TIMEOUT = 10.0  # seconds: the apiserver's default timeoutSeconds, when the request names none
DEADLINE_MARGIN = 1.0  # seconds kept between our answer and the apiserver giving up on us
MIN_DEADLINE = 0.2
WARNING_LENGTH = 256  # the apiserver may truncate a warning beyond this
# Gate reasons that deny even what runs: a revoked artifact must not be rescheduled, an unknown one never ran by the ledger's word.
HARD_DENIALS = frozenset({"unknown_artifact", "artifact_revoked"})
# kind -> the path to its PodTemplateSpec (a Pod is its own)
POD_TEMPLATES = {"Pod": (), "Deployment": ("spec", "template"), "ReplicaSet": ("spec", "template"),
                 "StatefulSet": ("spec", "template"), "DaemonSet": ("spec", "template"), "Job": ("spec", "template"),
                 "CronJob": ("spec", "jobTemplate", "spec", "template")}
CONTAINER_FIELDS = (("container", "containers"), ("init container", "initContainers"), ("ephemeral container", "ephemeralContainers"))

log = logging.getLogger("shipledger.admission")


# ---------------------------------------------------------------------- the map file

@dataclass(frozen=True)
class AdmissionMap:
    """Which service an image repository is and which environment a namespace is."""

    images: dict[str, str] = field(default_factory=dict)  # normalised repository -> service
    namespaces: dict[str, str] = field(default_factory=dict)  # namespace -> environment

    @classmethod
    def load(cls, path: str | None) -> "AdmissionMap":
        """From a YAML (or JSON) file {images: {REPO: SERVICE}, namespaces: {NAMESPACE: ENVIRONMENT}};
        the empty map without a path. UsageError naming the file for anything else."""
        if not path:
            return cls()
        import yaml

        try:
            data = yaml.safe_load(open(path, encoding="utf-8").read())
        except OSError as exc:
            raise UsageError(f"cannot read admission map {path}: {exc.strerror}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UsageError(f"admission map {path} is not YAML: {str(exc).splitlines()[0]}") from None
        data = {} if data is None else data
        if not isinstance(data, dict) or set(data) - {"images", "namespaces"}:
            raise UsageError(f"admission map {path} must be a mapping with only the keys images and namespaces")
        parts = {}
        for key, kind in (("images", "service"), ("namespaces", "environment")):
            section = data.get(key) or {}
            if not isinstance(section, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in section.items()):
                raise UsageError(f"admission map {path}: {key} must map names to {kind} names")
            try:
                parts[key] = {(normalise_repository(k) if key == "images" else k): check_name(kind, v) for k, v in section.items()}
            except UsageError as exc:
                raise UsageError(f"admission map {path}: {exc}") from None
        return cls(**parts)


# ---------------------------------------------------------------------- reading the object

@dataclass(frozen=True)
class Image:
    """One container's image and the target it belongs to; `problem` says why it cannot be checked."""

    where: str  # e.g. "init container migrate"
    image: str
    digest: str = ""
    service: str = ""
    environment: str = ""
    problem: str = ""


def pod_template(obj: dict) -> tuple[dict, dict]:
    """(pod spec, pod metadata) of a Pod or of a workload's pod template; UsageError otherwise."""
    kind = obj.get("kind")
    if kind not in POD_TEMPLATES:
        raise UsageError(f"shipledger checks Pods and the pod templates of {', '.join(k for k in POD_TEMPLATES if k != 'Pod')},"
                         f" not {kind!r}")
    template = obj
    for step in POD_TEMPLATES[kind]:
        template = template.get(step) if isinstance(template, dict) else None
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise UsageError(f"the {kind} has no pod spec")
    metadata = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    return template["spec"], metadata


def images_of(obj: dict, namespace: str, mapping: AdmissionMap) -> list[Image]:
    """Every container's image of the object with its target (annotations first, then the map)."""
    spec, _ = pod_template(obj)
    annotations = pod_annotations(obj)
    found = []
    for label, key in CONTAINER_FIELDS:
        for container in spec.get(key) or []:
            where = f"{label} {container.get('name', '?')}"
            text = container.get("image") if isinstance(container, dict) else None
            if not isinstance(text, str) or not text:
                found.append(Image(where, str(text), problem=f"{where} names no image"))
                continue
            try:
                repository, digest = parse_image(text)
            except UsageError as exc:
                found.append(Image(where, text, problem=str(exc)))
                continue
            service, environment, problem = target_of(repository, annotations, namespace, mapping)
            found.append(Image(where, text, digest, service, environment, problem))
    if not found:
        raise UsageError("the pod spec has no containers")
    return found


def pod_annotations(obj: dict) -> dict:
    """The pod's annotations; a workload's own annotations stand in where its template has none."""
    _, metadata = pod_template(obj)
    own = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return {**(own.get("annotations") or {}), **(metadata.get("annotations") or {})}


def target_of(repository: str, annotations: dict, namespace: str, mapping: AdmissionMap) -> tuple[str, str, str]:
    """(service, environment, problem) of an image: the annotations first, then the map; problem is
    "" when both are known and valid names, else the sentence saying what is missing."""
    service = annotations.get(SERVICE_ANNOTATION) or mapping.images.get(repository) or ""
    environment = annotations.get(ENVIRONMENT_ANNOTATION) or mapping.namespaces.get(namespace) or ""
    if not service:
        return "", environment, (f"no service for {repository}: annotate the pod with {SERVICE_ANNOTATION} or map the"
                                 " repository under images in the admission map")
    if not environment:
        return service, "", (f"no environment for namespace {namespace or '(none)'}: annotate the pod with"
                             f" {ENVIRONMENT_ANNOTATION} or map the namespace under namespaces in the admission map")
    try:
        check_name("service", service)
        check_name("environment", environment)
    except UsageError as exc:
        return service, environment, str(exc)
    return service, environment, ""


# ---------------------------------------------------------------------- deciding

class Judge:
    """The ledger's answer for one image at a block: the gate, then what runs at the target. Blocking
    (JSON-RPC): the route runs it in a worker thread under the deadline."""

    def __init__(self, state):
        self.state = state
        self._releases: dict[tuple, dict] = {}

    def releases(self, block: int, service: str, environment: str) -> dict:
        from shipledger._internal.targets import target_releases

        key = (block, service, environment)
        found = self._releases.get(key)
        if found is None:
            found = target_releases(self.state.rpc_batch, self.state.endpoint.ledger, service, environment, hex(block))
            if len(self._releases) > 4096:
                self._releases = {k: v for k, v in self._releases.items() if k[0] >= block}
            self._releases[key] = found
        return found

    def decided(self, images: list[Image]) -> tuple[int, list[dict]] | None:
        """decide()'s answer when every image is allowed by a gate answer already cached at the head, so
        the warm path skips the worker thread; None otherwise (ConnectionFailed when the head is unknown)."""
        block = self.state.known_head()
        answers = [None if i.problem else self.state.gates.cached(block, i.digest, i.service, i.environment) for i in images]
        if not all(a is not None and a.allowed for a in answers):
            return None
        return block, [{"allowed": True, "reason": "allowed", "message": "the gate allows it"} for _ in images]

    def decide(self, images: list[Image]) -> tuple[int, list[dict]]:
        """(block, one decision per image: allowed, reason, message, and a warning when allowed only as what runs)."""
        from shipledger._internal.targets import ROLES, artifact_id

        block = self.state.known_head()
        decisions = []
        for image in images:
            if image.problem:
                decisions.append({"allowed": False, "reason": "unchecked", "message": image.problem})
                continue
            answer = self.state.gates.ask(block, image.digest, image.service, image.environment)
            if answer.allowed:
                decisions.append({"allowed": True, "reason": "allowed", "message": "the gate allows it"})
                continue
            sentence = gate_sentence(answer.reason, answer.details)
            role = None
            if answer.reason not in HARD_DENIALS:
                mine = artifact_id(image.service, parse_digest(image.digest))
                running = self.releases(block, image.service, image.environment)
                role = next((r for r in ROLES if r in running and running[r][1] == mine), None)
            if role:
                decisions.append({"allowed": True, "reason": role, "message": sentence,
                                  "warning": f"{image.where}: {image.digest} is the {ROLE_WORDS[role]} of {image.service} in "
                                             f"{image.environment}, allowed although the gate says: {sentence}"})
            else:
                decisions.append({"allowed": False, "reason": answer.reason, "message": sentence})
        return block, decisions


ROLE_WORDS = {"live": "live release", "active": "rollout in progress", "rollback": "rollback target"}


def deadline_of(timeout: str | None) -> float:
    """Seconds we take at most: the apiserver's ?timeout= (Go duration text like 5s) less a margin."""
    seconds = DEFAULT_TIMEOUT
    if timeout:
        try:
            seconds = parse_duration(timeout, "timeout", positive=True)
        except UsageError:
            pass  # not ours to refuse: the apiserver's default stands
    return max(MIN_DEADLINE, min(seconds, 30.0) - DEADLINE_MARGIN)


def review_answer(uid: str, allowed: bool, message: str = "", warnings: list[str] | None = None) -> dict:
    response = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    if warnings:
        response["warnings"] = [w[:WARNING_LENGTH] for w in warnings]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def parse_review(body: bytes) -> dict:
    """The AdmissionReview's request; UsageError for anything that is not one of v1 with a uid."""
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the body is not JSON") from None
    if not isinstance(review, dict) or review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
        raise UsageError("the body is not an AdmissionReview of admission.k8s.io/v1")
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise UsageError("the AdmissionReview has no request with a uid")
    return request


# ---------------------------------------------------------------------- the route

def add_routes(app, st) -> None:
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from shipledger.server.api import error_response

    judges: dict[int, Judge] = {}

    @app.post("/admission/v1/validate", tags=["admission"], include_in_schema=False)
    async def validate(request: Request, timeout: str | None = None):
        started = time.monotonic()
        state = st(request)
        if state.config.admission is None:
            return error_response(404, "AdmissionOff", "the admission webhook is off: start the server with --admission")
        try:
            review = parse_review(await request.body())
        except UsageError as exc:
            return error_response(400, "UsageError", str(exc))
        uid = review["uid"]
        obj = review.get("object") if isinstance(review.get("object"), dict) else {}
        namespace = review.get("namespace") or (obj.get("metadata") or {}).get("namespace") or ""
        record = {"uid": uid, "operation": review.get("operation"), "kind": (review.get("kind") or {}).get("kind"),
                  "namespace": namespace, "name": review.get("name") or (obj.get("metadata") or {}).get("name")
                  or (obj.get("metadata") or {}).get("generateName"), "dry_run": bool(review.get("dryRun"))}
        block, decisions, images = None, [], []
        if review.get("operation") in ("DELETE", "CONNECT"):
            allowed, message, warnings = True, "", []
        else:
            try:
                images = images_of(obj, namespace, state.config.admission)
                judge = judges.setdefault(id(state), Judge(state))
                block, decisions = judge.decided(images) or await asyncio.wait_for(run_in_threadpool(judge.decide, images),
                                                                                   deadline_of(timeout))
                denied = [f"{i.where} {i.image}: {d['message']}" for i, d in zip(images, decisions) if not d["allowed"]]
                allowed = not denied
                message = "shipledger denied " + "; ".join(denied) if denied else ""
                warnings = [d["warning"] for d in decisions if d.get("warning")]
            except UsageError as exc:
                allowed, message, warnings = False, f"shipledger denied it: {exc}", []
            except asyncio.TimeoutError:
                allowed, message, warnings = False, (f"shipledger cannot decide: the ledger gave no answer within"
                                                     f" {deadline_of(timeout):g} s (denied, failing closed)"), []
            except ShipledgerError as exc:
                allowed, message, warnings = False, f"shipledger cannot decide (denied, failing closed): {exc}", []
        answer = review_answer(uid, allowed, message, warnings)
        record.update(allowed=allowed, message=message, block=block, elapsed_ms=round((time.monotonic() - started) * 1000, 2),
                      images=[{"where": i.where, "image": i.image, "digest": i.digest, "service": i.service,
                               "environment": i.environment, **({"allowed": d["allowed"], "reason": d["reason"]} if d else {})}
                              for i, d in zip(images, decisions or [None] * len(images))])
        state.admission_answers["allowed" if allowed else "denied"] += 1
        log.info(json.dumps(record))
        return JSONResponse(answer)

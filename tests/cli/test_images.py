"""Container images as artifacts, against a real registry on loopback: Debian's docker-registry, an
OCI image built with umoci and pushed with skopeo (no Docker engine). What shipledger records for
`register --image REPO@sha256:...` is the digest the registry serves the manifest under."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from shipledger.network.devnet import free_port
from support import ENV, fails, ok, one_line, unique

TOOLS = ("docker-registry", "umoci", "skopeo")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """docker-registry on a free loopback port; yields host:port."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages; `make system-deps` installs them as root)")
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=(folder / "registry.log").open("w"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (folder / "registry.log").read_text()
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def build_and_push(workdir: Path, registry: str, repository: str, content: str) -> str:
    """An OCI image with one file, pushed as REPOSITORY:v1; the registry's Docker-Content-Digest."""
    layout = workdir / f"oci-{unique('img')}"

    def sh(*args):
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    sh("umoci", "init", "--layout", str(layout))
    sh("umoci", "new", "--image", f"{layout}:v1")
    bundle = layout.with_name(layout.name + "-bundle")
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle))
    (bundle / "rootfs" / "app.txt").write_text(content)
    sh("umoci", "repack", "--image", f"{layout}:v1", str(bundle))
    sh("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{registry}/{repository}:v1")
    head = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/v1", method="HEAD",
                                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(head, timeout=10) as answer:
        return answer.headers["Docker-Content-Digest"]


def test_register_and_gate_an_image_by_the_digest_the_registry_serves(dn, registry):
    service = unique("img")
    repository = f"team/{service}"
    served = build_and_push(Path(dn.workdir), registry, repository, f"{service} 1.0.0\n")
    assert served.startswith("sha256:") and len(served) == 71
    reference = f"{registry}/{repository}@{served}"
    recorded = ok(dn.as_("registrar", "register", "--image", reference, "--service", service, "--version", "1.0.0", "--json"))
    assert recorded["digest"] == served and recorded["kind"] == "image" and recorded["registered"] is True
    artifact = dn.ledger().artifact(served, service)
    assert artifact.kind == "image" and artifact.digest == served
    # skopeo, a second reader of the registry, names the same digest
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                                f"docker://{registry}/{repository}:v1"], capture_output=True, text=True, check=True, timeout=60)
    assert inspected.stdout.strip() == served
    dn.set_policy(service, threshold=2, min_organisations=2)
    denied = dn.run("gate", "--image", reference, "--service", service, "--env", ENV, "--json")
    assert denied.code == 3 and denied.json()["digest"] == served
    dn.approve(served, service)
    allowed = ok(dn.run("gate", "--image", f"{registry}/{repository}:v1@{served}", "--service", service, "--env", ENV, "--json"))
    assert allowed["allowed"] is True and allowed["digest"] == served


def test_a_tag_is_refused_with_a_clear_message(dn):
    service = unique("img")
    for command in (("register", "--version", "1.0.0"), ("gate", "--env", ENV)):
        result = dn.as_("registrar", command[0], "--image", "registry.example/team/app:1.0.0", "--service", service, *command[1:])
        one_line(fails(result, 2, "names no digest", "a tag can move"))
    result = dn.as_("registrar", "register", "--image", "registry.example/team/app@sha256:" + "a" * 64, "--kind", "build",
                    "--service", service, "--version", "1.0.0")
    fails(result, 2, "--image registers an artifact of kind image")
    result = dn.run("gate", "--image", "registry.example/team/app@sha256:" + "a" * 64, "--digest", "sha256:" + "a" * 64,
                    "--service", service, "--env", ENV)
    fails(result, 2, "not both --digest and --image")

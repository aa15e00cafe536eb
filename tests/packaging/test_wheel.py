"""shipledger installed from its wheel, as a pip user gets it, not run from the clone.

The wheel is built by `pip wheel` from a copy of the package sources (setuptools builds in the source
tree; the copy keeps build/ and *.egg-info out of the working tree), with pip's build isolation: the
dev venv's setuptools (65) cannot build wheels (no `wheel` package), so pip fetches the backend
pyproject.toml names from the package index, as it does for anyone building the project. The wheel
is installed into a fresh venv with `pip install --no-index --no-deps`. Downloading web3, matplotlib
and the rest into that venv on every run would be slow, so its dependencies come from the dev venv's
site-packages through a .pth file, and a test checks that they meet the wheel's Requires-Dist. That directory's own .pth files (the editable install of the
clone among them) are not processed from there, and the venv's site-packages comes first, so
`shipledger` itself is the installed wheel: the tests assert it. No PYTHONPATH reaches the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from shipledger.network.devnet import find_foundry_tool, free_port
from support import ENV, _stop_devnet, assert_no_traceback, one_line, unique

ROOT = Path(__file__).resolve().parents[2]


class Venv:
    def __init__(self, path: Path, wheel: Path):
        self.path, self.wheel = path, wheel
        self.bin = path / "bin"

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_") and k != "PYTHONPATH"}
        env["PATH"] = f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin"  # no node_modules, no dev venv
        env.update(extra)
        return env

    def run(self, *args, cwd: Path, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bin / "shipledger"), *map(str, args)], cwd=cwd, env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout)
        assert_no_traceback(proc.stderr)
        return proc


def _check(cmd: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "shipledger", source / "shipledger", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    _check([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source])
    [wheel] = dist.glob("shipledger-*.whl")
    path = tmp / "venv"
    _check([sys.executable, "-m", "venv", path])
    _check([path / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", wheel])
    # The dependencies from the dev venv, after the venv's own site-packages (see the module docstring).
    [venv_site] = (path / "lib").glob("python3.*/site-packages")
    (venv_site / "zz-dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Venv(path, wheel)


def test_wheel_holds_every_module_and_the_artifacts(venv):
    names = set(zipfile.ZipFile(venv.wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "shipledger").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    for package in ("compliance", "delivery", "network", "cli", "_internal"):
        assert f"shipledger/{package}/__init__.py" in names
    artifacts = {p.relative_to(ROOT).as_posix() for p in (ROOT / "shipledger" / "artifacts").glob("*.json")}
    assert artifacts and artifacts <= names


def test_the_installed_package_is_the_wheel_and_its_dependencies_resolve(venv, tmp_path):
    probe = (
        "import json, shipledger, importlib.metadata as md\n"
        "from packaging.requirements import Requirement\n"
        "reqs = [Requirement(r) for r in md.requires('shipledger') if 'extra ==' not in r]\n"
        "print(json.dumps({'file': shipledger.__file__,\n"
        "  'unmet': [str(r) for r in reqs if md.version(r.name) not in r.specifier]}))\n"
    )
    out = json.loads(_check([venv.bin / "python", "-c", probe], cwd=tmp_path, env=venv.env()).stdout)
    assert Path(out["file"]).is_relative_to(venv.path), out["file"]
    assert out["unmet"] == []


def test_gate_and_history_from_another_directory(dn, venv, tmp_path):
    service = unique()
    allowed = dn.release(service)
    pending = dn.register(service, "2.0.0")
    where = ("--deployment", dn.book, "--rpc", dn.rpc_url, "--json")

    gate = venv.run("gate", "--digest", allowed, "--service", service, "--env", ENV, *where, cwd=tmp_path)
    assert gate.returncode == 0, gate.stderr
    answer = json.loads(gate.stdout)
    assert (answer["allowed"], answer["reason"], answer["digest"]) == (True, "allowed", allowed)
    denied = venv.run("gate", "--digest", pending, "--service", service, "--env", ENV, *where, cwd=tmp_path)
    assert denied.returncode == 3, denied.stderr
    assert json.loads(denied.stdout)["reason"] == "not_enough_approvals"

    history = venv.run("history", "--service", service, *where, cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    kinds = [e["kind"] for e in json.loads(history.stdout)["events"]]
    assert kinds.count("registered") == 2 and kinds.count("approved") == 2
    assert (tmp_path / ".shipledger" / "index.sqlite").is_file()  # its index lives where it was run


def test_devnet_up_without_anvil_says_how_to_get_it(venv, tmp_path):
    if shutil.which("anvil", path=venv.env()["PATH"]):
        pytest.skip("an anvil is on PATH here")
    proc = venv.run("devnet", "up", "--port", free_port(), "--json", cwd=tmp_path)
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"]["exit"] == 1
    one_line(proc.stderr)
    assert "anvil not found" in proc.stderr and "npm install @foundry-rs/anvil" in proc.stderr
    assert "internal error" not in proc.stderr and "make setup" not in proc.stderr


def test_devnet_up_with_anvil_from_a_local_npm_install(venv, tmp_path):
    """`npm install @foundry-rs/anvil` next to a pip install: found in ./node_modules (here the clone's,
    linked, as the machine is offline); the suite is deployed from the wheel's artifacts."""
    anvil = Path(find_foundry_tool("anvil"))
    (tmp_path / "node_modules").symlink_to(anvil.parents[3])  # .../node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil
    try:
        proc = venv.run("devnet", "up", "--port", free_port(), "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        assert info["deployment"] == str(tmp_path.resolve() / "deployments" / "devnet.json")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        history = venv.run("history", "--deployment", info["deployment"], "--json", cwd=elsewhere)  # rpc from the book
        assert history.returncode == 0, history.stderr
        assert "organisation-added" in {e["kind"] for e in json.loads(history.stdout)["events"]}
    finally:
        _stop_devnet(tmp_path)

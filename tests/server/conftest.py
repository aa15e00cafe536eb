"""A real `shipledger serve` process on a free loopback port, against the module's devnet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipledger.network.devnet import free_port
from support import clean_env

CHROMIUM = "/usr/bin/chromium"  # Debian's package: playwright never downloads a browser here


@dataclass
class Http:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(url: str, data: bytes | None = None, method: str | None = None, timeout: float = 30) -> Http:
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Http(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Http(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


class Server:
    """`shipledger serve` in dn's working directory, stopped by stop()."""

    def __init__(self, dn, *options: str, env: dict | None = None, ready: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(dn.workdir) / f"serve-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shipledger.cli", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--db", str(Path(dn.workdir) / f"serve-{self.port}.sqlite"), *options],
            cwd=dn.workdir, env=clean_env(**(env or {})), stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        self.wait("/readyz" if ready else "/healthz")

    def wait(self, path: str, timeout: float = 60) -> Http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"shipledger serve exited: {self.log.read_text()}"
            try:
                answer = request(self.url + path, timeout=5)
                if answer.status == 200:
                    return answer
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{path} never answered 200: {self.log.read_text()[-2000:]}")

    def get(self, path: str) -> Http:
        return request(self.url + path)

    def post(self, path: str, body) -> Http:
        return request(self.url + path, json.dumps(body).encode(), "POST")

    def until(self, path: str, check, timeout: float = 20) -> Http:
        """GET path until check(answer) holds (the server catches up with a block in about 0.25 s)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.get(path)
            if check(answer):
                return answer
            assert time.monotonic() < deadline, f"{path} never satisfied the check; last: {answer.status} {answer.body[:300]!r}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def error_of(answer: Http, status: int) -> dict:
    """The error document of an answer with `status`: exactly {"error": {"code", "message"}}."""
    assert answer.status == status, f"expected {status}, got {answer.status}: {answer.body[:500]!r}"
    assert answer.headers["content-type"].startswith("application/json")
    document = answer.json()
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}, document
    assert document["error"]["code"] and document["error"]["message"]
    return document["error"]


@pytest.fixture(scope="module")
def server(dn):
    """A server with the relay on (the outsider, who holds no role, is the relayer)."""
    srv = Server(dn, "--relayer-key-env", "RELAYER_KEY", env={"RELAYER_KEY": dn.key("outsider")})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.lock")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=["--no-sandbox"])
        yield browser
        browser.close()

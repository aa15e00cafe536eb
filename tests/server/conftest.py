"""A real `shipledger serve` process on a free loopback port, against the module's devnet; the browser
(Debian's chromium) and the browser tests' wallet and page helpers; Safes (tests/server/safes.py)."""

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
from urllib.parse import urlencode

import pytest

from shipledger.network.devnet import free_port
from support import clean_env, unique

CHROMIUM = "/usr/bin/chromium"  # Debian's package: playwright never downloads a browser here
WALLET_JS = Path(__file__).with_name("test-wallet.js")


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


# ---------------------------------------------------------------------- browser tests: the wallet and the pages

class Wallet:
    """A browser context whose pages carry the test wallet for `key` (none when key is None: a user with
    no browser wallet); problems: console errors, page errors, failed requests; relayed: every POST
    /v1/relay the page made. close() fails the test on any problem."""

    def __init__(self, browser, dn, key: str | None, tmp_path: Path, mode: str = "normal", chain_id: int | None = None,
                 known_chains: tuple[int, ...] | None = None):
        self.dn, self.tmp_path, self.shots, self.has_wallet = dn, tmp_path, 0, key is not None
        devnet_chain = int(dn.info["chain_id"])
        self.context = browser.new_context(accept_downloads=True)
        if key is not None:
            config = {"key": "0x" + key.removeprefix("0x"), "mode": mode, "nodeChainId": devnet_chain,
                      "chainId": chain_id or devnet_chain, "knownChains": list(known_chains or (devnet_chain,))}
            self.context.expose_function("__walletRpc", self._rpc)
            self.context.add_init_script(script=f"window.__shipledgerTestWallet = {json.dumps(config)};")
            self.context.add_init_script(path=str(WALLET_JS))
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.relayed: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on("request", lambda r: self.relayed.append(r.post_data or "") if r.url.endswith("/v1/relay") else None)

    def _rpc(self, payload: str) -> str:
        call = json.loads(payload)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": call["method"], "params": call["params"]}).encode()
        request = urllib.request.Request(self.dn.rpc_url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read().decode()

    def calls(self) -> list[str]:
        return self.page.evaluate("window.__walletCalls")

    def shot(self, name: str) -> None:
        self.shots += 1
        self.page.screenshot(path=str(self.tmp_path / f"{self.shots:02d}-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


@pytest.fixture
def wallet(browser, dn, tmp_path):
    opened = []

    def open_wallet(part: str | None, index: int = 0, **kw) -> Wallet:
        """The wallet of devnet account (part, index); part None: a browser with no wallet."""
        w = Wallet(browser, dn, dn.key(part, index) if part else None, tmp_path, **kw)
        opened.append(w)
        return w

    yield open_wallet
    for w in opened:
        w.close()


def waiting_release(dn, server, who: str, threshold: int = 1) -> tuple[str, str]:
    """A registered release under a fresh policy, once the server's Inbox lists it for approver `who`."""
    service = unique()
    digest = dn.register(service)
    dn.set_policy(service, threshold=threshold, min_organisations=1)
    server.until("/v1/pending?" + urlencode({"approver": who}),
                 lambda a: a.status == 200 and any(r["digest"] == digest and r["service"] == service for r in a.json()["releases"]))
    return service, digest


def open_inbox(w: Wallet, server, approver_address: str, digest: str):
    w.page.goto(server.url + "/inbox?" + urlencode({"approver": approver_address}), wait_until="networkidle")
    row = w.page.locator(f'tr.release[data-digest="{digest}"]')
    assert row.count() == 1
    # the wallet line settles: the test wallet announced through EIP-6963, or none found
    w.page.locator(".wallet-which").filter(has_text="Test Wallet" if w.has_wallet else "No browser wallet found.").wait_for()
    w.shot("inbox")
    return row


def confirm_shown(w: Wallet) -> str:
    box = w.page.locator(".wallet-confirm")
    box.wait_for(state="visible")
    w.shot("confirm")
    return box.inner_text()


def message(w: Wallet, kind: str) -> str:
    """The outcome the page shows (done or error), which must be of `kind`."""
    line = w.page.locator(".wallet-message.done, .wallet-message.error")
    line.wait_for(timeout=30_000)
    w.shot(f"message-{kind}")
    text = line.inner_text()
    assert kind in line.get_attribute("class").split(), text
    return text


# ---------------------------------------------------------------------- Safes


@pytest.fixture(scope="module")
def safe_of(dn):
    """safe_of(owner_keys, threshold) -> (safe, as_handler): a new Safe 1.4.1 (safes.safe_factory)."""
    from safes import safe_factory

    return safe_factory(dn.ledger().w3, dn.key("steward", 2))

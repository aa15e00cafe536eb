"""DORA metrics and the HTML report, on a devnet history built by hand with known timestamps.

The story (one service, its own name; every timestamp pinned with anvil's evm_setNextBlockTimestamp,
a test-only call) has four production deployments: v1 fine, v2 rolled back, v3 named as a suspect by
an incident resolved 90 minutes later, v4 fine. So the change failure rate is 2/4, the rollback rate
1/4, the time to restore 5400 s. Lead times: v1 and v4 from committedAt on the ledger, v2 from the
commit time in a local git repository, v3 left out (its commit is nowhere). A staging deployment,
staging approval and staging incident must not count.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shipledger import ArtifactSpec
from shipledger.compliance import dora, report
from shipledger.network.devnet import rpc_call
from shipledger.models import HistoryEvent
from support import digest_for, ok, unique

DAY = 86400
CHROMIUM = "/usr/bin/chromium"


def _at(dn, timestamp: int) -> None:
    rpc_call(dn.rpc_url, "evm_setNextBlockTimestamp", [timestamp])


def _git_repo(path: Path, committed_at: int) -> str:
    """A git repository with one commit made at committed_at; its SHA."""
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_DATE": f"@{committed_at} +0000", "GIT_COMMITTER_DATE": f"@{committed_at} +0000"}
    git = ["git", "-C", str(path), "-c", "user.name=ci", "-c", "user.email=ci@example.com"]
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    (path / "main.c").write_text("int main(void) { return 0; }\n")
    subprocess.run([*git, "add", "main.c"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "v2"], check=True, env=env)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def story(dn, tmp_path_factory):
    """Build the history; return what the test needs to know about it."""
    service = unique("dora")
    latest = int(rpc_call(dn.rpc_url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    t0 = (latest // DAY + 2) * DAY  # a UTC midnight at least a day ahead of the chain
    repo = tmp_path_factory.mktemp("gitrepo") / "repo"
    git_sha = _git_repo(repo, t0 + DAY - 3600)
    registrar, deployer, responder = (dn.ledger(p) for p in ("registrar", "deployer", "responder"))
    approvers = [dn.ledger("approver", i) for i in range(3)]
    dn.set_policy(service, "prod", threshold=2, min_organisations=2)  # through governance
    dn.set_policy(service, "staging", threshold=1)

    def release(day: int, version: str, commit: str = "", committed_at: int = 0) -> tuple[str, int]:
        """Register at day start, approvals after 1 and 2 min (v1: 10 and 20 min), deploy after 10 min,
        complete after 15 min. Returns (digest, deployment id)."""
        base = t0 + day * DAY
        first, second = (600, 1200) if day == 0 else (60, 120)
        digest = digest_for(f"{service}@{version}")
        _at(dn, base)
        registrar.register(ArtifactSpec(digest=digest, service=service, version=version, commit=commit, committed_at=committed_at))
        _at(dn, base + first)
        approvers[0].approve(digest, service, "prod")
        _at(dn, base + second)
        approvers[1].approve(digest, service, "prod")
        _at(dn, base + max(600, second + 60))
        deployment = deployer.start_deployment(digest, service, "prod", 100)
        _at(dn, base + max(900, second + 120))
        deployer.complete(deployment)
        return digest, deployment

    _, d1 = release(0, "1.0.0", commit="ab" * 20, committed_at=t0 - 7200)
    _, d2 = release(1, "2.0.0", commit=git_sha)
    _at(dn, t0 + DAY + 1800)
    deployer.rollback(d2, "error rate up")
    _, d3 = release(2, "3.0.0", commit="cd" * 20)
    _at(dn, t0 + 2 * DAY + 1200)
    incident = responder.open_incident(service, "prod", 2, "latency after 3.0.0", suspects=[d3])
    responder.acknowledge(incident)
    responder.mitigate(incident)
    _at(dn, t0 + 2 * DAY + 1200 + 5400)
    responder.resolve(incident)
    digest4, d4 = release(3, "4.0.0", commit="ef" * 20, committed_at=t0 + 3 * DAY - 600)
    # staging: none of this may count in the production figures
    _at(dn, t0 + 3 * DAY + 2000)
    approvers[0].approve(digest4, service, "staging")
    staged = deployer.start_deployment(digest4, service, "staging", 100)
    deployer.complete(staged)
    staging_incident = responder.open_incident(service, "staging", 3, "staging flake", suspects=[staged])
    for step in (responder.acknowledge, responder.mitigate, responder.resolve):
        step(staging_incident)
    return {"service": service, "t0": t0, "repo": repo, "ids": (d1, d2, d3, d4), "incident": incident}


def _day(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).date().isoformat()


def _report_json(dn, story, tmp_path, *extra) -> dict:
    return ok(dn.run("report", "--service", story["service"], "--since", _day(story["t0"]),
                     "--until", _day(story["t0"] + 3 * DAY), "--repo", story["repo"], "--db", tmp_path / "index.sqlite",
                     "--json", *extra))


def test_report_json_dora_numbers_of_a_known_history(dn, story, tmp_path):
    data = _report_json(dn, story, tmp_path)
    assert data["environments"] == ["prod", "production"]
    assert data["deployments"] == 4 and data["completed"] == 4
    assert data["rolled_back"] == 1 and data["linked_to_incidents"] == 1 and data["change_failures"] == 2
    assert data["change_failure_rate"] == 0.5
    assert data["rollback_rate"] == 0.25
    assert data["period_days"] == 4.0 and data["deployments_per_day"] == 1.0 and data["deployments_per_week"] == 7.0
    # lead times: v1 completed 1320 s after t0, committed 7200 s before; v2 completed 900 s into day 1, its git
    # commit 3600 s before that day; v4 completed 900 s into day 3, committed 600 s before that day
    lead = data["lead_time"]
    assert sorted(lt["seconds"] for lt in data["lead_times"]) == [1500, 4500, 8520]
    assert {lt["version"]: lt["source"] for lt in data["lead_times"]} == {"1.0.0": "ledger", "2.0.0": "git", "4.0.0": "ledger"}
    assert lead["median"] == 4500 and lead["count"] == 3
    assert data["lead_time_from_git"] == 1 and data["lead_time_left_out"] == 1
    assert data["time_to_restore"]["median"] == 5400 and data["time_to_restore"]["count"] == 1
    assert data["unresolved_incidents"] == 0
    orgs = {o["name"]: (o["approvals"], o["rejections"]) for o in data["approvals_per_org"]}
    assert orgs == {"acme": (4, 0), "globex": (4, 0)}
    assert data["registration_to_first_approval"]["median"] == 60
    assert data["registration_to_approved"]["median"] == 120
    assert [b["start"] for b in data["buckets"]] == [_day(story["t0"] + n * DAY) for n in range(4)]
    assert [b["completed"] for b in data["buckets"]] == [1, 1, 1, 1]
    assert [b["change_failures"] for b in data["buckets"]] == [0, 1, 1, 0]


def test_report_without_git_leaves_out_the_git_commit_too(dn, story, tmp_path):
    empty = tmp_path / "not-a-repo"
    empty.mkdir()
    data = ok(dn.run("report", "--service", story["service"], "--since", _day(story["t0"]), "--repo", empty,
                     "--db", tmp_path / "index.sqlite", "--json"))
    assert data["lead_time_left_out"] == 2 and data["lead_time_from_git"] == 0
    assert sorted(lt["seconds"] for lt in data["lead_times"]) == [1500, 8520]


def test_report_env_staging_reports_staging_alone(dn, story, tmp_path):
    data = _report_json(dn, story, tmp_path, "--env", "staging")
    assert data["environments"] == ["staging"]
    assert data["deployments"] == 1 and data["change_failures"] == 1
    assert data["time_to_restore"]["count"] == 1 and data["time_to_restore"]["median"] < 60


def _event(kind: str, t: int, **fields) -> HistoryEvent:
    return HistoryEvent(kind=kind, block_number=t, tx_hash="0x" + "00" * 32, log_index=0, timestamp=t,
                        service=fields.get("service", ""), environment=fields.get("environment", ""), fields=fields)


def test_compute_counts_a_deployment_rolled_back_and_named_once():
    digest = "0x" + "11" * 32
    events = [
        _event("registered", 0, service="a", digest=digest, version="1", commit="0x" + "00" * 32, committedAt=0),
        _event("deployed", 10, id=1, service="a", environment="production", digest=digest),
        _event("deployed", 20, id=2, service="a", environment="qa", digest=digest),
        _event("incident-opened", 30, id=1, service="a", environment="production", severity=1, title="x", suspects=[1]),
        _event("rolled-back", 40, id=1, target="0x"),
    ]
    report = dora.compute(events, commit_time=lambda sha: pytest.fail("no commit to look up"))
    assert (report.deployments, report.change_failures, report.change_failure_rate) == (1, 1, 1.0)
    assert report.unresolved_incidents == 1 and report.time_to_restore.median is None
    assert report.lead_time.count == 0 and report.lead_time_left_out == 0  # never completed
    assert dora.compute(events, prod_envs=["qa"]).change_failure_rate == 0.0


def test_empty_history_renders_a_report_without_charts():
    empty = dora.compute([])
    assert empty.deployments == 0 and empty.change_failure_rate is None and empty.deployments_per_day is None
    page = report.render(empty, {"chain": 31337})
    assert "<svg" not in page and "No production deployment completed in this period." in page
    assert "chain 31337" in page


def test_report_rejects_a_bad_date(dn, tmp_path):
    result = dn.run("report", "--out", tmp_path / "r.html", "--since", "last tuesday", "--db", tmp_path / "i.sqlite")
    assert result.code == 2 and "last tuesday" in result.err
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------- the HTML in a real browser

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevTools:
    """A minimal Chrome DevTools Protocol client over the page's websocket."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=64 * 2**20)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=timeout))
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(method)

    def close(self):
        self.ws.close()


def _page_websocket(port: int, process: subprocess.Popen) -> str:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "chromium exited at start-up"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("chromium's DevTools endpoint did not come up")


CHECK_CHARTS = """(() => [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height,
          paths: svg.querySelectorAll('path').length, texts: svg.querySelectorAll('text').length};
}))()"""


def test_report_html_renders_in_headless_chromium(dn, story, tmp_path):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test installs it): cannot render the report")
    out = tmp_path / "report.html"
    result = dn.run("report", "--out", out, "--service", story["service"], "--since", _day(story["t0"]),
                    "--repo", story["repo"], "--db", tmp_path / "index.sqlite")
    assert result.code == 0, result.err
    page = out.read_text()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert page.count('<svg ') == 4
    port = _free_port()
    profile = tmp_path / "chromium-profile"
    chromium = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--window-size=1280,2000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        tools = DevTools(_page_websocket(port, chromium))
        for domain in ("Runtime", "Log", "Page"):
            tools.send(f"{domain}.enable")
        tools.send("Page.navigate", url=out.as_uri())
        tools.wait_for("Page.loadEventFired")
        charts = tools.send("Runtime.evaluate", expression=CHECK_CHARTS, returnByValue=True)["result"]["value"]
        title = tools.send("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
        shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot = tmp_path / "report.png"
        screenshot.write_bytes(__import__("base64").b64decode(shot["data"]))
        print(f"report screenshot: {screenshot}")
        errors = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))]
        tools.close()
    finally:
        chromium.terminate()
        chromium.wait(timeout=20)
    assert errors == [], f"console errors: {errors}"
    assert title.startswith("DORA report: service dora-")
    assert [c["label"] for c in charts] == [
        "Completed production deployments per day", "Distribution of lead times from commit to production",
        "Time to restore per incident", "Approvals and rejections per organisation",
    ]
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 100, chart
        assert chart["paths"] >= 5 and chart["texts"] >= 3, chart
    assert screenshot.stat().st_size > 20_000

"""The rollout controller end to end: `shipledger rollout run|status|resume|abort`, the metric sources,
`canary record` and `canary verify`, as real subprocesses against a real devnet.

The Prometheus tests start Debian's /usr/bin/prometheus on loopback (1/4 s scrapes, its TSDB in a
temp directory) scraping three small HTTP services run by the test in threads: a baseline, a healthy
canary and a sick one, whose latency and error counters the test controls. The other tests feed the
judge through the command source (a small script printing samples from JSON files the test writes),
which needs no Prometheus and lets a test pick the verdict: identical samples pass, a canary three
times slower fails, one bad metric of five is marginal.

Each test uses its own service name and its own state directory, so tests are independent on the
module's one devnet.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from shipledger.network.devnet import free_port, rpc_call
from support import CLI, ENV, clean_env, digest_for, fails, ok, run, unique

INTERVAL = "2s"

# ============================================================================ helpers


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def traffic_cmd(log: Path) -> str:
    """A traffic command that appends the percentage it is given to `log`, one per line."""
    script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    return shlex.join([sys.executable, "-c", script, str(log), "{percent}"])


def traffic_seen(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def write_config(path: Path, source: dict, metrics: list[dict], **extra) -> Path:
    path.write_text(json.dumps({"source": source, "metrics": metrics, **extra}, indent=2))
    return path


def noisy(mean: float, n: int = 24, spread: float = 0.04, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [round(mean * (1 + rng.uniform(-spread, spread)), 6) for _ in range(n)]


class SampleFiles:
    """The command source's data: fetch.py {scope} prints samples-{scope}.json (exit 1 if missing)."""

    SCRIPT = (
        "import pathlib, sys\n"
        "path = pathlib.Path(__file__).with_name(f'samples-{sys.argv[1]}.json')\n"
        "if not path.exists():\n"
        "    sys.exit(f'no samples for {sys.argv[1]}')\n"
        "print(path.read_text())\n"
    )

    def __init__(self, directory: Path):
        self.dir = directory
        self.script = directory / "fetch.py"
        self.script.write_text(self.SCRIPT)

    @property
    def command(self) -> str:
        return shlex.join([sys.executable, str(self.script), "{scope}"])

    def set(self, baseline: dict | None, canary: dict | None) -> None:
        for scope, samples in (("baseline", baseline), ("canary", canary)):
            path = self.dir / f"samples-{scope}.json"
            if samples is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(json.dumps(samples))


FIVE = ("latency", "errors", "cpu", "memory", "saturation")


def five_metrics() -> list[dict]:
    return [{"name": name, "direction": "increase", "group": name} for name in FIVE]


def healthy() -> dict:
    return {name: noisy(10.0, seed=i) for i, name in enumerate(FIVE)}


class Rollouts:
    """`shipledger rollout ...` for one test: its own state dir, service, traffic log and samples."""

    def __init__(self, dn, tmp_path: Path, service: str | None = None):
        self.dn = dn
        self.tmp = tmp_path
        self.state_dir = tmp_path / "rollouts"
        self.service = service or unique("roll")
        self.traffic_log = tmp_path / "traffic.log"
        self.samples = SampleFiles(tmp_path)
        self._history = None

    def cli(self, *args, key: str = "deployer"):
        return self.dn.as_(key, *args, "--state-dir", self.state_dir)

    def run_args(self, config: Path, steps: str = "50,100", interval: str = INTERVAL, version: str = "1.0.0") -> list:
        digest = self.dn.release(self.service, version)
        return ["rollout", "run", "--digest", digest, "--service", self.service, "--env", ENV, "--steps", steps,
                "--interval", interval, "--analysis", config, "--traffic-cmd", traffic_cmd(self.traffic_log), "--json"]

    def run(self, config: Path, **kw):
        return self.cli(*self.run_args(config, **kw))

    def command_config(self, metrics: list[dict] | None = None, **source) -> Path:
        return write_config(self.tmp / "analysis.json", {"command": self.samples.command, **source},
                            metrics or five_metrics())

    def state(self, deployment_id: int) -> dict:
        return json.loads((self.state_dir / f"{deployment_id}.json").read_text())

    def history(self, kind: str) -> list:
        """The service's events of one kind, from the chain (read again only when a block was added)."""
        block = rpc_call(self.dn.rpc_url, "eth_blockNumber")
        if self._history is None or self._history[0] != block:
            self._history = (block, self.dn.ledger().history(self.service))
        return [e for e in self._history[1] if e.kind == kind]

    def events(self, deployment_id: int, kind: str) -> list:
        return [e for e in self.history(kind) if e.fields["id"] == deployment_id]


@pytest.fixture
def ro(dn, tmp_path) -> Rollouts:
    return Rollouts(dn, tmp_path)


# ============================================================================ Prometheus and the services it scrapes


class Service:
    """A small HTTP service exposing /metrics in Prometheus text format. Each scrape serves 200
    requests: latency is a gauge around `latency` (+-4%), errors a counter advancing by
    error_rate * 200, so rate(errors) / rate(requests) is the error rate."""

    def __init__(self, latency: float, error_rate: float, seed: int):
        self.latency, self.error_rate = latency, error_rate
        self.rng = random.Random(seed)
        self.requests = self.errors = 0
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = service.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def exposition(self) -> str:
        self.requests += 200
        self.errors += round(200 * self.error_rate)
        latency = self.latency * (1 + self.rng.uniform(-0.04, 0.04))
        return (
            "# TYPE demo_latency_seconds gauge\n"
            f"demo_latency_seconds {latency:.6f}\n"
            "# TYPE demo_requests_total counter\n"
            f"demo_requests_total {self.requests}\n"
            "# TYPE demo_errors_total counter\n"
            f"demo_errors_total {self.errors}\n"
        )


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen):
        self.url, self.process = url, process

    def query(self, promql: str) -> list:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5) as r:
            return json.load(r)["data"]["result"]


def wait_until(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """Prometheus on loopback scraping the baseline, a healthy canary and a sick canary (jobs
    `baseline`, `good`, `sick`) every 250 ms; yields (Prometheus, services by job)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Prometheus is not installed (Debian: apt-get install prometheus); "
                    "the end-to-end rollout tests need a real Prometheus server")
    services = {
        "baseline": Service(latency=0.100, error_rate=0.01, seed=1),
        "good": Service(latency=0.100, error_rate=0.01, seed=2),
        "sick": Service(latency=0.300, error_rate=0.20, seed=3),
    }
    home = tmp_path_factory.mktemp("prometheus")
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{s.port}']\n" for job, s in services.items()
    )
    (home / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\nscrape_configs:\n" + jobs
    )
    port = free_port()
    log = open(home / "prometheus.log", "w")  # noqa: SIM115 - Prometheus writes to it until the end
    process = subprocess.Popen(
        [binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=home,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        wait_until(lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1).status == 200, 30, "Prometheus to be ready")
        # Enough history for the first window: every job scraped for a few seconds.
        wait_until(lambda: len(prom.query("count_over_time(up[3s]) >= 8")) == 3, 30, "three targets scraped")
        yield prom, services
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        for service in services.values():
            service.server.shutdown()
        log.close()


def prometheus_config(path: Path, url: str, canary_job: str) -> Path:
    def both(template: str) -> dict:
        return {"baseline": template.format(job="baseline"), "canary": template.format(job=canary_job)}

    metrics = [
        # As a real config would: a healthy canary's +-4% noise must never fail it (Kayenta's defaults make
        # any shift its interval excludes High, one step in a hundred), a 3x slower one must.
        {"name": "latency", "direction": "increase", "group": "latency",
         "effect_size": {"allowed_increase": 1.2}, "spread": {"max_ratio": 3},
         "query": both('demo_latency_seconds{{job="{job}"}}')},
        # rounded: rate / rate leaves float dust (0.009999999999999998 for 0.01) that differs by job
        {"name": "error_rate", "direction": "increase", "group": "errors",
         "query": both('round(sum(rate(demo_errors_total{{job="{job}"}}[1s])) / sum(rate(demo_requests_total{{job="{job}"}}[1s])), 0.0001)')},
    ]
    # 4 s at 250 ms: 17 points per series, above the judge's min_samples (10)
    return write_config(path, {"prometheus": url, "step": "250ms", "lookback": "4s"}, metrics)


# ============================================================================ end to end against Prometheus


def test_rollout_run_healthy_canary_reaches_100_and_completes(dn, tmp_path, prometheus):
    prom, _ = prometheus
    ro = Rollouts(dn, tmp_path)
    config = prometheus_config(tmp_path / "analysis.json", prom.url, "good")

    result = ro.run(config)

    state = ok(result)
    deployment_id = state["deployment_id"]
    assert state["phase"] == "completed" and state["percent"] == 100 and state["error"] is None
    assert traffic_seen(ro.traffic_log) == [50, 100]
    deployment = dn.ledger().deployment(deployment_id)
    assert (deployment.status, deployment.percent) == ("completed", 100)
    assert dn.ledger().target_state(ro.service, ENV).live == deployment_id
    # one verdict per step, on chain with the report's digest and the judge version
    recorded = ro.events(deployment_id, "canary-verdict")
    assert [(e.fields["percent"], e.fields["verdict"]) for e in recorded] == [(50, 1), (100, 1)]
    for event, saved in zip(recorded, state["reports"]):
        report_path = Path(saved["path"])
        assert event.fields["reportDigest"] == "0x" + sha256_of(report_path).removeprefix("sha256:")
        assert event.fields["reportUri"] == report_path.resolve().as_uri()
        report = json.loads(report_path.read_text())
        assert event.fields["judge"] == report["judge_version"] == saved["judge"]
        assert event.fields["scoreBasisPoints"] == round(report["result"]["score"] * 100)
        # the exact samples Prometheus returned: ~4 s at 250 ms steps, per metric and scope
        for scope in ("baseline", "canary"):
            assert set(report[scope]) == {"latency", "error_rate"}
            assert all(len(values) >= 5 for values in report[scope].values()), report[scope]
        assert 0.09 < min(report["canary"]["latency"]) and max(report["canary"]["latency"]) < 0.11
    assert [e.fields["toPercent"] for e in ro.events(deployment_id, "promoted")] == [100]
    assert len(ro.events(deployment_id, "completed")) == 1
    assert dn.ledger().open_incident_counts(ro.service, ENV) == {1: 0, 2: 0, 3: 0, 4: 0}


def test_rollout_run_sick_canary_rolls_back_opens_incident_and_verifies(dn, tmp_path, prometheus):
    prom, _ = prometheus
    ro = Rollouts(dn, tmp_path)
    live = dn.deployed(ro.service, "1.0.0")
    config = prometheus_config(tmp_path / "analysis.json", prom.url, "sick")
    deployer = dn.address("deployer")
    steward = dn.ledger("steward", 0)
    dn.govern(steward.change_role(True, "RESPONDER", deployer))  # to open the incident; revoked for the other tests
    try:
        result = ro.run(config, version="2.0.0")
    finally:
        dn.govern(steward.change_role(False, "RESPONDER", deployer))

    assert result.code == 3, result.err
    state = result.json()
    deployment_id = state["deployment_id"]
    assert state["phase"] == "rolled-back" and state["restored"] == live
    assert "canary verdict fail" in state["reason"]
    assert traffic_seen(ro.traffic_log) == [50, 0]  # never promoted; traffic taken off the canary
    assert dn.ledger().deployment(deployment_id).status == "rolled_back"
    assert dn.ledger().target_state(ro.service, ENV).live == live
    assert not ro.events(deployment_id, "promoted")
    (verdict,) = ro.events(deployment_id, "canary-verdict")
    assert verdict.fields["verdict"] == 3 and verdict.fields["percent"] == 50
    # the incident names the deployment, and its details are the failing report
    (opened,) = ro.history("incident-opened")
    report_path = Path(state["reports"][-1]["path"])
    assert opened.fields["id"] == state["incident_id"]
    assert opened.fields["suspects"] == [deployment_id]
    assert opened.fields["detailsDigest"] == "0x" + sha256_of(report_path).removeprefix("sha256:")
    assert dn.ledger().open_incident_counts(ro.service, ENV) == {1: 0, 2: 1, 3: 0, 4: 0}  # --incident-severity 2
    assert dn.ledger().incident(state["incident_id"]).status == "open"
    report = json.loads(report_path.read_text())
    assert min(report["canary"]["latency"]) > 0.25 and max(report["baseline"]["latency"]) < 0.11

    # canary verify recomputes the verdict from the saved report and finds it on chain
    checked = ok(dn.run("canary", "verify", report_path, "--json"))
    assert checked["match"] is True and checked["problems"] == []
    assert checked["recomputed"]["verdict"] == "fail" == checked["chain"]["verdict"]
    assert checked["chain"]["deployment_id"] == deployment_id
    assert checked["digest"] == sha256_of(report_path)

    # a report changed after the fact no longer verifies: different samples recompute differently...
    tampered = json.loads(report_path.read_text())
    tampered["canary"] = tampered["baseline"]
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(tampered))
    mismatch = dn.run("canary", "verify", forged, "--json")
    assert mismatch.code == 3 and mismatch.json()["match"] is False
    assert mismatch.json()["recomputed"]["verdict"] == "pass"
    # ...and a consistent forgery (samples and result both changed) is not the digest on chain
    tampered["result"] = mismatch.json()["recomputed"] | {k: v for k, v in tampered["result"].items() if k not in ("score", "verdict")}
    forged.write_text(json.dumps(tampered))
    mismatch = dn.run("canary", "verify", forged, "--json")
    assert mismatch.code == 3
    assert mismatch.json()["chain"] == {"recorded": False}
    assert any("digest" in p for p in mismatch.json()["problems"])


def test_prometheus_source_fetches_query_range_and_reports_promql_errors(prometheus):
    from shipledger.delivery.metrics import MetricsError, Source

    prom, _ = prometheus
    config = {"source": {"prometheus": prom.url, "step": "250ms"},
              "metrics": [{"name": "latency", "query": {"baseline": 'demo_latency_seconds{job="baseline"}',
                                                        "canary": 'demo_latency_seconds{job="sick"}'}}]}
    source = Source.from_config(config)
    window = source.window(end=time.time(), interval=3)
    assert (window.end - window.start, window.step) == (3, 0.25)
    baseline, canary = source.fetch(window)
    assert 11 <= len(baseline["latency"]) <= 13 and len(canary["latency"]) == len(baseline["latency"])
    assert all(0.09 < v < 0.11 for v in baseline["latency"]) and all(0.28 < v < 0.32 for v in canary["latency"])

    config["metrics"][0]["query"]["canary"] = "sum(rate(demo_errors_total[1s]"
    with pytest.raises(MetricsError, match=r"Prometheus refused the query for latency \(canary\): HTTP 400: .*parse error"):
        Source.from_config(config).fetch(window)


# ============================================================================ the command source: verdicts chosen by the test


def test_rollout_marginal_pauses_then_resume_judges_again_and_completes(ro):
    """The ledger refuses to promote after a marginal verdict until a later pass, so `rollout resume`
    judges the step again (a fresh window) rather than going on."""
    config = ro.command_config()
    slow = {**healthy(), "latency": noisy(30.0, seed=9)}
    ro.samples.set(healthy(), slow)  # one metric of five is High: 80 points, marginal

    paused = ro.run(config, interval="1s")

    assert paused.code == 3, paused.err
    state = paused.json()
    deployment_id = state["deployment_id"]
    assert (state["phase"], state["pause_reason"], state["percent"]) == ("paused", "marginal", 50)
    assert state["reports"][0]["score"] == 80.0 and state["reports"][0]["verdict"] == "marginal"
    assert "rollout resume" in paused.err
    deployment = ro.dn.ledger().deployment(deployment_id)
    assert (deployment.status, deployment.percent) == ("in_progress", 50)
    assert [e.fields["verdict"] for e in ro.events(deployment_id, "canary-verdict")] == [2]
    assert traffic_seen(ro.traffic_log) == [50]
    status = ok(ro.cli("rollout", "status", deployment_id, "--json"))
    assert status["phase"] == "paused" and status["deployment_id"] == deployment_id
    listing = ro.cli("rollout", "status")
    assert listing.code == 0 and f"deployment {deployment_id}" in listing.out and "paused at 50%" in listing.out

    ro.samples.set(healthy(), healthy())
    resumed = ok(ro.cli("rollout", "resume", deployment_id, "--json"))

    assert resumed["phase"] == "completed"
    assert traffic_seen(ro.traffic_log) == [50, 100]
    assert [e.fields["toPercent"] for e in ro.events(deployment_id, "promoted")] == [100]
    assert [(e.fields["percent"], e.fields["verdict"]) for e in ro.events(deployment_id, "canary-verdict")] == [
        (50, 2), (50, 1), (100, 1)]
    assert [(r["percent"], r["verdict"]) for r in resumed["reports"]] == [(50, "marginal"), (50, "pass"), (100, "pass")]
    assert ro.dn.ledger().deployment(deployment_id).status == "completed"
    # every report recomputes to what was recorded; --offline checks the report alone
    checked = ok(ro.dn.run("canary", "verify", resumed["reports"][0]["path"], "--json"))
    assert checked["chain"]["verdict"] == checked["recomputed"]["verdict"] == "marginal"
    offline = ok(ro.dn.run("canary", "verify", resumed["reports"][0]["path"], "--offline", "--json"))
    assert offline["match"] is True and offline["chain"] == {"checked": False, "why": "--offline"}


def test_rollout_resume_rejudge_judges_the_step_again(ro):
    config = ro.command_config()
    ro.samples.set(healthy(), {**healthy(), "cpu": noisy(30.0, seed=9)})
    state = ro.run(config, steps="100", interval="1s").json()
    assert (state["phase"], state["pause_reason"]) == ("paused", "marginal")

    ro.samples.set(healthy(), healthy())
    done = ok(ro.cli("rollout", "resume", state["deployment_id"], "--rejudge", "--json"))

    assert done["phase"] == "completed"
    assert [(r["percent"], r["verdict"]) for r in done["reports"]] == [(100, "marginal"), (100, "pass")]
    first, second = (Path(r["path"]).name for r in done["reports"])
    assert (first, second) == ("step-1-100pct.json", "step-1-100pct-2.json")  # the earlier report is kept
    assert [e.fields["verdict"] for e in ro.events(state["deployment_id"], "canary-verdict")] == [2, 1]


def test_rollout_abort_of_a_paused_rollout_rolls_back_without_incident(ro):
    config = ro.command_config()
    ro.samples.set(healthy(), {**healthy(), "memory": noisy(30.0, seed=9)})
    deployment_id = ro.run(config, interval="1s").json()["deployment_id"]

    aborted = ro.cli("rollout", "abort", deployment_id, "--reason", "too slow for us", "--json")

    assert aborted.code == 3, aborted.err
    state = aborted.json()
    assert state["phase"] == "aborted" and state["reason"] == "aborted: too slow for us" and state["error"] is None
    assert traffic_seen(ro.traffic_log) == [50, 0]
    assert ro.dn.ledger().deployment(deployment_id).status == "rolled_back"
    (rolled,) = ro.events(deployment_id, "rolled-back")
    assert rolled.fields["reason"] == "aborted: too slow for us"
    assert not ro.history("incident-opened")  # a person decided: no incident
    fails(ro.cli("rollout", "resume", deployment_id), 2, "nothing to resume")


def wait_for_phase(ro, phase: str, timeout: float = 30) -> dict:
    def current():
        files = list(ro.state_dir.glob("*.json"))
        state = json.loads(files[0].read_text()) if files else None
        return state if state and state["phase"] == phase else None

    return wait_until(current, timeout, f"a rollout in phase {phase}")


def start_controller(ro, config: Path, interval: str, steps: str = "50,100") -> subprocess.Popen:
    env = clean_env(SHIPLEDGER_PRIVATE_KEY=ro.dn.key("deployer"))
    args = [*CLI, *map(str, ro.run_args(config, steps=steps, interval=interval)), "--state-dir", str(ro.state_dir)]
    return subprocess.Popen(args, cwd=ro.dn.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_rollout_abort_asks_the_running_controller_to_roll_back(ro):
    ro.samples.set(healthy(), healthy())
    controller = start_controller(ro, ro.command_config(), interval="60s")
    try:
        deployment_id = wait_for_phase(ro, "waiting")["deployment_id"]

        aborted = ro.cli("rollout", "abort", deployment_id, "--reason", "pager went off", "--json")

        out, err = controller.communicate(timeout=30)
    finally:
        controller.kill()
    assert aborted.code == 3, aborted.err
    assert aborted.json()["phase"] == "aborted"
    assert controller.returncode == 3, err
    assert json.loads(out)["phase"] == "aborted"
    assert "abort requested: pager went off" in err
    assert traffic_seen(ro.traffic_log) == [50, 0]
    assert ro.dn.ledger().deployment(deployment_id).status == "rolled_back"
    assert len(ro.events(deployment_id, "rolled-back")) == 1 and not ro.events(deployment_id, "canary-verdict")


def test_rollout_killed_mid_wait_resumes_without_repeating_a_step(ro):
    ro.samples.set(healthy(), healthy())
    controller = start_controller(ro, ro.command_config(), interval="3s")
    try:
        state = wait_for_phase(ro, "waiting")
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait(timeout=10)
    finally:
        controller.kill()
    deployment_id = state["deployment_id"]
    assert traffic_seen(ro.traffic_log) == [50]
    assert ro.dn.ledger().deployment(deployment_id).percent == 50

    resumed = ro.cli("rollout", "resume", deployment_id, "--json")

    assert ok(resumed)["phase"] == "completed"
    assert "resuming a stopped controller in phase waiting at 50%" in resumed.err
    assert traffic_seen(ro.traffic_log) == [50, 100]  # 50% was not set again
    assert len(ro.history("deployed")) == 1
    assert [e.fields["toPercent"] for e in ro.events(deployment_id, "promoted")] == [100]
    assert [e.fields["percent"] for e in ro.events(deployment_id, "canary-verdict")] == [50, 100]


def test_rollout_resume_after_a_kill_between_recording_and_saving_does_not_record_twice(ro):
    ro.samples.set(healthy(), {**healthy(), "saturation": noisy(30.0, seed=9)})
    state = ro.run(ro.command_config(), interval="1s").json()
    deployment_id = state["deployment_id"]
    # The state file as a kill right after the verdict's transaction leaves it: the report saved and
    # pending, the verdict on chain, the state not yet told.
    on_disk = ro.state(deployment_id)
    pending = {k: v for k, v in on_disk["reports"][0].items() if k != "tx_hash"}
    on_disk.update(phase="judging", pending_report=pending, reports=[], pause_reason=None, paused_in=None)
    (ro.state_dir / f"{deployment_id}.json").write_text(json.dumps(on_disk))

    again = ro.cli("rollout", "resume", deployment_id, "--json")

    assert again.code == 3, again.err
    assert again.json()["phase"] == "paused" and again.json()["reports"] == [pending]
    assert len(ro.events(deployment_id, "canary-verdict")) == 1


def test_rollout_run_again_takes_over_a_start_whose_state_was_never_saved(ro):
    """A controller killed between the start transaction and its first state save: the same
    `rollout run` again carries that deployment on instead of being refused (RolloutInProgress)."""
    ro.samples.set(healthy(), healthy())
    args = ro.run_args(ro.command_config(), interval="1s")
    digest = args[args.index("--digest") + 1]
    orphan = ro.dn.ledger("deployer").start_deployment(digest, ro.service, ENV, 50)

    state = ok(ro.cli(*args))

    assert state["deployment_id"] == orphan and state["phase"] == "completed"
    assert len(ro.history("deployed")) == 1


def test_rollout_run_does_not_take_over_another_accounts_rollout(ro):
    ro.samples.set(healthy(), healthy())
    args = ro.run_args(ro.command_config(), interval="1s")
    digest = args[args.index("--digest") + 1]
    ro.dn.govern(ro.dn.ledger("steward", 0).change_role(True, "DEPLOYER", ro.dn.address("responder")))
    other = ro.dn.ledger("responder").start_deployment(digest, ro.service, ENV, 50)

    result = ro.cli(*args)

    assert result.code == 3, result.err
    assert f"deployment {other} is still rolling out" in result.err
    assert not (ro.state_dir / f"{other}.json").exists()


def test_rollout_fails_closed_when_samples_cannot_be_fetched(ro):
    ro.samples.set(healthy(), None)  # the canary's samples are missing: the command exits 1

    stopped = ro.run(ro.command_config(), interval="1s")

    assert stopped.code == 1, stopped.err
    state = stopped.json()
    deployment_id = state["deployment_id"]
    assert (state["phase"], state["pause_reason"]) == ("paused", "error")
    assert "exited with 1: no samples for canary" in state["error"]
    assert ro.dn.ledger().deployment(deployment_id).percent == 50  # never promoted
    assert not ro.events(deployment_id, "canary-verdict") and traffic_seen(ro.traffic_log) == [50]

    ro.samples.set(healthy(), healthy())
    assert ok(ro.cli("rollout", "resume", deployment_id, "--json"))["phase"] == "completed"


def test_prometheus_source_unreachable_is_a_metrics_error():
    from shipledger.delivery.metrics import MetricsError, Source

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the controller pauses on this, as above
    source = Source.from_config({"source": {"prometheus": url, "timeout": "2s"},
                                 "metrics": [{"name": "latency", "query": {"baseline": "a", "canary": "b"}}]})
    with pytest.raises(MetricsError, match=f"cannot query Prometheus at {url} for latency \\(baseline\\)"):
        source.fetch(source.window(end=time.time(), interval=60))


def test_rollout_fail_without_responder_rolls_back_and_says_no_incident(ro):
    assert not ro.dn.ledger().has_role("RESPONDER", ro.dn.address("deployer"))
    ro.samples.set(healthy(), {name: noisy(30.0, seed=9) for name in FIVE})

    result = ro.run(ro.command_config(), steps="100", interval="1s")

    assert result.code == 3, result.err
    state = result.json()
    assert state["phase"] == "rolled-back" and state["incident_id"] == 0 and state["error"] is None
    assert "lacks RESPONDER" in state["notes"][0] and f"--suspect {state['deployment_id']}" in state["notes"][0]
    assert ro.dn.ledger().deployment(state["deployment_id"]).status == "rolled_back"
    assert traffic_seen(ro.traffic_log) == [100, 0]
    assert not ro.history("incident-opened")


BAD_INPUTS = [  # each a subprocess: a few, one per kind of check
    ({"steps": "50,10"}, ["must increase"]),
    ({"traffic": "shift --to {pct}"}, ["--traffic-cmd", "unknown placeholder", "{pct}"]),
    ({"config": {"metrics": [{"name": "x"}]}}, ["source:"]),
    ({"config": {"source": {"command": "fetch"}, "judge": {"pass": 200}, "metrics": [{"name": "x"}]}}, ["judge thresholds"]),
]


@pytest.mark.parametrize("source, metrics, needles", [
    ({"prometheus": "http://127.0.0.1:9", "step": "fast"}, [{"name": "x", "query": {"baseline": "a", "canary": "b"}}],
     "source.step 'fast' is not a duration"),
    ({"prometheus": "http://127.0.0.1:9"}, [{"name": "x"}], "metric 'x' needs `query: {baseline: PROMQL, canary: PROMQL}`"),
    ({"prometheus": "http://127.0.0.1:9"}, [{"name": "x", "query": {"baseline": "a"}}], "metric 'x' needs `query:"),
    ({"prometheus": "127.0.0.1:9090"}, [{"name": "x"}], "must be an http"),
    ({"prometheus": "http://x", "command": "y"}, [{"name": "x"}], "exactly one of"),
    ({"command": "fetch {scope} {pct}"}, [{"name": "x"}], "source.command uses unknown placeholder"),
    ({"command": "fetch 'unclosed"}, [{"name": "x"}], "cannot be split"),
    ({"command": "fetch"}, [{"name": "x", "command": "own {when}"}], "metric 'x' command uses unknown placeholder"),
    ({"command": "fetch", "lookback": "0s"}, [{"name": "x"}], "source.lookback '0s' must be more than zero"),
    ({"command": "fetch", "step": "1ms", "lookback": "1h"}, [{"name": "x"}], "more than 11000 points"),
    ({"command": "fetch", "every": "1s"}, [{"name": "x"}], "unknown key(s) every"),
    ({"command": "fetch"}, [], "non-empty `metrics:`"),
])
def test_source_from_config_names_what_is_wrong(source, metrics, needles):
    from shipledger.errors import UsageError
    from shipledger.delivery.metrics import Source

    with pytest.raises(UsageError) as caught:
        Source.from_config({"source": source, "metrics": metrics})
    assert needles in str(caught.value)


def test_rollout_run_checks_inputs_before_sending_anything(ro):
    args = ro.run_args(ro.tmp / "analysis.json", interval="1s")  # released: the gate would allow it
    for change, needles in BAD_INPUTS:
        config = change.get("config") or {"source": {"command": ro.samples.command}, "metrics": five_metrics()}
        (ro.tmp / "analysis.json").write_text(json.dumps(config))
        case = list(args)
        case[case.index("--steps") + 1] = change.get("steps", "50,100")
        case[case.index("--traffic-cmd") + 1] = change.get("traffic", traffic_cmd(ro.traffic_log))

        message = fails(ro.cli(*case), 2, *needles)

        assert "\n" not in message, message
    assert not ro.history("deployed")  # nothing was sent
    assert not ro.state_dir.exists() or not list(ro.state_dir.glob("*.json"))
    assert not ro.traffic_log.exists()


def test_command_source_runs_per_metric_with_placeholders_and_reads_csv(tmp_path):
    from shipledger.delivery.metrics import MetricsError, Source, Window

    script = tmp_path / "emit.py"
    script.write_text("import sys\nscope, metric, start, end = sys.argv[1:]\n"
                      "print('metric,value')\n"
                      "print(f'{metric},{1.0 if scope == \"baseline\" else 2.0}')\nprint(f'{metric},{float(end) - float(start)}')\n")
    command = shlex.join([sys.executable, str(script), "{scope}", "{metric}", "{start}", "{end}"])
    source = Source.from_config({"source": {"command": command, "lookback": "30s"}, "metrics": [{"name": "a"}, {"name": "b"}]})
    window = source.window(end=1000.0, interval=5)
    assert window == Window(start=970.0, end=1000.0, step=10.0)

    baseline, canary = source.fetch(window)

    assert baseline == {"a": [1.0, 30.0], "b": [1.0, 30.0]} and canary == {"a": [2.0, 30.0], "b": [2.0, 30.0]}
    broken = Source.from_config({"source": {"command": shlex.join([sys.executable, "-c", "print('a,notanumber')"])},
                                 "metrics": [{"name": "a"}]})
    with pytest.raises(MetricsError, match="printed no samples the judge can read"):
        broken.fetch(window)


def test_canary_record_records_the_report_digest(dn, tmp_path):
    service = unique("rec")
    deployment_id = dn.ledger("deployer").start_deployment(dn.release(service), service, ENV, 10)
    report = tmp_path / "analysis.txt"
    report.write_text("made by another tool\n")

    recorded = ok(dn.as_("deployer", "canary", "record", deployment_id, "--score", "97.5", "--verdict", "pass",
                         "--report", report, "--json"))

    (event,) = [e for e in dn.history(service, "canary-verdict")]
    assert event.fields["scoreBasisPoints"] == 9750 and event.fields["verdict"] == 1 and event.fields["percent"] == 10
    assert event.fields["reportDigest"] == "0x" + sha256_of(report).removeprefix("sha256:")
    assert event.fields["reportUri"] == report.resolve().as_uri() == recorded["report_uri"]
    assert event.fields["judge"] == "manual"
    fails(dn.as_("deployer", "canary", "record", deployment_id, "--score", "120", "--verdict", "pass", "--report", report),
          2, "--score 120")
    fails(dn.as_("outsider", "canary", "record", deployment_id, "--score", "50", "--verdict", "fail", "--report", report),
          3, "DEPLOYER")
    fails(dn.run("canary", "verify", report), 2, "is not readable JSON")


def test_verify_cannot_recompute_a_report_of_another_judge_version(tmp_path):
    from shipledger.delivery import judge as J
    from shipledger.delivery.rollout import REPORT_KIND, UnverifiableReport, verify

    config = {"metrics": [{"name": "latency", "direction": "increase"}]}
    baseline, canary = {"latency": noisy(0.1)}, {"latency": noisy(0.1, seed=2)}
    result = J.judge(baseline, canary, J.JudgeConfig.from_dict(config)).to_dict()
    report = {"kind": REPORT_KIND, "format": 1, "judge_version": J.JUDGE_VERSION, "deployment_id": 7, "percent": 50,
              "config": config, "baseline": baseline, "canary": canary, "result": result}
    current = tmp_path / "current.json"
    current.write_text(json.dumps(report))
    assert verify(current)["match"] is True
    older = tmp_path / "older.json"
    older.write_text(json.dumps({**report, "judge_version": "shipledger-judge/1"}))
    with pytest.raises(UnverifiableReport) as caught:
        verify(older)
    assert caught.value.exit_code == 1
    assert "'shipledger-judge/1'" in str(caught.value) and repr(J.JUDGE_VERSION) in str(caught.value)
    fails(run(["canary", "verify", older, "--offline", "--json"], cwd=tmp_path), 1, "cannot recompute", "shipledger-judge/1")
    unnamed = tmp_path / "unnamed.json"
    unnamed.write_text(json.dumps({k: v for k, v in report.items() if k != "judge_version"}))
    with pytest.raises(UnverifiableReport, match="names no judge version"):
        verify(unnamed)


def test_parse_steps_wants_increasing_percentages_ending_at_100():
    from shipledger.errors import UsageError
    from shipledger.delivery.rollout import parse_steps

    assert parse_steps("10,50,100") == [10, 50, 100] and parse_steps("100") == [100]
    for text, needle in (("10,50", "must end at 100"), ("0,100", "1 to 100"), ("50,50,100", "must increase"),
                         ("10,,100", "whole percentages"), ("10,150", "1 to 100")):
        with pytest.raises(UsageError, match=needle):
            parse_steps(text)


def test_rollout_run_the_gate_decides_the_start(ro):
    digest = ro.dn.register(ro.service)  # registered, never approved: the gate denies it
    ro.dn.set_policy(ro.service)
    ro.samples.set(healthy(), healthy())

    denied = ro.cli("rollout", "run", "--digest", digest, "--service", ro.service, "--env", ENV, "--steps", "100",
                    "--interval", "1s", "--analysis", ro.command_config(), "--traffic-cmd", traffic_cmd(ro.traffic_log))

    fails(denied, 3, "the gate denies the deployment", "not enough approvals: 0 of 2")
    assert not ro.history("deployed") and not ro.traffic_log.exists()
    assert not ro.state_dir.exists() or not list(ro.state_dir.glob("*.json"))


def test_check_window_wants_enough_prometheus_points_for_the_judge():
    from shipledger.errors import UsageError
    from shipledger.delivery.judge import JudgeConfig
    from shipledger.delivery.metrics import Source
    from shipledger.delivery.rollout import check_window

    raw = {"source": {"prometheus": "http://127.0.0.1:9", "step": "10s"},
           "metrics": [{"name": "x", "query": {"baseline": "a", "canary": "b"}}]}
    check_window(JudgeConfig.from_dict(raw), Source.from_config(raw), interval=90)  # 10 points: enough
    with pytest.raises(UsageError, match=r"a 60s window at 10s steps gives at most 7 samples .* min_samples 10"):
        check_window(JudgeConfig.from_dict(raw), Source.from_config(raw), interval=60)
    raw["metrics"][0]["min_samples"] = 5
    check_window(JudgeConfig.from_dict(raw), Source.from_config(raw), interval=60)
    raw["source"]["lookback"] = "20s"
    with pytest.raises(UsageError, match="at most 3 samples"):
        check_window(JudgeConfig.from_dict(raw), Source.from_config(raw), interval=600)


def test_rollout_pauses_when_the_traffic_command_fails_and_resume_runs_it_again(ro):
    ro.samples.set(healthy(), healthy())
    broken = ro.tmp / "mesh-down"
    broken.write_text("")
    script = ("import pathlib, sys\n"
              "if pathlib.Path(sys.argv[1]).exists(): sys.exit('mesh unreachable')\n"
              "open(sys.argv[2], 'a').write(sys.argv[3] + '\\n')\n")
    args = ro.run_args(ro.command_config(), steps="100", interval="1s")
    args[args.index("--traffic-cmd") + 1] = shlex.join([sys.executable, "-c", script, str(broken), str(ro.traffic_log), "{percent}"])

    stopped = ro.cli(*args)

    assert stopped.code == 1, stopped.err
    state = stopped.json()
    assert state["phase"] == "paused" and "traffic command for 100% exited with 1: mesh unreachable" in state["error"]
    assert not ro.events(state["deployment_id"], "canary-verdict")  # nothing judged without the traffic
    broken.unlink()
    resumed = ok(ro.cli("rollout", "resume", state["deployment_id"], "--json"))
    assert resumed["phase"] == "completed" and traffic_seen(ro.traffic_log) == [100]


# ============================================================================ the ledger re-checks every step (suite v2)


def test_rollout_paused_by_a_veto_goes_on_once_it_is_withdrawn(ro):
    ro.samples.set(healthy(), healthy())
    controller = start_controller(ro, ro.command_config(), interval="5s")
    try:
        state = wait_for_phase(ro, "waiting")
        digest = state["digest"]
        ro.dn.ledger("approver", 2).reject(digest, ro.service, ENV, "wrong migration order")
        out, err = controller.communicate(timeout=60)
    finally:
        controller.kill()
    deployment_id = state["deployment_id"]
    vetoer = ro.dn.address("approver", 2).lower()

    assert controller.returncode == 3, err
    paused = json.loads(out)
    assert (paused["phase"], paused["pause_reason"], paused["percent"], paused["error"]) == ("paused", "denied", 100, None)
    assert f"the ledger refuses to promote to 100%: deployment {deployment_id} cannot go on: approver {vetoer} rejected it" \
        in paused["paused_because"]
    assert "rollout resume" in err and "Traceback" not in err
    assert ro.dn.ledger().deployment(deployment_id).percent == 50  # the step was not taken...
    assert traffic_seen(ro.traffic_log) == [50]  # ...and the traffic stayed where the ledger allows it
    assert [e.fields["verdict"] for e in ro.events(deployment_id, "canary-verdict")] == [1]

    still = ro.cli("rollout", "resume", deployment_id, "--json")  # the veto stands: refused again, no crash
    assert still.code == 3 and still.json()["pause_reason"] == "denied"
    ro.dn.ledger("approver", 2).withdraw(digest, ro.service, ENV)
    done = ok(ro.cli("rollout", "resume", deployment_id, "--json"))
    assert done["phase"] == "completed" and traffic_seen(ro.traffic_log) == [50, 100]
    assert [e.fields["toPercent"] for e in ro.events(deployment_id, "promoted")] == [100]


def test_rollout_rolls_back_when_its_artifact_is_revoked_mid_rollout(ro):
    live = ro.dn.deployed(ro.service, "0.9.0")
    ro.samples.set(healthy(), healthy())
    controller = start_controller(ro, ro.command_config(), interval="5s")
    try:
        state = wait_for_phase(ro, "waiting")
        ro.dn.ledger("registrar").revoke(state["digest"], ro.service, "signing key leaked")
        out, err = controller.communicate(timeout=60)
    finally:
        controller.kill()
    deployment_id = state["deployment_id"]

    assert controller.returncode == 3, err
    done = json.loads(out)
    assert (done["phase"], done["restored"], done["error"]) == ("rolled-back", live, None)
    assert "artifact has been revoked" in done["reason"] and done["incident_id"] is None  # the revoke is on record
    assert traffic_seen(ro.traffic_log) == [50, 0]
    assert ro.dn.ledger().deployment(deployment_id).status == "rolled_back"
    assert not ro.events(deployment_id, "promoted") and not ro.history("incident-opened")


def test_rollout_whose_live_artifact_is_revoked_fails_instead_of_rolling_back(ro):
    live = ro.dn.deployed(ro.service, "1.0.0")
    ro.dn.ledger("registrar").revoke(digest_for(f"{ro.service}@1.0.0"), ro.service, "backdoored")
    ro.samples.set(healthy(), {name: noisy(30.0, seed=9) for name in FIVE})

    result = ro.run(ro.command_config(), steps="100", interval="1s", version="1.0.1")

    assert result.code == 3, result.err
    state = result.json()
    deployment_id = state["deployment_id"]
    assert state["phase"] == "failed" and state["error"] is None and state["restored"] is None
    assert any(f"would make deployment {live} live again" in note and "marked failed instead" in note
               for note in state["notes"]), state["notes"]
    assert ro.dn.ledger().deployment(deployment_id).status == "failed"
    assert ro.dn.ledger().target_state(ro.service, ENV).live == live
    assert traffic_seen(ro.traffic_log) == [100, 0]
    (failed,) = ro.events(deployment_id, "failed")
    assert "canary verdict fail" in failed.fields["reason"]


def test_rollout_after_a_fail_recorded_by_another_judge_rolls_back(ro):
    ro.samples.set(healthy(), healthy())
    controller = start_controller(ro, ro.command_config(), interval="5s")
    try:
        state = wait_for_phase(ro, "waiting")
        # another judge (a person, another tool) records a fail while the controller waits
        ro.dn.ledger("deployer").record_analysis(state["deployment_id"], 10, "fail", judge="on-call")
        out, err = controller.communicate(timeout=60)
    finally:
        controller.kill()
    deployment_id = state["deployment_id"]

    assert controller.returncode == 3, err
    done = json.loads(out)
    assert done["phase"] == "rolled-back" and done["error"] is None
    assert "its canary verdict is fail, which blocks it for good" in done["reason"]
    # the controller's own pass does not undo the recorded fail; nothing was promoted
    assert [e.fields["verdict"] for e in ro.events(deployment_id, "canary-verdict")] == [3, 1]
    assert not ro.events(deployment_id, "promoted") and traffic_seen(ro.traffic_log) == [50, 0]
    assert done["incident_id"] == 0  # the deployer lacks RESPONDER here: the note says so

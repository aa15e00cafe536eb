"""The rollout controller: a deployment goes out in steps, each step judged against the baseline.

    start on the ledger at steps[0] (the gate decides)
    for each step: promote (after the first) -> traffic command {percent} -> wait the interval
                   -> fetch baseline and canary samples -> judge -> save the report -> record the verdict
        pass      -> next step, or complete after 100%
        marginal  -> pause: a person resumes (continue) or aborts (roll back)
        fail      -> traffic command 0, roll back on the ledger, open an incident naming the deployment

The state of every rollout is a JSON file, `<state dir>/<deployment id>.json`, rewritten atomically
(os.replace) after every step, and every action first checks the chain: a controller killed at any
point is resumed with `rollout resume ID` without repeating a ledger step. The reports sit next to
it in `<state dir>/<deployment id>/`; a report's sha256 is the digest recorded on chain, and
`canary verify REPORT` recomputes its verdict. One controller drives a rollout at a time (an
flock on `<id>.lock`); `rollout abort` asks a running one to stop through `<id>.abort`.

Phases: promoting (promote on chain, traffic command) -> waiting (until wait_until) -> judging
(samples, judge, report, verdict on chain) -> promoting the next step | completing | paused
(pause_reason marginal, error or denied) | rolling-back (traffic 0, rollback, incident) -> completed,
rolled-back, aborted or failed.

The ledger re-checks the gate and the canary at every promote and complete (suite v2), and the
controller follows its answer: a Fail verdict on chain blocks the rollout for good, so it rolls back;
a Marginal one needs a later Pass, so `rollout resume` judges the step again; a revoked artifact rolls
back; any other refusal (a veto, a freezing incident, expired approvals) pauses with the gate's
sentence (pause_reason denied), the traffic where it was, for a person to resume or abort. When the
live deployment's artifact is revoked the ledger refuses the rollback, and the rollout is marked
failed instead (final phase failed).

Fail closed: an error fetching samples, judging or calling the traffic command pauses the rollout
(exit 1) and never promotes. The ledger moves first on the way up (start and promote, then traffic)
and the traffic first on the way down (0, then rollback), so the traffic never exceeds what the
ledger allows.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import math
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from web3 import Web3

from shipledger.errors import ContractRevert, ShipledgerError, UsageError, error_class
from shipledger.delivery.metrics import MetricsError, Source, command_words, json_samples
from shipledger.models import GateReason, Verdict

STATE_FORMAT = 1
REPORT_KIND = "shipledger-canary-report"
REPORT_FORMAT = 1
DEFAULT_STATE_DIR = Path(".shipledger") / "rollouts"
TERMINAL = ("completed", "rolled-back", "aborted", "failed")
TRAFFIC_PLACEHOLDERS = {"percent", "service", "env", "deployment"}
TRAFFIC_TIMEOUT = 120  # seconds; a traffic command that hangs is an error, never a promotion
ABORT_WAIT = 60  # seconds `rollout abort` waits for a running controller to act on its request
SLEEP_SLICE = 0.25  # the controller checks for an abort request this often while it waits
SCORE_TOLERANCE = 1e-9  # recomputed and saved scores are floats from the same code


class RolloutError(ShipledgerError):
    """The controller could not carry out a step (traffic command, lock, state file)."""


class TrafficError(RolloutError):
    """The traffic command failed or timed out."""


class UnverifiableReport(ShipledgerError):
    """`canary verify` cannot recompute a report that another judge version made: its rules differ, so
    a recomputation proves nothing either way (exit 1, not a mismatch)."""


# ---------------------------------------------------------------------- inputs

def parse_steps(text: str) -> list[int]:
    """'10,50,100' -> [10, 50, 100]: whole percentages, increasing, ending at 100 (only a rollout at
    100% may complete on the ledger)."""
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"steps {text!r} must be whole percentages separated by commas, like 10,50,100") from None
    if any(not 1 <= s <= 100 for s in steps):
        raise UsageError(f"steps {text!r}: every step must be 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise UsageError(f"steps {text!r} must increase")
    if steps[-1] != 100:
        raise UsageError(f"steps {text!r} must end at 100: only a rollout at 100% can complete")
    return steps


def check_traffic_command(template: str | None) -> None:
    if template is not None:
        command_words(template, TRAFFIC_PLACEHOLDERS, "--traffic-cmd")


def check_window(config, source: Source, interval: float) -> None:
    """A Prometheus window must hold enough points for the judge: with fewer than a metric's
    min_samples every step would be inconclusive (score 0) and every rollout rolled back."""
    if source.kind != "prometheus":
        return  # a command decides how many samples it prints
    lookback = source.lookback if source.lookback is not None else interval
    points = int(lookback / source.step) + 1
    needed = max((m.min_samples or config.min_samples for m in config.metrics), default=config.min_samples)
    if points < needed:
        raise UsageError(f"a {lookback:g}s window at {source.step:g}s steps gives at most {points} samples per series, "
                         f"fewer than the judge's min_samples {needed}: lower source.step, or raise source.lookback "
                         "or --interval")


def now_iso(timestamp: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC).isoformat(timespec="milliseconds")


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- state on disk

class Store:
    """Rollout state files, reports, locks and abort requests under one directory."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory or os.environ.get("SHIPLEDGER_ROLLOUT_DIR") or DEFAULT_STATE_DIR)

    def state_path(self, deployment_id: int) -> Path:
        return self.dir / f"{deployment_id}.json"

    def report_dir(self, deployment_id: int) -> Path:
        return self.dir / str(deployment_id)

    def abort_path(self, deployment_id: int) -> Path:
        return self.dir / f"{deployment_id}.abort"

    def save(self, state: dict) -> None:
        state["updated_at"] = now_iso()
        path = self.state_path(state["deployment_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as handle:
            handle.write(json.dumps(state, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # readers see the old state or the new one, never half of one

    def load(self, deployment_id: int) -> dict:
        path = self.state_path(deployment_id)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"no rollout state for deployment {deployment_id} in {self.dir} "
                             "(run from the directory `rollout run` ran in, or pass --state-dir)") from None
        except (OSError, ValueError) as exc:
            raise RolloutError(f"rollout state {path} is unreadable: {exc}") from None
        if not isinstance(state, dict):
            raise RolloutError(f"rollout state {path} is not a JSON object")
        if state.get("format") != STATE_FORMAT:
            raise RolloutError(f"rollout state {path} has format {state.get('format')!r}, expected {STATE_FORMAT}")
        return state

    def all(self) -> list[dict]:
        states = []
        for path in sorted(self.dir.glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
            if path.stem.isdigit():
                states.append(self.load(int(path.stem)))
        return states

    def lock(self, deployment_id: int):
        """Hold the rollout's lock (released when the process ends, even by kill -9); None if another
        process holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.dir / f"{deployment_id}.lock", "a+")  # noqa: SIM115 - held open: it is the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle


def new_state(*, deployment_id: int, digest: str, artifact: str | None, service: str, env: str, steps: list[int],
              interval: int, config_raw: dict, analysis: str, traffic_cmd: str | None, severity: int) -> dict:
    return {
        "format": STATE_FORMAT,
        "deployment_id": deployment_id,
        "digest": digest,
        "artifact": artifact,
        "service": service,
        "env": env,
        "steps": steps,
        "step_index": 0,
        "interval": interval,
        "analysis": analysis,
        "config": config_raw,  # frozen at the start: a resumed rollout judges by the same rules
        "traffic_cmd": traffic_cmd,
        "incident_severity": severity,
        "phase": "promoting",
        "wait_until": None,
        "pending_report": None,
        "reports": [],
        "reason": None,
        "pause_reason": None,  # marginal | error | denied (the ledger refused a step: a veto, a freeze...)
        "paused_because": None,  # the sentence of the last pause
        "paused_in": None,  # the phase an error paused, retried on resume
        "error": None,
        "incident_wanted": False,  # a fail verdict, not a person, rolled it back
        "final_phase": None,  # where rolling-back ends: rolled-back | aborted | failed
        "traffic_percent": None,  # the last percentage the traffic command applied
        "restored": None,
        "incident_id": None,
        "notes": [],
        "started_at": now_iso(),
    }


def summary(state: dict, store: Store | None = None) -> dict:
    """What `rollout status` and `rollout run --json` print: the state without the config."""
    out = {k: v for k, v in state.items() if k not in ("config", "format")}
    out["percent"] = state["steps"][state["step_index"]]
    if store is not None:
        out["state_file"] = str(store.state_path(state["deployment_id"]))
    return out


# ---------------------------------------------------------------------- chain look-ups

def _id_topic(value: int) -> bytes:
    return value.to_bytes(32, "big")


def recorded_analyses(ledger, deployment_id: int | None = None) -> list[dict]:
    """CanaryAnalysisRecorded events (of one deployment, or all), with the digest as 'sha256:<hex>'."""
    topics = [_id_topic(deployment_id)] if deployment_id else []
    events = ledger.events("CanaryAnalysisRecorded", *topics)
    for event in events:
        event["reportDigest"] = "sha256:" + bytes(event["reportDigest"]).hex()
        event["verdict"] = Verdict(event["verdict"]).name.lower()
    return events


def incidents_naming(ledger, deployment_id: int, service: str, env: str) -> list[int]:
    """Incidents opened for this service and environment that name the deployment as a suspect."""
    events = ledger.events("IncidentOpened", None, Web3.keccak(text=service), Web3.keccak(text=env))
    return [e["id"] for e in events if deployment_id in e["suspects"]]


# ---------------------------------------------------------------------- the controller

class Controller:
    """Drives one rollout from its state until it completes, pauses or is rolled back."""

    def __init__(self, ledger, store: Store, state: dict, log: Callable[[str], None] = lambda text: None):
        from shipledger.delivery.judge import JudgeConfig

        self.ledger = ledger
        self.store = store
        self.state = state
        self.log = log
        self.config = JudgeConfig.from_dict(state["config"])
        self.source = Source.from_config(state["config"])
        self.id = state["deployment_id"]

    # -------------------------------------------------------------- driving

    def drive(self) -> dict:
        """Act until the rollout is paused or finished; return the state."""
        while self.state["phase"] not in (*TERMINAL, "paused"):
            if self._abort_requested():
                continue
            phase = self.state["phase"]
            if phase == "rolling-back":
                self._roll_back_rest()
                break
            deployment = self.ledger.deployment(self.id)
            if deployment.status != "in_progress":
                self._adopt(deployment.status)
            elif phase == "promoting":
                self._promote(deployment.percent)
            elif phase == "waiting":
                self._wait()
            elif phase == "judging":
                self._judge()
            elif phase == "completing":
                if self._step("complete", lambda: self.ledger.complete(self.id)):
                    self._save(phase="completed", error=None)
                    self.log(f"deployment {self.id} completed: {self.state['service']} is live at 100% in {self.state['env']}")
            else:
                raise RolloutError(f"rollout {self.id} is in an unknown phase {phase!r}")
        return self.state

    def _save(self, **changes) -> None:
        self.state.update(changes)
        self.store.save(self.state)

    @property
    def percent(self) -> int:
        return self.state["steps"][self.state["step_index"]]

    def _promote(self, chain_percent: int) -> None:
        percent = self.percent
        if chain_percent < percent:  # after a restart the promotion may already be on chain
            if not self._step(f"promote to {percent}%", lambda: self.ledger.promote(self.id, percent)):
                return
            self.log(f"deployment {self.id} promoted to {percent}%")
        try:
            self._traffic(percent)
        except TrafficError as exc:
            self._pause("error", str(exc))
            return
        self._save(phase="waiting", wait_until=round(time.time() + self.state["interval"], 3), error=None)
        self.log(f"step {self.state['step_index'] + 1}/{len(self.state['steps'])}: {percent}% of traffic on the "
                 f"canary; judging in {self.state['interval']}s")

    def _step(self, what: str, send) -> bool:
        """Send promote or complete; the ledger re-checks the gate and the canary first. False (and the
        state says what next) when it refuses: a canary that failed, or a revoked artifact, rolls
        back; a marginal verdict on chain is judged again (the ledger wants a later pass); any other
        gate reason (a veto, a freeze, expired approvals) pauses for a person, the traffic unchanged."""
        try:
            send()
            return True
        except ContractRevert as exc:
            name = exc.error_name
            if name not in ("StepDenied", "CanaryBlocks"):
                raise
            why = f"the ledger refuses to {what}: {exc}"
            verdict, reason = exc.arguments.get("verdict"), exc.arguments.get("reason")
        if name == "CanaryBlocks" and int(verdict) == int(Verdict.MARGINAL):
            self.log(f"rollout {self.id}: {why}; judging the step again")
            self._save(phase="judging", pending_report=None)
        elif name == "CanaryBlocks" or int(reason) == int(GateReason.ARTIFACT_REVOKED):
            self.log(f"rollout {self.id}: {why}; rolling back")
            self._save(phase="rolling-back", final_phase="rolled-back", reason=why,
                       incident_wanted=name == "CanaryBlocks")  # a revoke is its own emergency, already on record
        else:
            self._pause("denied", f"{why}. `shipledger rollout resume {self.id}` tries again once the gate allows it; "
                                  f"`shipledger rollout abort {self.id} --reason ...` rolls back")
        return False

    def _wait(self) -> None:
        while (left := self.state["wait_until"] - time.time()) > 0:
            if self.store.abort_path(self.id).exists():
                return  # drive() handles the request
            time.sleep(min(SLEEP_SLICE, left))
        self._save(phase="judging")

    def _judge(self) -> None:
        from shipledger.delivery.judge import JUDGE_VERSION, judge

        pending = self.state["pending_report"]
        if pending is None:
            try:
                window = self.source.window(end=time.time(), interval=self.state["interval"])
                baseline, canary = map(json_samples, self.source.fetch(window, self.state["service"], self.state["env"]))
                judgement = judge(baseline, canary, self.config)
            except MetricsError as exc:
                self._pause("error", f"no verdict at {self.percent}%: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 - fail closed: a judge that crashes never promotes
                self._pause("error", f"no verdict at {self.percent}%: the judge failed: {exc.__class__.__name__}: {exc}")
                return
            pending = self._write_report(window, baseline, canary, judgement, JUDGE_VERSION)
            self._save(pending_report=pending)  # before sending: a restart finds it and checks the chain
        if not any(e["reportDigest"] == pending["digest"] for e in recorded_analyses(self.ledger, self.id)):
            receipt = self.ledger.record_analysis(self.id, pending["score"], pending["verdict"], pending["digest"],
                                                  pending["uri"], pending["judge"])
            pending = {**pending, "tx_hash": receipt.tx_hash}
        self.log(f"canary verdict {pending['verdict']} (score {pending['score']:.1f}) at {pending['percent']}%; "
                 f"report {pending['path']}")
        reports = [*self.state["reports"], pending]
        verdict = pending["verdict"]
        if verdict == "pass" and self.state["step_index"] + 1 < len(self.state["steps"]):
            self._save(reports=reports, pending_report=None, step_index=self.state["step_index"] + 1, phase="promoting")
        elif verdict == "pass":
            self._save(reports=reports, pending_report=None, phase="completing")
        elif verdict == "marginal":
            self._save(reports=reports, pending_report=None)
            self._pause("marginal", f"marginal verdict (score {pending['score']:.1f}) at {pending['percent']}%: the ledger "
                        f"needs a later pass. `shipledger rollout resume {self.id}` judges the step again (or goes on if a "
                        f"person recorded a pass with `canary record {self.id} --verdict pass`); "
                        f"`rollout abort {self.id} --reason ...` rolls back")
        else:
            self._save(reports=reports, pending_report=None, phase="rolling-back", incident_wanted=True,
                       final_phase="rolled-back",
                       reason=f"canary verdict fail (score {pending['score']:.1f}) at {pending['percent']}%")
            self._roll_back_rest()

    def _pause(self, why: str, text: str) -> None:
        self._save(phase="paused", paused_in=self.state["phase"], pause_reason=why, paused_because=text,
                   error=text if why == "error" else None)
        self.log(f"rollout {self.id} paused: {text}")

    # -------------------------------------------------------------- rolling back

    def _roll_back_rest(self) -> None:
        """Traffic to 0, rollback on the ledger, incident: each done once, each attempted even when
        an earlier one failed (a stuck traffic command must not keep the ledger saying 'in progress')."""
        state = self.state
        errors = []
        if state["traffic_percent"] != 0:
            try:
                self._traffic(0)
            except TrafficError as exc:
                errors.append(str(exc))
        deployment = self.ledger.deployment(self.id)
        if deployment.status == "in_progress":
            reason = state["reason"] or "rolled back by the rollout controller"
            try:
                restored = self.ledger.rollback(self.id, reason)
                self._save(restored=restored)
                self.log(f"deployment {self.id} rolled back; live is now {restored or 'nothing'}")
            except ContractRevert as exc:
                if exc.error_name != "RestoresRevokedArtifact":
                    raise
                # The live deployment's artifact is revoked: the ledger never makes it live again by a
                # rollback. Failing the rollout ends it the same way, the live deployment unchanged.
                self.ledger.fail(self.id, reason)
                note = (f"the rollback was refused ({exc}), so deployment {self.id} was marked failed instead; "
                        "the revoked artifact the traffic fell back to still needs replacing")
                self._save(final_phase="failed", notes=[*state["notes"], note])
                self.log(f"deployment {self.id} failed: {note}")
        if state.get("incident_wanted") and state["incident_id"] is None:
            try:
                self._open_incident()
            except ContractRevert as exc:
                errors.append(f"no incident opened: {exc}")
        if errors:
            self._save(error="; ".join(errors))
            self.log(f"rollout {self.id}: {'; '.join(errors)} (`rollout resume {self.id}` retries)")
            return
        self._save(phase=state.get("final_phase") or "rolled-back", error=None)

    def _open_incident(self) -> None:
        state = self.state
        found = incidents_naming(self.ledger, self.id, state["service"], state["env"])
        if found:  # opened before a restart
            self._save(incident_id=found[0])
            return
        account = self.ledger.signer_address
        if not self.ledger.has_role("RESPONDER", account):
            note = (f"the controller's account {account} lacks RESPONDER, so no incident was opened: open one with "
                    f"`shipledger incident open --service {state['service']} --env {state['env']} --suspect {self.id} ...`")
            self._save(incident_id=0, notes=[*state["notes"], note])
            self.log(note)
            return
        last = state["reports"][-1] if state["reports"] else None
        title = f"canary of deployment {self.id} ({state['service']}) failed: {state['reason']}"
        incident_id = self.ledger.open_incident(
            state["service"], state["env"], state["incident_severity"], title, [self.id],
            last["digest"] if last else "", last["uri"] if last else "",
        )
        self._save(incident_id=incident_id)
        self.log(f"incident {incident_id} opened (severity {state['incident_severity']}) naming deployment {self.id}")

    def _adopt(self, status: str) -> None:
        """The deployment left 'in progress' outside this controller (or before a restart)."""
        if status == "completed":
            self._save(phase="completed")
            return
        reason = f"deployment {self.id} is {status.replace('_', ' ')} on the ledger (changed outside this controller)"
        self._save(phase="rolling-back", final_phase="rolled-back" if status == "rolled_back" else "failed",
                   reason=self.state["reason"] or reason)
        self.log(reason)

    def _abort_requested(self) -> bool:
        path = self.store.abort_path(self.id)
        if not path.exists():
            return False
        try:
            reason = path.read_text().strip() or "aborted"
        except OSError:
            reason = "aborted"
        self.log(f"rollout {self.id}: abort requested: {reason}")
        self._save(phase="rolling-back", final_phase="aborted", reason=f"aborted: {reason}", pause_reason=None)
        path.unlink(missing_ok=True)
        return True

    # -------------------------------------------------------------- traffic and reports

    def _traffic(self, percent: int) -> None:
        template = self.state["traffic_cmd"]
        if template is not None:
            words = command_words(template, TRAFFIC_PLACEHOLDERS, "--traffic-cmd")
            values = {"percent": percent, "service": self.state["service"], "env": self.state["env"], "deployment": self.id}
            argv = [w.format(**values) for w in words]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=TRAFFIC_TIMEOUT, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise TrafficError(f"the traffic command for {percent}% could not run: {exc}") from None
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
                raise TrafficError(f"the traffic command for {percent}% exited with {done.returncode}: {tail[0]}")
        self._save(traffic_percent=percent)

    def _write_report(self, window, baseline: dict, canary: dict, judgement, judge_version: str) -> dict:
        state = self.state
        result = judgement.to_dict()
        report = {
            "kind": REPORT_KIND,
            "format": REPORT_FORMAT,
            "judge_version": judge_version,
            "deployment_id": self.id,
            "service": state["service"],
            "environment": state["env"],
            "digest": state["digest"],
            "step": state["step_index"] + 1,
            "percent": self.percent,
            "window": {**window.to_dict(), "start_iso": now_iso(window.start), "end_iso": now_iso(window.end)},
            "config": state["config"],
            "baseline": baseline,
            "canary": canary,
            "result": result,
            "created_at": now_iso(),
        }
        directory = self.store.report_dir(self.id)
        directory.mkdir(parents=True, exist_ok=True)
        base = f"step-{state['step_index'] + 1}-{self.percent}pct"
        path, attempt = directory / f"{base}.json", 1
        while path.exists():  # a re-judged step keeps the earlier report: its digest may be on chain
            attempt += 1
            path = directory / f"{base}-{attempt}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return {
            "step": state["step_index"] + 1, "percent": self.percent, "path": str(path),
            "uri": path.resolve().as_uri(), "digest": sha256_file(path), "judge": judge_version,
            "score": float(judgement.score), "verdict": judgement.verdict,
        }


# ---------------------------------------------------------------------- entry points

def start(ledger, store: Store, *, digest: str, artifact: str | None, service: str, env: str, steps: list[int],
          interval: int, config_path: str, traffic_cmd: str | None, severity: int, log: Callable[[str], None]) -> dict:
    """Check everything, start the deployment at steps[0] (the gate decides) and drive it."""
    from shipledger.delivery.judge import load_config

    if not 1 <= severity <= 4:
        raise UsageError(f"incident severity {severity} must be 1 (most severe) to 4")
    config = load_config(config_path)
    try:
        check_window(config, Source.from_config(config.raw), interval)  # checked before anything is sent
    except UsageError as exc:
        raise UsageError(f"{config_path}: {exc}") from None
    check_traffic_command(traffic_cmd)
    account = ledger.signer_address
    if not ledger.has_role("RESPONDER", account):
        log(f"note: {account} lacks RESPONDER: a failed canary will be rolled back but no incident opened")
    deployment_id = _orphaned_start(ledger, store, digest, service, env, steps[0])
    if deployment_id is not None:
        log(f"deployment {deployment_id} of {service} {digest} to {env} at {steps[0]}% was started by this account "
            "with no rollout state saved (a controller killed right after starting it): taking it over")
    else:
        active = ledger.target_state(service, env).active
        if active:  # the gate's answer too (rollout_in_progress); said here with the id, nothing sent
            raise error_class("GateDenied")({"reason": 11, "detailA": active, "detailB": 0},
                                             f"the gate denies the deployment: deployment {active} is still rolling out "
                                             f"in this environment (another account's, or one with its own rollout state)")
        deployment_id = ledger.start_deployment(digest, service, env, steps[0])
        log(f"deployment {deployment_id} started: {service} {digest} to {env} at {steps[0]}%")
    state = new_state(deployment_id=deployment_id, digest=digest, artifact=artifact, service=service, env=env,
                      steps=steps, interval=interval, config_raw=config.raw, analysis=str(Path(config_path).resolve()),
                      traffic_cmd=traffic_cmd, severity=severity)
    lock = store.lock(deployment_id)
    try:
        store.save(state)
        return Controller(ledger, store, state, log).drive()
    finally:
        lock.close()


def _orphaned_start(ledger, store: Store, digest: str, service: str, env: str, first_step: int) -> int | None:
    """The deployment a killed controller started but never saved state for: the target's active
    rollout, of this artifact, started by this account at the first step, with no state file. Running
    the same `rollout run` again then carries it on instead of being refused (RolloutInProgress)."""
    from shipledger._internal.names import parse_digest

    active = ledger.target_state(service, env).active
    if not active or store.state_path(active).exists() or ledger.deployment(active).percent != first_step:
        return None
    (started,) = ledger.events("DeploymentStarted", _id_topic(active))
    ours = started["deployer"] == ledger.signer_address and bytes(started["digest"]) == parse_digest(digest)
    return active if ours else None


def resume(ledger, store: Store, deployment_id: int, log: Callable[[str], None], rejudge: bool = False) -> dict:
    """Continue a paused or killed rollout from its state. After a marginal verdict a person's resume
    means "go on" (the next step, or completion after 100%), unless `rejudge`: judge the step again on
    a fresh window. After an error the failed action is retried."""
    lock = store.lock(deployment_id)
    if lock is None:
        raise UsageError(f"rollout {deployment_id} is being driven by another controller right now")
    try:
        state = store.load(deployment_id)
        phase = state["phase"]
        if phase in TERMINAL:
            raise UsageError(f"rollout {deployment_id} is {phase}: nothing to resume")
        controller = Controller(ledger, store, state, log)
        accepted = phase == "paused" and state["pause_reason"] == "marginal" and not rejudge and \
            ledger.deployment(deployment_id).canary == "pass"
        if accepted:  # a person recorded a pass after the marginal verdict (`canary record`): go on
            last = state["step_index"] + 1 == len(state["steps"])
            log(f"rollout {deployment_id}: resumed after a marginal verdict that a later pass on the ledger overrides; "
                + ("completing" if last else f"promoting to {state['steps'][state['step_index'] + 1]}%"))
            controller._save(phase="completing" if last else "promoting", pause_reason=None, paused_because=None,
                             step_index=state["step_index"] + (0 if last else 1),
                             notes=[*state["notes"], (f"marginal verdict at {controller.percent}% followed by a pass "
                                                      f"recorded on the ledger; resumed at {now_iso()}")])
        elif phase == "paused":
            # A traffic command or a step the ledger refused is tried again; otherwise (an error
            # judging, a marginal verdict: the ledger needs a later pass) the step is judged again.
            retry = state.get("paused_in") if state.get("paused_in") in ("promoting", "completing") else "judging"
            log(f"rollout {deployment_id}: resuming at {controller.percent}% ({retry})")
            controller._save(phase=retry, pause_reason=None, paused_because=None, error=None)
        else:
            log(f"rollout {deployment_id}: resuming a stopped controller in phase {phase} at {controller.percent}%")
        return controller.drive()
    finally:
        lock.close()


def abort(ledger, store: Store, deployment_id: int, reason: str, log: Callable[[str], None]) -> dict:
    """Roll back now (traffic 0, rollback on the ledger; no incident: a person decided). With no
    controller running this process does it; otherwise it asks the running one and waits."""
    if not reason.strip():
        raise UsageError("an abort needs a --reason")
    state = store.load(deployment_id)
    if state["phase"] in TERMINAL:
        raise UsageError(f"rollout {deployment_id} is already {state['phase']}")
    lock = store.lock(deployment_id)
    if lock is None:
        store.abort_path(deployment_id).write_text(reason + "\n")
        log(f"rollout {deployment_id}: asked the running controller to abort")
        deadline = time.monotonic() + ABORT_WAIT
        while lock is None:
            state = store.load(deployment_id)
            if state["phase"] in TERMINAL or (state["phase"] == "rolling-back" and state.get("error")):
                store.abort_path(deployment_id).unlink(missing_ok=True)  # acted on, or too late to act
                return state
            if time.monotonic() > deadline:
                raise RolloutError(f"the controller of rollout {deployment_id} did not act on the abort within {ABORT_WAIT}s")
            time.sleep(SLEEP_SLICE)
            lock = store.lock(deployment_id)  # the controller may have stopped (paused) meanwhile
        store.abort_path(deployment_id).unlink(missing_ok=True)
    try:
        state = store.load(deployment_id)  # re-read under the lock
        if state["phase"] in TERMINAL:
            return state
        controller = Controller(ledger, store, state, log)
        controller._save(phase="rolling-back", final_phase="aborted", reason=f"aborted: {reason}", error=None,
                         pause_reason=None)
        log(f"rollout {deployment_id}: aborting: {reason}")
        return controller.drive()
    finally:
        lock.close()


def exit_code(state: dict) -> int:
    """0 completed; 1 stopped on an error (paused, or a roll-back step that failed); 3 paused for a
    person, rolled back, aborted or failed."""
    if state["phase"] == "completed":
        return 0
    if state.get("error"):
        return 1
    return 3


# ---------------------------------------------------------------------- verify

def verify(report_path: str | Path, ledger=None) -> dict:
    """Recompute a saved report's verdict and compare it with the saved result and, given a ledger,
    with the CanaryAnalysisRecorded event carrying the report's sha256. `match` is the answer.
    UnverifiableReport when the report names another judge version than this one."""
    from shipledger.delivery.judge import JUDGE_VERSION, JudgeConfig, judge

    path = Path(report_path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"report {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"report {path} is not readable JSON: {exc}") from None
    if not isinstance(report, dict) or report.get("kind") != REPORT_KIND:
        raise UsageError(f"{path} is not a shipledger canary report (kind {REPORT_KIND!r})")
    judged_by = report.get("judge_version")
    if judged_by != JUDGE_VERSION:
        # Only this version's rules are here; recomputing with them would call a genuine report forged
        # (or pass a forged one) whenever the rules changed the verdict.
        named = f"was judged by {judged_by!r}" if judged_by else "names no judge version"
        raise UnverifiableReport(f"cannot recompute {path}: it {named}, and this shipledger's judge is {JUDGE_VERSION!r}, "
                                 "whose rules may classify the same samples differently; verify it with the release that judged it")
    try:
        config = JudgeConfig.from_dict(report["config"])
        baseline, canary, saved = report["baseline"], report["canary"], report["result"]
        judgement = judge(baseline, canary, config)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"report {path} is malformed: {exc.__class__.__name__}: {exc}") from None
    digest = sha256_file(path)
    recomputed = {"score": float(judgement.score), "verdict": judgement.verdict}
    problems = []
    if saved.get("verdict") != recomputed["verdict"] or not _same_score(saved.get("score"), recomputed["score"]):
        problems.append(f"recomputed {recomputed['verdict']} (score {recomputed['score']:.2f}) but the report says "
                        f"{saved.get('verdict')} (score {saved.get('score')})")
    out = {"report": str(path), "digest": digest, "deployment_id": report.get("deployment_id"),
           "percent": report.get("percent"), "judge_version": report.get("judge_version"),
           "saved": {"score": saved.get("score"), "verdict": saved.get("verdict")}, "recomputed": recomputed,
           "chain": None}
    if ledger is not None:
        out["chain"] = _check_chain(ledger, report, digest, recomputed, problems)
    out["problems"] = problems
    out["match"] = not problems
    return out


def _same_score(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=SCORE_TOLERANCE)
    except (TypeError, ValueError):
        return False


def _check_chain(ledger, report: dict, digest: str, recomputed: dict, problems: list[str]) -> dict:
    deployment_id = report.get("deployment_id")
    events = recorded_analyses(ledger, deployment_id if isinstance(deployment_id, int) and deployment_id > 0 else None)
    matching = [e for e in events if e["reportDigest"] == digest]
    if not matching:
        problems.append(f"no verdict on chain carries this report's digest {digest} "
                        "(the report was changed after it was recorded, or never recorded)")
        return {"recorded": False}
    event = matching[0]
    chain = {"recorded": True, "deployment_id": event["id"], "percent": event["percent"],
             "score": event["scoreBasisPoints"] / 100, "verdict": event["verdict"], "judge": event["judge"],
             "report_uri": event["reportUri"], "recorder": event["recorder"], "block_number": event["block_number"]}
    if event["verdict"] != recomputed["verdict"]:
        problems.append(f"the chain recorded {event['verdict']} but the report recomputes to {recomputed['verdict']}")
    if event["scoreBasisPoints"] != round(recomputed["score"] * 100):
        problems.append(f"the chain recorded score {event['scoreBasisPoints'] / 100:.2f} "
                        f"but the report recomputes to {recomputed['score']:.2f}")
    if event["judge"] != report.get("judge_version"):
        problems.append(f"the chain names judge {event['judge']!r}, the report {report.get('judge_version')!r}")
    if event["id"] != deployment_id:
        problems.append(f"the chain recorded it for deployment {event['id']}, the report names {deployment_id}")
    return chain

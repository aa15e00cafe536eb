#!/usr/bin/env python3
"""`make demo`: a release story played on the embedded devnet, told in plain sentences.

v1 is registered and denied, approved by two organisations (one approval signed offline and
submitted by someone else), rolled out 10% -> 50% -> 100% with canary verdicts; v2 goes the same
way; a severity-1 incident freezes v3, v2 is rolled back to v1, the incident resolves with a
postmortem. Then the rollout controller takes over: v3 rolls out judged by the canary judge and
completes, v4's canary is sick and is rolled back on its own with an incident opened. Compliance
closes the story from the index: trace, audit, a verified export and the DORA report. The devnet
stays up afterwards for the CLI to explore.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shipledger import Ledger
from shipledger.network.devnet import devnet_up
from shipledger.digests import digest_path
from shipledger.errors import ShipledgerError
from shipledger.models import ArtifactSpec

ENV = "prod"


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def chapter(text: str) -> None:
    print(f"\n== {text}", flush=True)


def build_artifact(workdir: Path, service: str, version: str) -> tuple[str, str]:
    """A stand-in for a build: a file whose bytes depend on the version; returns (digest, commit)."""
    path = workdir / f"{service}-{version}.tar"
    path.write_bytes(f"{service} {version}\n".encode() * 1000)
    commit = hashlib.sha1(f"{service}@{version}".encode()).hexdigest()
    return digest_path(path), commit


def fresh_service(registrar: Ledger) -> str:
    """'payments', or payments-N when an earlier demo on this devnet already used the name."""
    name, n = "payments", 1
    while registrar.digest_of(name, "1.0.0") is not None:
        n += 1
        name = f"payments-{n}"
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description="the shipledger demo on the embedded devnet")
    parser.add_argument("--port", type=int, default=8545, help="the devnet's loopback port (make demo PORT=...)")
    port = parser.parse_args().port
    started = time.monotonic()
    chapter(f"Starting the devnet (anvil) on port {port} with the shipledger suite and a three-organisation consortium")
    try:
        state = devnet_up(port=port)
    except ShipledgerError as exc:  # port taken, a devnet on another port, no anvil: say so, no traceback
        sys.exit(f"demo: {exc}")
    if state["reused"]:
        say("(the devnet already running on that port, reused)")
    url, book, accounts = state["rpc_url"], state["deployment"], state["accounts"]
    as_key = lambda part: Ledger.connect(url, book, signer=part["private_key"])  # noqa: E731
    admin, registrar = as_key(accounts["admin"]), as_key(accounts["registrar"])
    deployer, responder = as_key(accounts["deployer"]), as_key(accounts["responder"])
    acme, globex, _ = (as_key(a) for a in accounts["approvers"])
    outsider = as_key(accounts["outsider"])
    say(f"chain {state['chain_id']} at {url}; address book {book}")

    service = fresh_service(registrar)
    admin.set_policy(service, ENV, threshold=2, min_organisations=2, ttl=7 * 86400, freeze_severity=2)
    say(f"policy for {service} in {ENV}: 2 approvals from 2 organisations, valid 7 days, "
        "frozen by open incidents of severity 1-2")

    workdir = Path(tempfile.mkdtemp(prefix="shipledger-demo-"))
    deployments: dict[str, int] = {}
    deployments_digest: dict[str, str] = {}

    def release(version: str) -> str:
        digest, commit = build_artifact(workdir, service, version)
        registrar.register(ArtifactSpec(digest=digest, service=service, version=version, commit=commit,
                                        committed_at=int(time.time()) - 3600, uri=f"oci://registry.local/{service}:{version}"))
        say(f"{service} {version} registered by the CI pipeline as {digest[:23]}...")
        return digest

    def gate(digest: str, version: str) -> bool:
        result = registrar.gate(digest, service, ENV)
        from shipledger.errors import gate_sentence

        say(f"gate for {version} in {ENV}: {'ALLOWED' if result.allowed else 'DENIED'} - {gate_sentence(result.reason, result.details)}")
        return result.allowed

    def approve(digest: str, version: str) -> None:
        acme.approve(digest, service, ENV, comment=f"{version} reviewed")
        say(f"acme's approver approved {version} with a transaction from their wallet")
        signed = globex.sign_approval(digest, service, ENV)
        say(f"globex's approver signed an EIP-712 approval offline (nonce {str(signed.nonce)[:8]}..., no RPC needed)")
        outsider.submit_approvals([signed])
        say("an account with no role submitted that signature; the contract checked it")

    def roll_out(digest: str, version: str) -> int:
        deployment = deployer.start_deployment(digest, service, ENV, percent=10)
        say(f"deployment {deployment}: {version} canary at 10%")
        for percent in (50, 100):
            deployer.record_analysis(deployment, 97.5, "pass", judge="demo-judge/1")
            deployer.promote(deployment, percent)
            say(f"canary verdict pass (score 97.5); promoted to {percent}%")
        deployer.complete(deployment)
        say(f"deployment {deployment} completed: {version} is live")
        return deployment

    for version in ("1.0.0", "2.0.0"):
        chapter(f"Releasing {version}")
        digest = release(version)
        gate(digest, version)
        approve(digest, version)
        gate(digest, version)
        deployments[version] = roll_out(digest, version)
        deployments_digest[version] = digest

    chapter("An incident freezes the next release")
    v3 = release("3.0.0")
    approve(v3, "3.0.0")
    incident = responder.open_incident(service, ENV, 1, "checkout errors up 40% after 2.0.0",
                                       suspects=[deployments["2.0.0"]])
    say(f"on-call opened incident {incident} (severity 1) naming deployment {deployments['2.0.0']} as suspect")
    gate(v3, "3.0.0")

    chapter("Rolling back and resolving")
    restored = deployer.rollback(deployments["2.0.0"], "incident %d" % incident)
    say(f"deployment {deployments['2.0.0']} rolled back: deployment {restored} (1.0.0) is live again")
    responder.acknowledge(incident)
    responder.mitigate(incident, rollback_id=deployments["2.0.0"])
    postmortem = workdir / "postmortem.md"
    postmortem.write_text("# Checkout errors\nCause: connection pool size halved in 2.0.0.\n")
    responder.resolve(incident, digest_path(postmortem), "https://wiki.local/postmortems/checkout-errors")
    say(f"incident {incident} acknowledged, mitigated by the rollback, resolved with a postmortem")
    gate(v3, "3.0.0")

    chapter("The rollout controller takes over: each step judged against the baseline")
    admin.grant_role("RESPONDER", accounts["deployer"]["address"])  # so the controller can open an incident on a bad canary
    say("the deployer's account may now also open incidents (RESPONDER)")
    cli = Cli(url, book, accounts["deployer"]["private_key"])
    samples = SampleSource(workdir)
    config = samples.config()
    samples.set(canary_latency_ms=101.0, canary_errors=0)
    run = cli.json("rollout", "run", "--digest", v3, "--service", service, "--env", ENV, "--steps", "50,100",
                   "--interval", "1s", "--analysis", config, "--state-dir", workdir / "rollouts")
    say(f"3.0.0: canary as fast as the baseline, no errors -> rollout {run['deployment_id']} {run['phase']} at {run['percent']}%")
    v4 = release("4.0.0")
    approve(v4, "4.0.0")
    samples.set(canary_latency_ms=180.0, canary_errors=4)
    run = cli.json("rollout", "run", "--digest", v4, "--service", service, "--env", ENV, "--steps", "50,100",
                   "--interval", "1s", "--analysis", config, "--state-dir", workdir / "rollouts", check=False)
    say(f"4.0.0: canary 80% slower with errors -> rollout {run['deployment_id']} {run['phase']}; "
        f"incident {run.get('incident_id')} opened naming it")
    report = sorted((workdir / "rollouts" / str(run["deployment_id"])).glob("step-*.json"))[-1]
    verified = cli.json("canary", "verify", report)
    say(f"anyone can recompute that verdict from its saved report: {verified['recomputed']['verdict']} "
        f"(score {verified['recomputed']['score']:.1f}), matching the chain: {verified['match']}")
    suspects = cli.json("incident", "suspects", str(run["incident_id"]), "--db", workdir / "index.sqlite")
    top = suspects["suspects"][0]
    say(f"incident suspects ranks deployment {top['deployment_id']} first (score {top['score']}):")
    for reason in top["reasons"]:
        say(f"  {reason}")

    chapter("Compliance: from the index, checked against the chain")
    db = ("--db", workdir / "index.sqlite")
    trace = cli.json("trace", "--digest", deployments_digest["2.0.0"], "--service", service, *db)
    say(f"trace of 2.0.0: {len(trace['steps'])} steps from registration to rollback, each with its transaction")
    audit = cli.json("audit", "--full", *db, check=False)
    say(f"audit: {len(audit['findings'])} findings; every deployment start re-checked against the policy in force, "
        "the contracts' code against this repository's build, and the index against the chain")
    export = workdir / "history.jsonl"
    cli.json("export", "--format", "jsonl", "--out", export, "--service", service, *db)
    checked = cli.json("verify-export", export)
    say(f"exported {checked['lines']} records to {export}; verify-export re-fetched each one: "
        f"{'all match' if checked['ok'] else 'MISMATCH'}")
    report_path = workdir / "dora.html"
    dora = cli.json("report", "--out", report_path, "--service", service, *db)
    say(f"DORA report written to {report_path}: {dora['deployments']} production deployments, "
        f"change failure rate {dora['change_failure_rate']:.0%}")

    chapter(f"History of {service} (from the index)")
    sys.stdout.flush()
    cli.run("history", "--service", service, *db)
    print(f"\nDone in {time.monotonic() - started:.1f}s. The devnet is still running: try "
          f"`.venv/bin/shipledger status {service} {ENV}`, or stop it with `.venv/bin/shipledger devnet down`.")


class Cli:
    """The `shipledger` command line against the demo's devnet, signed by one key (from the environment)."""

    def __init__(self, url: str, book: str, key: str):
        self.env = {**os.environ, "SHIPLEDGER_RPC_URL": url, "SHIPLEDGER_DEPLOYMENT": str(book), "SHIPLEDGER_PRIVATE_KEY": key}

    def run(self, *args) -> None:
        subprocess.run([sys.executable, "-m", "shipledger.cli", *map(str, args)], env=self.env, check=True)

    def json(self, *args, check: bool = True) -> dict:
        """Run with --json; exit 3 (a denial, a rolled-back rollout, audit findings) is an answer, not a crash."""
        proc = subprocess.run([sys.executable, "-m", "shipledger.cli", *map(str, args), "--json"], env=self.env,
                              capture_output=True, text=True)
        if proc.returncode not in ((0,) if check else (0, 3)):
            sys.exit(f"demo: shipledger {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        return json.loads(proc.stdout)


class SampleSource:
    """Baseline and canary metrics for the controller's command source: two JSON files the demo writes."""

    def __init__(self, workdir: Path):
        self.dir = workdir

    def config(self) -> Path:
        path = self.dir / "analysis.json"
        path.write_text(json.dumps({
            "source": {"command": f"cat {self.dir}/samples-{{scope}}.json"},
            "metrics": [
                {"name": "latency_ms", "direction": "increase", "group": "latency",
                 "effect_size": {"allowed_increase": 1.1, "critical_increase": 1.5}},
                {"name": "errors", "direction": "increase", "group": "errors", "test": "rate", "critical": True,
                 "nan_strategy": "replace"},
            ],
        }, indent=2))
        return path

    def set(self, canary_latency_ms: float, canary_errors: int) -> None:
        rng = random.Random(7)
        noisy = lambda mean: [round(rng.gauss(mean, mean * 0.03), 2) for _ in range(30)]  # noqa: E731
        errors = [0] * 30
        for i in range(canary_errors):
            errors[i * 7 % 30] += 1
        for scope, data in (("baseline", {"latency_ms": noisy(100.0), "errors": [0] * 30}),
                            ("canary", {"latency_ms": noisy(canary_latency_ms), "errors": errors})):
            (self.dir / f"samples-{scope}.json").write_text(json.dumps(data))

if __name__ == "__main__":
    main()

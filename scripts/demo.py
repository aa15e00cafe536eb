#!/usr/bin/env python3
"""`make demo`: a release story played on a chain, told in plain sentences.

`--network anvil` (the default) plays it on the embedded devnet: a consortium of three organisations
(acme, globex, initech) governed 2 of 3, a weakening change waits 60 s, and the starting policy is set
in its bootstrap. `--network consortium` (`make demo NETWORK=consortium`) plays it on the consortium
network of `shipledger network up`: 4 geth Clique validators, one per organisation (org1..org4),
governed 3 of 4, with 1 s blocks. A real chain's clock cannot be moved, so there the starting policy
goes through governance with a 10 s delay that the demo waits out for real. (The issue called this
network qbft; GoQuorum cannot be built here, so the engine is Clique and the name is consortium.)

The story, in the devnet's names: acme's steward proposes a tighter policy and globex's approves it
(on the consortium org2's and org3's): it executes at once. v1 is registered and denied, approved by two
organisations (one approval signed offline and submitted by someone else), rolled out 10% -> 50% ->
100% with canary verdicts; v2 goes the same way; a severity-1 incident freezes v3 and initech vetoes
it, v2 is rolled back to v1. Then the one-key attack on suite v1 is replayed step by step, and each
step is refused. Responders of two organisations lift the freeze. Then the rollout controller takes over: v3 rolls out judged by the canary judge and
completes, v4's canary is sick and is rolled back on its own with an incident opened. Compliance
closes the story from the index: trace, audit, a verified export and the DORA report. The chain
stays up afterwards for the CLI to explore, and so does the web app (`shipledger serve`) on it: the
demo ends by printing its URL.
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
from eth_account import Account

from shipledger.client import policy_input, role_id
from shipledger.network.devnet import dev_private_keys, devnet_up, rpc_call
from shipledger.digests import digest_path
from shipledger.errors import ContractRevert, ShipledgerError
from shipledger.models import ArtifactSpec

ENV = "prod"
SERVICE = "payments"
WEEK = 7 * 86400
# Where the story starts, set in the devnet's bootstrap (a policy where there was none weakens, so
# through governance it would wait the 60 s delay): 2 approvals from 2 organisations, valid 7 days,
# frozen by open incidents of severity 1-2, a freeze lifted by one responder.
STARTING_POLICY = dict(threshold=2, min_organisations=2, ttl=WEEK, freeze_severity=2, resolve_quorum=1)
TIGHTER_POLICY = {**STARTING_POLICY, "ttl": 3 * 86400, "resolve_quorum": 2}
DEPLOYER_INDEX = 2  # DEV_ROLES: the deployer, in acme; the demo's bootstrap also makes it a responder
NETWORKS = ("anvil", "consortium")
# Seconds a weakening change waits on the consortium the demo starts: its clock is real, so the demo
# waits them out (the devnet keeps its 60 s and skips them with evm_increaseTime).
CONSORTIUM_GOVERNANCE_DELAY = 10


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
    name, n = SERVICE, 1
    while registrar.record_of(name, "1.0.0") is not None:
        n += 1
        name = f"{SERVICE}-{n}"
    return name


def refused(who: str, attempt: str, why: str, action) -> None:
    """Run one step of the attack; it must be refused. Says who tried what, why the suite refuses it,
    and the ledger's error (with its sentence, where the SDK has one)."""
    try:
        action()
    except ContractRevert as exc:
        sentence = "" if exc.sentence.startswith(exc.error_name) else f": {exc.sentence}"
        say(f"{who} tries to {attempt}: REFUSED, {why} ({exc.error_name}{sentence})")
        return
    sys.exit(f"demo: {who} could {attempt}: the suite let one key do it")


def send(ledger: Ledger, fn):
    """Send a raw contract call as this ledger's key (the attack calls functions no SDK method wraps
    for that key, because only governance or a steward may call them)."""
    return ledger._tx(fn)


def starting_point(url: str, state: dict, service: str, stewards: list[Ledger], outsider: Ledger) -> None:
    """A chain whose bootstrap did not set them (the consortium, a devnet this demo did not start, one
    an earlier demo used up) lacks the starting policy for `service`, or the deployer's RESPONDER
    role: the stewards of K organisations propose and approve them. Both weaken, so they wait the
    governance delay: the devnet's clock skips it (evm_increaseTime), the consortium's is waited out."""
    deployer = state["accounts"]["deployer"]["address"]
    changes = []
    if stewards[0].policy(service, ENV) is None:
        changes.append(stewards[0].change_policy(service, ENV, **STARTING_POLICY))
    if not stewards[0].has_role("RESPONDER", deployer):
        changes.append(stewards[0].change_role(True, "RESPONDER", deployer))
    if not changes:
        return
    delay, needed = state["governance"]["delay"], state["governance"]["organisations_needed"]
    say(f"(this {state['network_word']} lacks the demo's starting point for {service}: the stewards of "
        f"{and_list([s['org'] for s in state['accounts']['stewards'][:needed]])} propose and approve it; it weakens, so it waits "
        f"{delay} s, " + ("for real on this chain)" if state["real_clock"] else "which the dev chain's clock skips)"))
    ids = [stewards[0].propose(change).id for change in changes]
    executable_at = 0
    for proposal_id in ids:
        for steward in stewards[1:needed]:
            executable_at = max(executable_at, steward.approve_proposal(proposal_id).executable_at)
    if state["real_clock"]:
        from shipledger.network.consortium import wait_for_block_time

        wait_for_block_time(url, executable_at)
    else:
        rpc_call(url, "evm_increaseTime", [delay])
        rpc_call(url, "evm_mine")
    for proposal_id in ids:
        outsider.execute_proposal(proposal_id)


def and_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def start_chain(network: str, port: int) -> dict:
    """The chain the story plays on, with its accounts: the devnet (anvil) on `port`, or the
    consortium network, the one `shipledger network up` already runs from .shipledger/network if any
    (state["reused"] says which). state["real_clock"]: the chain's time cannot be moved (geth), so a
    governance delay is waited out rather than skipped."""
    if network == "anvil":
        chapter(f"Starting the devnet (anvil) on port {port} with the shipledger suite and a three-organisation consortium")
        deployer_address = Account.from_key(dev_private_keys(DEPLOYER_INDEX + 1)[DEPLOYER_INDEX]).address
        state = devnet_up(port=port, policies=((SERVICE, ENV, STARTING_POLICY),),
                          roles=(("RESPONDER", "", deployer_address),))
        return {**state, "network": network, "network_word": "devnet", "down": "devnet down", "real_clock": False}
    from shipledger.network.consortium import NetworkError, NetworkPlan, network_up, running_network

    chapter("Starting the consortium network (`shipledger network up`: geth Clique, one validator per organisation) "
            "with the shipledger suite")
    try:
        state = {**running_network(), "reused": True}
    except NetworkError:  # none runs: start one (a broken folder is reported by network_up)
        state = {**network_up(NetworkPlan(governance_delay=CONSORTIUM_GOVERNANCE_DELAY)), "reused": False}
    return {**state, "network": network, "network_word": "network", "down": "network down",
            "real_clock": state["engine"] == "clique"}  # `network up --engine anvil` runs anvil's clock


def network_name(text: str) -> str:
    """An argparse type: the chains the demo plays on. qbft, the issue's name, is refused with why:
    one name for one thing."""
    if text == "qbft":
        raise argparse.ArgumentTypeError("qbft: the consortium engine here is geth Clique (GoQuorum cannot be built: "
                                         "the Go module proxy answers 403); use --network consortium")
    if text not in NETWORKS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a network: use one of {', '.join(NETWORKS)}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description="the shipledger demo on the embedded devnet or the consortium network")
    parser.add_argument("--network", type=network_name, default="anvil",
                        help="anvil (the devnet, default) or consortium (4 geth Clique validators; needs `make engine`)")
    parser.add_argument("--port", type=int, default=8545, help="the devnet's loopback port (make demo PORT=...; anvil only)")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        state = start_chain(args.network, args.port)
    except ShipledgerError as exc:  # port taken, a devnet on another port, no anvil or geth: say so, no traceback
        sys.exit(f"demo: {exc}")
    if state["reused"]:
        say(f"(the {state['network_word']} already running " + ("on that port" if args.network == "anvil" else "from .shipledger/network")
            + ", reused)")
    url, book, accounts = state["rpc_url"], state["deployment"], state["accounts"]
    as_key = lambda part: Ledger.connect(url, book, signer=part["private_key"])  # noqa: E731
    registrar = as_key(accounts["registrar"])
    deployer, responder = as_key(accounts["deployer"]), as_key(accounts["responder"])
    approvers = [as_key(a) for a in accounts["approvers"]]  # one per organisation, in the organisations' order
    stewards = [as_key(a) for a in accounts["stewards"]]
    outsider = as_key(accounts["outsider"])
    orgs = [a["org"] for a in accounts["approvers"]]  # acme, globex, initech on the devnet; org1..org4 on the consortium
    governance = state["governance"]
    needed = governance["organisations_needed"]
    say(f"chain {state['chain_id']} at {url}; address book {book}")
    if args.network == "consortium":
        sealing = (f"{len(state['nodes'])} validators sealing a block every {state['block_period']} s" if state["real_clock"]
                   else "one anvil (`network up --engine anvil`) mining on demand")
        say(f"{sealing} for the organisations {', '.join(orgs)}")
    if len(orgs) < 3:  # a network someone started with fewer: the story needs an approver and a steward in a third
        sys.exit(f"demo: this {state['network_word']} has {len(orgs)} organisations and the story needs 3 or more: "
                 f"stop it with `shipledger {state['down']}`")
    say(f"governance: any change to organisations, roles or policies needs the stewards of "
        f"{needed} of the {len(orgs)} organisations; one that weakens anything also waits "
        f"{governance['delay']} s, during which any organisation can cancel it. The deploying key holds no role.")

    service = fresh_service(registrar)
    starting_point(url, state, service, stewards, outsider)
    say(f"policy for {service} in {ENV}: 2 approvals from 2 organisations, valid 7 days, frozen by open incidents "
        "of severity 1-2, a freeze lifted by one responder")

    chapter("Governance: a steward tightens the policy")
    proposal = stewards[0].set_policy(service, ENV, **TIGHTER_POLICY)
    say(f"{orgs[0]}'s steward proposes: approvals valid 3 days, and lifting a freeze needs responders of 2 organisations "
        f"(proposal {proposal.id}: {proposal.approvals} of {proposal.needed} organisations, {proposal.state})")
    for steward in stewards[1:needed]:
        proposal = steward.approve_proposal(proposal.id)
    policy = registrar.policy(service, ENV)
    approving = f"{orgs[1]}'s steward approves" if needed == 2 else f"the stewards of {and_list(orgs[1:needed])} approve"
    say(f"{approving}: it only tightens, so it executed at once ({proposal.state}; policy version "
        f"{policy.version}, ttl {policy.ttl // 86400} days, resolve quorum {policy.resolve_quorum})")

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
        # valid one day: the registry refuses a deadline beyond the policy's ttl (3 days) after signing
        signed = approvers[1].sign_approval(digest, service, ENV, deadline=int(time.time()) + 86400)
        say(f"{orgs[1]}'s approver signed an EIP-712 approval offline (nonce {str(signed.nonce)[:8]}..., valid 1 day, "
            "no RPC needed)")
        # Signed first: the block of this transaction is then no older than the signature, so the
        # submission below is estimated (and mined) as a vote, never as one "signed in the future".
        approvers[0].approve(digest, service, ENV, comment=f"{version} reviewed")
        say(f"{orgs[0]}'s approver approved {version} with a transaction from their wallet")
        _, skipped = outsider.submit_approvals([signed])
        if skipped:
            sys.exit(f"demo: the signed approval was skipped: {skipped}")
        say(f"an account with no role submitted {orgs[1]}'s signature; the contract checked it")

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

    chapter(f"An incident freezes the next release, and {orgs[2]} vetoes it")
    v3 = release("3.0.0")
    approve(v3, "3.0.0")
    incident = responder.open_incident(service, ENV, 1, "checkout errors up 40% after 2.0.0",
                                       suspects=[deployments["2.0.0"]])
    say(f"on-call ({accounts['responder']['org']}) opened incident {incident} (severity 1) naming deployment {deployments['2.0.0']} as suspect")
    approvers[2].reject(v3, service, ENV, "3.0.0 ships the same pool change; wait for the postmortem")
    say(f"{orgs[2]}'s approver rejected 3.0.0: a veto, until withdrawn")
    restored = deployer.rollback(deployments["2.0.0"], "incident %d" % incident)
    say(f"deployment {deployments['2.0.0']} rolled back: deployment {restored} (1.0.0) is live again")
    responder.acknowledge(incident)
    responder.mitigate(incident, rollback_id=deployments["2.0.0"])
    say(f"incident {incident} acknowledged and mitigated by that rollback")
    gate(v3, "3.0.0")

    chapter("The one-key attack on suite v1, replayed: each step is refused")
    say("In suite v1 one ADMIN key could add two shell organisations with puppet approvers, remove the vetoing "
        "approver, grant itself DEPLOYER and RESPONDER, resolve the incident and ship. Now each step is refused:")
    deployer_key = accounts["deployer"]["address"]
    reg = deployer.registry.functions
    refused("the deployer key", "add a shell organisation", "only governance adds organisations",
            lambda: send(deployer, reg.addOrganisation("shell-1", deployer_key)))
    refused(f"{orgs[0]}'s steward", f"make a member of {accounts['responder']['org']} an approver",
            "a steward manages only its own organisation",
            lambda: stewards[0].set_approver(accounts["responder"]["address"], True))
    refused(f"{orgs[0]}'s steward", f"remove {orgs[2]}'s vetoing approver", "a steward manages only its own organisation",
            lambda: stewards[0].remove_member(accounts["approvers"][2]["address"]))
    refused("the deployer key", "grant itself REGISTRAR", "nobody holds the admin role: roles are granted by governance",
            lambda: send(deployer, reg.grantRole(role_id("REGISTRAR"), deployer_key)))
    weaker = {**TIGHTER_POLICY, "threshold": 1, "min_organisations": 1}
    refused("the deployer key", "lower the policy to 1 approval", "only governance sets policies",
            lambda: send(deployer, reg.setPolicy(service, ENV, policy_input(service, ENV, **weaker))))
    lower = stewards[0].set_policy(service, ENV, **weaker)
    for steward in stewards[1:needed]:
        lower = steward.approve_proposal(lower.id)
    say(f"{orgs[0]}'s steward proposes 1 approval and {and_list(orgs[1:needed])} agree{'s' if needed == 2 else ''}: "
        f"it weakens, so proposal {lower.id} is {lower.state}, executable only after {governance['delay']} s")
    stewards[needed].cancel_proposal(lower.id)  # an organisation that did not approve it
    say(f"{orgs[needed]}'s steward cancels it: one organisation is enough to stop a weakening change "
        f"(proposal {lower.id} {registrar.proposal(lower.id).state}; policy version {registrar.policy(service, ENV).version})")
    alone = responder.resolve(incident)
    frozen = registrar.open_incident_counts(service, ENV)[1]
    say(f"{accounts['responder']['org']}'s responder resolves incident {incident} alone: {alone.organisations} of {alone.needed} organisations, "
        f"so it stays open ({frozen} severity-1 incident open) and the freeze stays until a responder of another "
        "organisation agrees")
    refused(f"{accounts['responder']['org']}'s responder", "resolve it a second time", "each organisation counts once",
            lambda: responder.resolve(incident))
    refused("the deployer key", "start 3.0.0", "the gate still says no", lambda: deployer.start_deployment(v3, service, ENV))

    chapter("The consortium lifts the freeze")
    postmortem = workdir / "postmortem.md"
    postmortem.write_text("# Checkout errors\nCause: connection pool size halved in 2.0.0.\n")
    done = deployer.resolve(incident, digest_path(postmortem), "https://wiki.local/postmortems/checkout-errors")
    say(f"{accounts['deployer']['org']}'s on-call resolves it too, with the postmortem: {done.organisations} of {done.needed} organisations, "
        f"{'resolved' if done.resolved else 'still open'}")
    approvers[2].withdraw(v3, service, ENV)
    say(f"{orgs[2]}'s approver read the postmortem and withdrew the veto")
    gate(v3, "3.0.0")

    chapter("The rollout controller takes over: each step judged against the baseline")
    say("the deployer's account also holds RESPONDER (granted at the start), so the controller opens an incident on a bad canary")
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
    web = web_app(url, book, accounts["outsider"]["private_key"])
    print(f"\nDone in {time.monotonic() - started:.1f}s. The {state['network_word']} is still running: try "
          f"`.venv/bin/shipledger status {service} {ENV}`, or stop it with `.venv/bin/shipledger {state['down']}`.")
    print(f"The web app for this {state['network_word']}: {web['url']} (Inbox, History, Status, Governance, Compliance; relay on). "
          f"Stop it with `kill {web['pid']}`.", flush=True)


SERVE_STATE = Path(".shipledger") / "serve.json"  # the web app the demo left running: pid, url, rpc_url
WEB_PORT = 8600  # `shipledger serve`'s default; another free port when it is taken


def web_app(url: str, book: str, relayer_key: str) -> dict:
    """`shipledger serve` for the demo's devnet, left running in the background like the devnet: the
    one a previous demo started when it still answers for this devnet, else a new one (the relay on,
    with the outsider's key: it needs no role). {"pid", "url"}; exits with a message if it never gets ready."""
    import urllib.request

    from shipledger.network.devnet import free_port, port_is_free

    def ready(web_url: str) -> bool:
        try:
            with urllib.request.urlopen(web_url + "readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    if SERVE_STATE.is_file():
        known = json.loads(SERVE_STATE.read_text())
        if known.get("rpc_url") == url and ready(known["url"]):
            return known
    port = WEB_PORT if port_is_free(WEB_PORT) else free_port()
    web_url = f"http://127.0.0.1:{port}/"
    SERVE_STATE.parent.mkdir(parents=True, exist_ok=True)
    log = (SERVE_STATE.parent / "serve.log").open("w")
    env = {**os.environ, "SHIPLEDGER_RPC_URL": url, "SHIPLEDGER_DEPLOYMENT": str(book), "SHIPLEDGER_DEMO_RELAYER_KEY": relayer_key}
    env.pop("SHIPLEDGER_PRIVATE_KEY", None)  # the server holds no approver's key
    process = subprocess.Popen([sys.executable, "-m", "shipledger.cli", "serve", "--listen", f"127.0.0.1:{port}",
                                "--db", str(SERVE_STATE.parent / "serve-index.sqlite"),
                                "--relayer-key-env", "SHIPLEDGER_DEMO_RELAYER_KEY"],
                               env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 90
    while not ready(web_url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"demo: the web app did not start; see {SERVE_STATE.parent / 'serve.log'}")
        time.sleep(0.3)
    state = {"pid": process.pid, "url": web_url, "rpc_url": url}
    SERVE_STATE.write_text(json.dumps(state))
    return state


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

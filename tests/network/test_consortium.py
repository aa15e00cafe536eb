"""`shipledger network` on the consortium engine: 4 geth Clique validators, one per organisation, on
loopback, suite v2 deployed with org1..org4 (K = 3). The tests share one network and run in file
order: its status, the CLI story, one validator down and back, two down (the chain stalls) and back.

Needs the engine `make engine` builds (make test builds it first); skipped, saying so, without it."""

from __future__ import annotations

import json
import time

import pytest

from shipledger import Ledger
from shipledger.network.consortium import CHAIN_ID, NetworkError, find_geth
from support import ENV, Consortium, digest_for, fails, ok, one_line, run, unique

pytestmark = pytest.mark.consortium

BLOCK_PERIOD = 1
GOVERNANCE_DELAY = 2  # seconds of real time a weakening change waits (no clock to move here)


def _engine() -> str | None:
    try:
        return find_geth()
    except NetworkError as exc:
        pytest.skip(str(exc), allow_module_level=True)


_engine()


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Consortium:
    workdir = tmp_path_factory.mktemp("consortium")
    network_dir = workdir / "net"
    started = time.monotonic()
    result = run(["network", "up", "--validators", "4", "--block-period", f"{BLOCK_PERIOD}s", "--dir", network_dir,
                  "--governance-delay", f"{GOVERNANCE_DELAY}s", "--json"], cwd=workdir, timeout=300)
    try:
        info = ok(result)
        print(f"network up: {time.monotonic() - started:.1f}s")
        yield Consortium(workdir=workdir, info=info, port=0, network_dir=network_dir)
    finally:
        run(["network", "down", "--dir", network_dir, "--json"], cwd=workdir, timeout=120)


def wait_until(what: str, check, timeout: float = 60.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(every)


def heads_advance(net: Consortium, urls, blocks: int = 3) -> None:
    start = {url: net.head(url) for url in urls}
    wait_until(f"{blocks} new blocks on {', '.join(urls)}", lambda: all(net.head(u) >= start[u] + blocks for u in urls), 30)


def caught_up(net: Consortium, url: str, witness: str | None = None) -> None:
    """url's node has the block the witness (node 1 unless named) had when asked, with the same hash:
    the same chain, not a fork. Asked until they agree: two signers may seal one height out of turn,
    and such a fork at the tip lasts a block or two."""
    witness = witness or net.info["nodes"][0]["rpc_url"]
    target = net.head(witness)
    wait_until(f"{url} holding block {target} as {witness} does",
               lambda: net.head(url) >= target and net.block_hash(target, url) == net.block_hash(target, witness), 90)


# ============================================================================ up and status


def test_up_prints_devnet_shape_plus_nodes_and_writes_the_book(net):
    info = net.info
    assert {"rpc_url", "deployment", "chain_id", "accounts", "governance", "reused", "nodes"} == set(info)
    assert info["chain_id"] == CHAIN_ID and info["governance"] == {"organisations_needed": 3, "delay": GOVERNANCE_DELAY}
    assert [n["org"] for n in info["nodes"]] == ["org1", "org2", "org3", "org4"]
    assert [s["org"] for s in info["accounts"]["stewards"]] == ["org1", "org2", "org3", "org4"]
    assert len({n["rpc_url"] for n in info["nodes"]}) == 4 and len({n["validator"] for n in info["nodes"]}) == 4
    book = json.loads(net.book.read_text())
    assert book["nodes"] == info["nodes"] and book["max_block_age"] == 30 and book["chain_id"] == CHAIN_ID
    assert set(book["contracts"]) == {"ReleaseRegistry", "Governance", "DeploymentLedger"}
    # the folder is plain files: one key and config per node, a genesis with Clique's extraData
    genesis = json.loads((net.network_dir / "genesis.json").read_text())
    signers = sorted(n["validator"].lower()[2:] for n in info["nodes"])
    assert genesis["extraData"] == "0x" + "00" * 32 + "".join(signers) + "00" * 65
    assert genesis["config"]["clique"]["period"] == BLOCK_PERIOD
    import tomllib

    config = tomllib.loads((net.network_dir / "node1" / "config.toml").read_text())
    assert config["Node"]["P2P"]["NoDiscovery"] is True
    assert len(config["Node"]["P2P"]["StaticNodes"]) == 3


def test_status_shows_every_node_sealing_in_sync(net):
    status = ok(net.network("status", "--json"))
    validators = sorted(n["validator"] for n in net.info["nodes"])
    assert [n["number"] for n in status["nodes"]] == [1, 2, 3, 4]
    for node in status["nodes"]:
        assert node["running"] and node["peers"] == 3 and node["syncing"] is False, node
        assert sorted(node["signers"]) == validators and node["head_age"] <= 5, node
    human = net.network("status")
    assert human.code == 0 and "node 4 org4: head" in human.err


def test_status_and_stop_node_errors(net, tmp_path):
    fails(net.network("stop-node", "5"), 1, "node 5 is out of range", "1 to 4")
    one_line(fails(run(["network", "status", "--dir", tmp_path / "none"], cwd=tmp_path), 1, "no network is running"))
    fails(run(["network", "up", "--engine", "qbft", "--dir", tmp_path / "q"], cwd=tmp_path), 2,
          "GoQuorum cannot be built here", "--engine clique", "besu-config")
    assert not (tmp_path / "q").exists()


# ============================================================================ the CLI story


def test_cli_story_register_approve_gate_deploy_history_audit(net, tmp_path):
    service = unique()
    net.set_policy(service, threshold=2, min_organisations=2)  # governance, waiting out the real 2 s delay
    digest = digest_for(service)
    registered = ok(net.as_("registrar", "register", "--digest", digest, "--service", service, "--version", "1.0.0", "--json"))
    assert registered["tx_hash"]
    gate = ("gate", "--digest", digest, "--service", service, "--env", ENV, "--json")
    assert net.run(*gate).code == 3
    ok(net.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV, "--json", index=0))
    vote = tmp_path / "vote.json"
    ok(net.as_("approver", "approve", "--digest", digest, "--service", service, "--env", ENV, "--sign-only", "--out", vote,
               "--valid-for", "1h", "--json", index=1))
    assert json.loads(vote.read_text())["chain_id"] == CHAIN_ID
    assert ok(net.as_("outsider", "approvals", "submit", vote, "--json"))["submitted"] == 1
    assert ok(net.run(*gate))["allowed"] is True
    started = ok(net.as_("deployer", "deploy", "start", "--digest", digest, "--service", service, "--env", ENV, "--percent", "10", "--json"))
    deployment_id = started["deployment_id"]
    ok(net.as_("deployer", "deploy", "promote", deployment_id, "--percent", "100", "--json"))
    ok(net.as_("deployer", "deploy", "complete", deployment_id, "--json"))
    events = ok(net.run("history", "--service", service, "--json"))["events"]
    kinds = [e["kind"] for e in events]
    assert [k for k in kinds if k in ("registered", "approved", "deployed", "promoted", "completed")] == [
        "registered", "approved", "approved", "deployed", "promoted", "completed"], kinds
    audit = net.run("audit", "--service", service, "--json")
    assert audit.code == 0, audit.err + audit.out


# ============================================================================ faults


def test_one_validator_down_blocks_continue_and_it_catches_up(net):
    urls = [n["rpc_url"] for n in net.info["nodes"]]
    assert ok(net.network("stop-node", "4", "--json")) == {"stopped": 4, "org": "org4"}
    fails(net.network("stop-node", "4"), 1, "node 4 (org4) is already stopped")
    heads_advance(net, urls[:3])
    service = unique()
    assert ok(net.as_("registrar", "register", "--digest", digest_for(service), "--service", service, "--version", "1", "--json"))["tx_hash"]
    assert [n["running"] for n in ok(net.network("status", "--json"))["nodes"]] == [True, True, True, False]
    assert ok(net.network("start-node", "4", "--json"))["started"] == 4
    fails(net.network("start-node", "4"), 1, "already running")
    caught_up(net, urls[3])
    # node 4 was down when it was registered: it has the record now from its peers
    back = Ledger.connect(urls[3], net.book)
    assert back.artifact(digest_for(service), service) is not None


RELEASED = {}  # the artifact the gate allows before the stall, for the tests after it


def test_two_validators_down_the_chain_stalls(net):
    urls = [n["rpc_url"] for n in net.info["nodes"]]
    service = unique()
    RELEASED.update(service=service, digest=net.release(service))
    assert net.run("gate", "--digest", RELEASED["digest"], "--service", service, "--env", ENV).code == 0
    ok(net.network("stop-node", "3", "--json"))
    ok(net.network("stop-node", "4", "--json"))
    # a block or two in flight may still land; then none for 5 block periods
    time.sleep(3 * BLOCK_PERIOD)
    stalled = net.head(urls[0])
    time.sleep(5 * BLOCK_PERIOD)
    assert net.head(urls[0]) == stalled and net.head(urls[1]) == stalled


def test_stalled_chain_gate_fails_closed(net):
    """The gate allowed this artifact before the stall; on a chain that makes no blocks it must not."""
    book = json.loads(net.book.read_text())
    newest = net.block_time()
    wait_until("the head older than max_block_age", lambda: time.time() - newest > book["max_block_age"] + 1,
               book["max_block_age"] + 30, every=1)
    gate = ("gate", "--digest", RELEASED["digest"], "--service", RELEASED["service"], "--env", ENV)
    result = net.run(*gate)
    message = fails(result, 1, "no block for")
    one_line(message)


def test_validators_back_blocks_resume(net):
    urls = [n["rpc_url"] for n in net.info["nodes"]]
    ok(net.network("start-node", "3", "--json"))
    ok(net.network("start-node", "4", "--json"))
    heads_advance(net, urls, blocks=3)
    for url in urls[1:]:
        caught_up(net, url)
    assert net.run("gate", "--digest", RELEASED["digest"], "--service", RELEASED["service"], "--env", ENV).code == 0
    service = unique()
    assert ok(net.as_("registrar", "register", "--digest", digest_for(service), "--service", service, "--version", "1", "--json"))["tx_hash"]

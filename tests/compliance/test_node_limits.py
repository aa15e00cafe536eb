"""Reads against a node with Besu's limits (tests/node_limits.py, a proxy in front of the module's
real anvil): eth_getLogs over a bounded range of blocks, batches the node refuses for their size,
and a node that lags the head another one reported (issue 11, items 6 and 7).

Besu's range limit is 5,000 blocks and the SDK reads LOG_RANGE = 5,000 at a time. anvil takes
minutes to mine 3 x 5,000 empty blocks on a busy machine, so these tests scale both down to 40:
the proxy refuses more than 40 blocks, and LOG_RANGE is set to 40 for the in-process reads."""

from __future__ import annotations

import json

import pytest

from shipledger import Ledger
from shipledger._internal.rpc import Rpc
from shipledger.compliance.index import Endpoint, Index
from shipledger.network.devnet import rpc_call
from node_limits import BATCH_REFUSAL, RANGE_REFUSAL, NodeLimits
from support import ENV, unique

LIMIT = 40  # the node's --rpc-max-logs-range, and the SDK's LOG_RANGE, scaled down from 5,000
WIDE = 50  # empty blocks mined between the story's steps: each gap alone is over the limit


def _mine(dn, blocks: int) -> None:
    rpc_call(dn.rpc_url, "anvil_mine", [hex(blocks)], timeout=120)


def _head(url: str) -> int:
    return int(rpc_call(url, "eth_blockNumber"), 16)


def _rows(index: Index) -> list[tuple]:
    return [tuple(r) for r in index.db.execute("SELECT block_number, log_index, event, args FROM events ORDER BY 1, 2")]


@pytest.fixture(autouse=True)
def small_log_range(monkeypatch):
    monkeypatch.setattr("shipledger._internal.rpc.LOG_RANGE", LIMIT)


@pytest.fixture(scope="module")
def story(dn):
    """A release spread over more than 3 x LIMIT blocks: registered, approved, deployed with a canary
    verdict, an incident about it; and a policy whose prior environment is named by its hash only."""
    service = unique()
    digest = dn.release(service, "1.0.0")
    _mine(dn, WIDE)
    deployer = dn.ledger("deployer")
    deployment = deployer.start_deployment(digest, service, ENV, 10)
    _mine(dn, WIDE)
    deployer.record_analysis(deployment, 97.5, "pass", "sha256:" + "ab" * 32, "https://reports/1", "judge-v1")
    dn.ledger("responder").open_incident(service, ENV, 3, "slow", [deployment], "sha256:" + "cd" * 32, "")
    _mine(dn, WIDE)
    dn.set_policy(service, "prod-eu", threshold=1, prior_environment=ENV)  # through governance (suite v2)
    later = dn.register(service, "2.0.0")
    dn.approve(later, service, "prod-eu", approvers=(0,))  # approved, but never deployed to prod first
    return {"service": service, "digest": digest, "deployment": deployment, "later": later}


def test_the_proxy_refuses_what_besu_refuses(dn, story):
    """The helper itself: a log query over the whole chain, and an oversized batch, are refused."""
    with NodeLimits(dn.rpc_url, max_range=LIMIT, max_batch=4) as node:
        [reply] = Rpc(node.url).replies([("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])])
        assert reply["error"]["message"] == RANGE_REFUSAL
        body = [{"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []} for i in range(5)]
        assert node._answer(body)["error"]["message"] == BATCH_REFUSAL
    assert _head(dn.rpc_url) > 3 * WIDE


def test_sdk_log_reads_stay_within_the_range_limit(dn, story):
    service, digest = story["service"], story["digest"]
    direct = dn.ledger()
    with NodeLimits(dn.rpc_url, max_range=LIMIT) as node:
        through = Ledger.connect(node.url, dn.book)
        assert through.history(service) == direct.history(service)
        kinds = {e.kind for e in through.history(service)}
        assert {"registered", "approved", "deployed", "canary-verdict", "incident-opened"} <= kinds, kinds
        assert through.members() == direct.members() and len(through.members()) >= 3
        votes = through.votes(digest, service, ENV)
        assert votes == direct.votes(digest, service, ENV) and len(votes) == 2
        # what the rollout controller reads: verdicts, incidents, the deployment's start
        for name in ("CanaryAnalysisRecorded", "IncidentOpened", "DeploymentStarted"):
            assert through.events(name) == direct.events(name) and through.events(name)
        assert through.policy_names() == direct.policy_names()
        denied = through.gate(story["later"], service, "prod-eu")  # the prior environment, named from PolicySet
        assert denied.reason == "missing_prior_environment" and denied.details["environment"] == ENV
    assert node.refused["range"] == 0, node.refused
    assert node.calls["eth_getLogs"] > 3  # chunked: the story spans more than three ranges


def test_cli_names_the_prior_environment_through_a_limited_node(dn, story):
    """The CLI's own reader of PolicySet events (plain JSON-RPC, for the gate and status)."""
    from types import SimpleNamespace

    from shipledger.cli.shared import prior_environment_name
    from shipledger._internal.abi import keccak

    book = json.loads(dn.book.read_text())
    with NodeLimits(dn.rpc_url, max_range=LIMIT) as node:
        endpoint = SimpleNamespace(url=node.url, registry=book["contracts"]["ReleaseRegistry"]["address"], start_block=0)
        assert prior_environment_name(endpoint, story["service"], "prod-eu", "0x" + keccak(ENV).hex()) == ENV
    assert node.refused["range"] == 0 and node.calls["eth_getLogs"] > 3


def test_rpc_halves_a_batch_the_node_refuses_and_remembers(dn, story):
    numbers = [[hex(n), False] for n in range(40)]
    expected = Rpc(dn.rpc_url).fetch("eth_getBlockByNumber", numbers, 500)
    with NodeLimits(dn.rpc_url, max_batch=6) as node:
        rpc = Rpc(node.url)
        assert rpc.fetch("eth_getBlockByNumber", numbers, 500) == expected
        refusals = node.refused["batch"]
        assert 1 <= refusals <= 3 and rpc.max_batch <= 6  # 40 -> 20 -> 10 -> 5
        assert rpc.fetch("eth_getBlockByNumber", numbers, 500) == expected
        assert node.refused["batch"] == refusals  # the next batches were sent small enough


def test_index_syncs_through_a_batch_limit_and_the_range_limit(dn, story, tmp_path):
    book = json.loads(dn.book.read_text())
    with Index.open(tmp_path / "direct.sqlite") as direct:
        direct.sync(Endpoint.connect(dn.rpc_url, book))
        expected = _rows(direct)
    # Logs without blockTimestamp make the index fetch the headers, many to a batch.
    with NodeLimits(dn.rpc_url, max_range=LIMIT, max_batch=3, block_timestamps=False) as node, Index.open(tmp_path / "i.sqlite") as index:
        result = index.sync(Endpoint.connect(node.url, book))
        assert _rows(index) == expected and result.events == len(expected)
    assert node.refused["batch"] >= 1 and node.refused["range"] >= 1, node.refused  # both limits were met, and adapted to


@pytest.mark.parametrize("message", ["toBlock greater than latest block", "block range extends beyond current head block"])
def test_index_stops_where_a_lagging_node_is_and_goes_on_later(dn, story, tmp_path, message):
    book = json.loads(dn.book.read_text())
    dn.register(unique(), "1.0.0")  # something in the newest blocks
    head = _head(dn.rpc_url)
    with Index.open(tmp_path / "direct.sqlite") as direct:
        direct.sync(Endpoint.connect(dn.rpc_url, book))
        expected = _rows(direct)
    with NodeLimits(dn.rpc_url, max_range=LIMIT, lag=3, lag_message=message) as node, Index.open(tmp_path / "i.sqlite") as index:
        endpoint = Endpoint.connect(node.url, book)
        behind = index.sync(endpoint)
        assert behind.to_block <= head - 3 and int(index.meta()["checkpoint_block"]) == behind.to_block
        assert _rows(index) == [r for r in expected if r[0] <= behind.to_block] != expected
        assert node.refused["lag"] >= 1
        node.lag = 0  # the node caught up
        caught_up = index.sync(endpoint)
        assert caught_up.to_block == head and caught_up.rewound_from is None
        assert _rows(index) == expected

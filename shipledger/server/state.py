"""What one server process holds: the node and suite it reads, the chain head it last saw, the index
it keeps synced in the background, read connections to that index, the gate cache and the counters
/metrics shows.

One background task polls the head; each new block starts an index sync in a worker thread, so a
request never waits on a sync (it reads what the index holds). The gate is answered at the head the
poller last saw; when the poller has not heard from the node for HEAD_STALE seconds, or the newest
block is older than `max_block_age`, the head is unknown and the gate cannot decide (503).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from shipledger._internal.freshness import stall_sentence
from shipledger.errors import ConnectionFailed, ShipledgerError

POLL_INTERVAL = 0.25  # seconds between eth_getBlockByNumber("latest") polls
POLL_TIMEOUT = 2.0  # seconds the node has to answer one poll or one gate call
HEAD_STALE = 3.0  # seconds without an answer from the node after which the head is unknown

log = logging.getLogger("shipledger.serve")


@dataclass
class Config:
    rpc_url: str
    book: dict
    db: Path
    max_lag: int = 5  # blocks the index may trail the head before /readyz says 503
    max_block_age: float = 0  # seconds; a newest block older than this is a stalled chain (0: never)
    relayer_key: str | None = field(default=None, repr=False)
    relay_rate: float = 1.0  # relay requests per second per client, with a burst of RELAY_BURST
    relay_burst: int = 10
    max_body: int = 256 * 1024  # bytes of a request body
    observations_token: str | None = field(default=None, repr=False)  # bearer token of POST /v1/observations; None: off
    admission: object | None = None  # the admission webhook's AdmissionMap when `--admission` is on; None: off
    wallet_rpc_url: str | None = None  # the node URL the web app asks a wallet to add for this chain (None: none)


class Head:
    """The newest block as last polled: number, timestamp, when we heard it."""

    def __init__(self):
        self.number: int | None = None
        self.timestamp: int | None = None
        self.heard_at = 0.0  # time.monotonic() of the last answer from the node
        self.changed_at = 0.0  # time.monotonic() when this block number was first seen
        self.error = "the server has not reached the node yet"


class State:
    def __init__(self, config: Config):
        from shipledger._internal.rpc import Rpc
        from shipledger.compliance.index import Endpoint, Index
        from shipledger.compliance.trace import ensure_indexes
        from shipledger.server.votes import GateCache

        self.config = config
        self.endpoint = Endpoint.connect(config.rpc_url, config.book, timeout=POLL_TIMEOUT)
        self.index = Index.open(config.db)  # the writer: only the sync task uses it
        self.index.db.execute("SELECT 1").fetchone()
        self._bind_and_prepare(ensure_indexes)
        self.head = Head()
        self.synced_block: int | None = self._checkpoint()
        self.sync_error = ""
        self._local = threading.local()
        self.gates = GateCache(self.rpc_batch, self.endpoint.ledger, self.prior_name)
        self.gate_answers: Counter = Counter()
        self.relay_outcomes: Counter = Counter()
        self.admission_answers: Counter = Counter()  # allowed / denied, since start
        from shipledger.server.observations import Observed

        self.observed = Observed(config.observations_token)
        self._waiting: tuple[int, list] | None = None
        self._waiting_lock = threading.Lock()
        self._proposals: tuple[int, list[dict]] | None = None
        self._governance = None  # a Ledger without a signer, opened on the first /v1/proposals
        self._proposals_lock = threading.Lock()
        self.relay = None
        if config.relayer_key:
            from shipledger._internal.reader import Reader
            from shipledger.client import Ledger
            from shipledger.server.votes import Relay

            ledger = Ledger.connect(config.rpc_url, config.book, config.relayer_key)
            self.relay = Relay(ledger, Reader(self.endpoint))
        self._rpc_class = Rpc

    def _bind_and_prepare(self, ensure_indexes) -> None:
        self.index._bind(self.endpoint)  # an index of another suite fails here, at start-up
        ensure_indexes(self.index.db)  # trace's indexes exist before read-only connections need them

    def _checkpoint(self) -> int | None:
        value = self.index.meta().get("checkpoint_block")
        return int(value) if value is not None else None

    # ------------------------------------------------------------------ per-thread connections

    def rpc_batch(self, calls: list) -> list:
        """One JSON-RPC batch over this thread's kept-alive session; ConnectionFailed on any error."""
        rpc = getattr(self._local, "rpc", None)
        if rpc is None:
            rpc = self._local.rpc = self._rpc_class(self.endpoint.url, timeout=POLL_TIMEOUT)
        return rpc.batch(calls)

    def reader_db(self):
        """This thread's read-only connection to the index (opened once)."""
        index = getattr(self._local, "index", None)
        if index is None:
            from shipledger.compliance.index import Index

            index = self._local.index = Index.open(self.config.db, read_only=True)
        return index

    def prior_name(self, service: str, environment: str, key: str, which: str = "prior") -> str:
        """The prior environment's (or with which="attestation", the attestation type's) name for its hash."""
        from shipledger.cli.shared import prior_environment_name

        return prior_environment_name(self.endpoint, service, environment, key, timeout=POLL_TIMEOUT, which=which)

    # ------------------------------------------------------------------ the head

    def known_head(self) -> int:
        """The block the gate answers at; ConnectionFailed when the head is unknown or stale."""
        head = self.head
        if head.number is None or time.monotonic() - head.heard_at > HEAD_STALE:
            raise ConnectionFailed(f"cannot decide: no recent answer from the node ({head.error})")
        age = self.block_age()
        if self.config.max_block_age and age is not None and age > self.config.max_block_age:
            raise ConnectionFailed(f"cannot decide: the chain has stalled at block {head.number}: "
                                   + stall_sentence(age, self.config.max_block_age))
        return head.number

    def block_age(self) -> float | None:
        """How old the newest block is: by its timestamp, or by when this process first saw it, whichever
        is older. The second catches a chain whose clock runs ahead of ours (a devnet whose time was
        moved forward, as governance delays are waited out) and then stalls."""
        if self.head.timestamp is None:
            return None
        return max(0.0, time.time() - self.head.timestamp, time.monotonic() - self.head.changed_at)

    def index_lag(self) -> int | None:
        if self.head.number is None:
            return None
        return self.head.number - (self.synced_block if self.synced_block is not None else self.endpoint.start_block - 1)

    def poll_head(self) -> bool:
        """Ask the node for its newest block; True when it is a new one."""
        try:
            [block] = self.rpc_batch([("eth_getBlockByNumber", ["latest", False])])
            number, timestamp = int(block["number"], 16), int(block["timestamp"], 16)
        except (ShipledgerError, KeyError, TypeError, ValueError) as exc:
            self.head.error = str(exc)
            if time.monotonic() - self.head.heard_at > HEAD_STALE:
                self.head.number = None
            return False
        new = number != self.head.number
        if new:
            self.head.changed_at = time.monotonic()
        self.head.number, self.head.timestamp, self.head.heard_at, self.head.error = number, timestamp, time.monotonic(), ""
        return new

    def sync(self) -> None:
        try:
            result = self.index.sync(self.endpoint)
        except ShipledgerError as exc:
            self.sync_error = str(exc)
            log.warning("index sync failed: %s", exc)
            return
        self.sync_error = ""
        self.synced_block = self._checkpoint()
        if result.rewound_from is not None:
            log.warning("the chain no longer holds block %s as indexed: the index was rewound", result.rewound_from)

    async def follow(self) -> None:
        """The background task: poll the head; on each new block, sync the index (in a thread)."""
        syncing: asyncio.Future | None = None
        while True:
            new = await asyncio.to_thread(self.poll_head)
            if syncing is not None and syncing.done():
                syncing = None
            behind = self.synced_block is None or (self.head.number is not None and self.head.number > self.synced_block)
            if (new or behind) and syncing is None and self.head.number is not None:
                syncing = asyncio.ensure_future(asyncio.to_thread(self.sync))
            await asyncio.sleep(POLL_INTERVAL)

    # ------------------------------------------------------------------ releases waiting for votes

    def waiting(self) -> tuple[int, list[dict]]:
        """(block, releases held by a vote reason), computed once per head block and indexed block:
        the gate answers at the head, the candidates and tallies come from the index, which may
        catch up with that head a moment later."""
        from shipledger.server.votes import now, waiting_releases

        block = self.known_head()
        key = (block, self.synced_block)
        cached = self._waiting
        if cached and cached[0] == key:
            return cached[1]
        with self._waiting_lock:
            if self._waiting and self._waiting[0] == key:
                return self._waiting[1]
            # The chain's clock decides whether an approval expired (a devnet's may run ahead of ours).
            answer = (block, waiting_releases(self.reader_db().db, self.gates, block, self.head.timestamp or now()))
            self._waiting = (key, answer)
            return answer

    # ------------------------------------------------------------------ governance

    def proposals(self) -> tuple[int, list[dict]]:
        """(block, every governance proposal as Proposal.to_json()), read from the chain once per head
        block (the Governance contract holds where each stands; there are few)."""
        block = self.known_head()
        with self._proposals_lock:
            if self._proposals and self._proposals[0] == block:
                return self._proposals
            if self._governance is None:
                from shipledger.client import Ledger

                self._governance = Ledger.connect(self.config.rpc_url, self.config.book, rpc_timeout=POLL_TIMEOUT)
            self._proposals = (block, [p.to_json() for p in self._governance.proposals()])
            return self._proposals

    def close(self) -> None:
        self.index.close()

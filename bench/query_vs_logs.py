"""`trace` and `history` on an index of 100,000 events vs answering the same questions by scanning
logs (`eth_getLogs` with topic filters + web3 decoding), on the same chain in the same run.

The chain is bench/index_sync.py's (cached in bench/out/; built on first use). The index is synced
once into a temp dir (that time is index_sync.py's subject), then for many random artifacts, in
one process, warm (a first trace and history are not timed: trace creates its lookup indexes):

| question                                | shipledger (index)                      | peer (logs)
| trace ARTIFACT --service S              | shipledger.compliance.trace.trace(db, digest, S)   | registry logs with topic1 = digest, DeploymentStarted with topic2 = digest, the lifecycle logs of those deployment ids (topic1), every IncidentOpened decoded to find the ones naming them
| history --digest D                      | Index.history(digest=D)                 | the same logs without the incidents
| history --digest D --approver A         | Index.history(digest=D, approver=A)     | vote logs (approved, rejected, withdrawn) with topic1 = digest, decoded, filtered by approver (not indexed on chain)
| history --approver A                    | Index.history(approver=A)               | every vote log, decoded, filtered by approver (fewer samples: each reads ~15,000 logs)

The answers are compared (the same (block, log index) set for history; for trace, everything the
logs find is in the trace, which also holds incidents opened on the target while it was live), so
a fast wrong answer stops the run. Prints medians and the ratio. Target: median <= 50 ms.

    .venv/bin/python bench/query_vs_logs.py [--events 100000] [--queries 200] [--approver-queries 15] [--seed 4]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import header, ms
from index_sync import artifact_digest, artifact_service, chain_with_events

TARGET = 0.050  # seconds, median per query
VOTE_EVENTS = ("ArtifactApproved", "ArtifactRejected", "VoteWithdrawn")
LIFECYCLE_EVENTS = ("DeploymentPromoted", "CanaryAnalysisRecorded", "DeploymentCompleted", "DeploymentFailed",
                    "DeploymentRolledBack")


class LogScanner:
    """Answers from the node's logs alone, the way a script without an index would."""

    def __init__(self, ledger, first: int, last: int):
        from web3 import Web3
        from web3._utils.events import get_event_data

        self.ledger, self.first, self.last = ledger, first, last
        self.w3 = ledger.w3
        self.decode_log = get_event_data
        self.abi = {item["name"]: (topic, item) for topic, (_, item) in ledger._event_abis().items()}
        self.by_topic = {topic: item for topic, item in self.abi.values()}
        self.topic = {name: "0x" + topic.hex() for name, (topic, _) in self.abi.items()}
        self.word = lambda n: "0x" + n.to_bytes(32, "big").hex()
        self.checksum = Web3.to_checksum_address

    def logs(self, address, topics) -> list:
        return self.w3.eth.get_logs({"address": address, "fromBlock": self.first, "toBlock": self.last, "topics": topics})

    def decode(self, log) -> dict:
        return self.decode_log(self.w3.codec, self.by_topic[bytes(log["topics"][0])], log)

    @staticmethod
    def position(event) -> tuple[int, int]:
        return event["blockNumber"], event["logIndex"]

    def digest_history(self, digest: str) -> tuple[list, list[int]]:
        """Every event naming the digest, and the lifecycle of its deployments; and the deployment ids."""
        word = "0x" + digest.removeprefix("sha256:")
        events = [self.decode(log) for log in self.logs(self.ledger.registry.address, [None, word])]
        starts = [self.decode(log) for log in self.logs(self.ledger.ledger.address, [self.topic["DeploymentStarted"], None, word])]
        ids = [e["args"]["id"] for e in starts]
        events += starts
        if ids:
            lifecycle = [self.topic[name] for name in LIFECYCLE_EVENTS]
            events += [self.decode(log) for log in self.logs(self.ledger.ledger.address, [lifecycle, [self.word(i) for i in ids]])]
        return sorted(events, key=self.position), ids

    def trace(self, digest: str) -> list:
        events, ids = self.digest_history(digest)
        if ids:  # suspects are not indexed on chain: read every incident
            incidents = [self.decode(log) for log in self.logs(self.ledger.ledger.address, [self.topic["IncidentOpened"]])]
            events += [e for e in incidents if set(e["args"]["suspects"]) & set(ids)]
        return sorted(events, key=self.position)

    def votes(self, approver: str, digest: str | None = None) -> list:
        topics = [[self.topic[name] for name in VOTE_EVENTS]]
        if digest:
            topics.append("0x" + digest.removeprefix("sha256:"))
        decoded = (self.decode(log) for log in self.logs(self.ledger.registry.address, topics))
        return [e for e in decoded if self.checksum(e["args"]["approver"]) == approver]


def timed(fn, *args, **kw):
    started = time.perf_counter()
    answer = fn(*args, **kw)
    return time.perf_counter() - started, answer


def positions(events) -> set:
    return {(e.block_number, e.log_index) for e in events}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events on the chain (default 100000)")
    parser.add_argument("--queries", type=int, default=200, help="random artifacts to trace and look up")
    parser.add_argument("--approver-queries", type=int, default=15, help="history --approver runs (each side)")
    parser.add_argument("--seed", type=int, default=4)
    opts = parser.parse_args()

    from shipledger.client import Ledger
    from shipledger.compliance.index import Index, digest_hex
    from shipledger.compliance.trace import trace

    header(f"queries: trace and history on the index vs scanning logs ({opts.events} events, {opts.queries} artifacts)")
    with chain_with_events(opts.events) as (node, book, manifest):
        ledger = Ledger.connect(node.url, book)
        workdir = Path(tempfile.mkdtemp(prefix="shipledger-bench-query-"))
        try:
            index = Index.open(workdir / "index.sqlite")
            sync_seconds, result = timed(index.sync, ledger)
            print(f"   index synced: {result.events:,} events in {sync_seconds:.1f} s (not part of the query times)")
            scanner = LogScanner(ledger, manifest["start_block"], manifest["head_block"])
            rng = random.Random(opts.seed)
            # Uniform over registered artifacts, plus every tenth query a deployed one (these have the
            # longest traces: votes, four deployment steps, sometimes a rollback and an incident).
            deployed = [d * (manifest["approvals"] // manifest["deployments"]) for d in range(manifest["deployments"])]
            picks = [rng.choice(deployed) if q % 10 == 0 else rng.randrange(manifest["registrations"]) for q in range(opts.queries)]
            approvers = manifest["approvers"]

            warm = picks[0]
            warm_seconds, _ = timed(trace, index.db, digest_hex(artifact_digest(warm)), artifact_service(warm))
            index.history(digest=artifact_digest(warm), approver=approvers[0])
            print(f"   first trace (creates trace's lookup indexes): {ms(warm_seconds)}")

            times = {name: ([], []) for name in ("trace", "history --digest", "history --digest --approver", "history --approver")}
            steps = []
            for i in picks:
                digest, service, approver = artifact_digest(i), artifact_service(i), approvers[i % 3]
                seconds, ours = timed(trace, index.db, digest_hex(digest), service)
                peer_seconds, theirs = timed(scanner.trace, digest)
                missing = {scanner.position(e) for e in theirs} - {(s.block_number, s.log_index) for s in ours.steps}
                if missing:
                    raise RuntimeError(f"trace of artifact {i} lacks events the logs have: {sorted(missing)}")
                times["trace"][0].append(seconds)
                times["trace"][1].append(peer_seconds)
                steps.append(len(ours.steps))

                seconds, ours = timed(index.history, digest=digest)
                peer_seconds, (theirs, _) = timed(scanner.digest_history, digest)
                if positions(ours) != {scanner.position(e) for e in theirs}:
                    raise RuntimeError(f"history --digest of artifact {i}: the index and the logs disagree")
                times["history --digest"][0].append(seconds)
                times["history --digest"][1].append(peer_seconds)

                seconds, ours = timed(index.history, digest=digest, approver=approver)
                peer_seconds, theirs = timed(scanner.votes, approver, digest)
                if positions(ours) != {scanner.position(e) for e in theirs}:
                    raise RuntimeError(f"history --digest --approver of artifact {i}: the index and the logs disagree")
                times["history --digest --approver"][0].append(seconds)
                times["history --digest --approver"][1].append(peer_seconds)

            sizes = []
            for q in range(opts.approver_queries):
                approver = approvers[q % 3]
                seconds, ours = timed(index.history, approver=approver)
                peer_seconds, theirs = timed(scanner.votes, approver)
                if positions(ours) != {scanner.position(e) for e in theirs}:
                    raise RuntimeError(f"history --approver {approver}: the index and the logs disagree")
                times["history --approver"][0].append(seconds)
                times["history --approver"][1].append(peer_seconds)
                sizes.append(len(ours))
            index.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        print(f"   {opts.queries} artifacts (trace lengths: median {statistics.median(steps):.0f}, max {max(steps)} steps);"
              f" history --approver: {opts.approver_queries} runs of ~{statistics.median(sizes):,.0f} events each")
        print(f"   {'question':30} {'index median':>13} {'p90':>9} {'logs median':>12} {'ratio':>8}  target <= {ms(TARGET)}")
        for name, (ours, theirs) in times.items():
            median, p90 = statistics.median(ours), statistics.quantiles(ours, n=10)[-1] if len(ours) > 1 else ours[0]
            peer = statistics.median(theirs)
            verdict = "met" if median <= TARGET else "MISSED"
            print(f"   {name:30} {ms(median):>13} {ms(p90):>9} {ms(peer):>12} {peer / median:>7.0f}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

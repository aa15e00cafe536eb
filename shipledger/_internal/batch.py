"""Registering many artifacts: registerBatch transactions sized by gas and by bytes, each one
estimated, with what the ledger already holds left out, so that a rerun after an interruption sends
only what is missing (and nothing at all when everything is there).

Before anything is sent, every artifact is checked against the others of the batch and against the
ledger (recordOf and getArtifact for each, many eth_calls to a JSON-RPC request). Then the chunks go
out a few at a time (WINDOW in flight) and the receipts of all those in flight are polled in one
request. Every chunk's state is kept, so after Ctrl-C or a lost node the caller can say what was
confirmed, what the node holds and will still mine, and where a rerun picks up.

The calldata is encoded here by hand (the layout of one ArtifactInput is fixed): eth_abi took most of
the client's time on big batches, and each artifact's size must be known anyway to size the chunks.
tests/cli/test_register_batch.py checks the encoding against eth_abi.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Callable

from eth_utils import keccak, to_checksum_address

from shipledger._internal.chain import GAS_MARGIN
from shipledger._internal.names import format_digest
from shipledger._internal.revert import decode_revert, reverted_because
from shipledger._internal.rpc import Rpc, error_text
from shipledger.errors import ConnectionFailed, ShipledgerError, TransactionTimeout, UsageError, revert_error
from shipledger.models import BatchResult, TxReceipt

REGISTER_BATCH_ARGS = "(bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string)[]"
REGISTER_BATCH_SELECTOR = keccak(text=f"registerBatch({REGISTER_BATCH_ARGS})")[:4]
_RECORD_OF = keccak(text="recordOf(string,string)")[:4]
_GET_ARTIFACT = keccak(text="getArtifact(bytes32,string)")[:4]
_NOT_FOUND = "0x" + keccak(text="ArtifactNotFound(bytes32,string)")[:4].hex()
_REGISTERED = "0x" + keccak(
    text="ArtifactRegistered(bytes32,bytes32,bytes32,string,string,uint8,bytes32,uint64,bytes32,bytes32,string,address,bytes32)"
).hex()

# Upper bounds of what one artifact costs, measured on anvil (Berlin): 55.8k gas with short names and
# no URI, plus 24 gas per byte of its calldata. They only size the chunks; each chunk's gas limit comes
# from its own estimate, and a chunk whose estimate is over the budget is split.
ITEM_GAS, BYTE_GAS, TX_GAS = 50_000, 32, 60_000
CHUNK_GAS = 8_000_000  # gas per transaction at most, and at most half the block gas limit
CHUNK_BYTES = 96_000  # calldata per transaction; geth's pool refuses transactions over 128 KiB
READS_PER_REQUEST = 500  # eth_calls per JSON-RPC batch (hosted nodes cap batch sizes)
WINDOW = 8  # transactions in flight at once: a Ctrl-C leaves at most this many for the node to mine
POLL = 0.05  # seconds between receipt polls


# ---------------------------------------------------------------------- ABI encoding

def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _string(text: str) -> bytes:
    raw = text.encode()
    return _word(len(raw)) + raw + b"\0" * (-len(raw) % 32)


def encode_item(item: tuple) -> bytes:
    """The ABI encoding of one ArtifactInput tuple (digest, service, version, kind, commit,
    committedAt, provenance, sbom, uri) as an element of a dynamic array: nine head words, then
    three strings. Its keccak256 is the record hash the registry keeps (client.record_hash)."""
    digest, service, version, kind, commit, committed_at, provenance, sbom, uri = item
    service, version, uri = _string(service), _string(version), _string(uri)
    head = 9 * 32
    return b"".join((
        digest, _word(head), _word(head + len(service)), _word(kind), commit, _word(committed_at), provenance, sbom,
        _word(head + len(service) + len(version)), service, version, uri,
    ))


def record_hash_of(encoded: bytes) -> bytes:
    """keccak256(abi.encode(ArtifactInput)) from encode_item's bytes: abi.encode of one dynamic tuple
    is its offset word (32) followed by the tuple's encoding."""
    return keccak(_word(32) + encoded)


def batch_calldata(encoded: list[bytes]) -> bytes:
    """registerBatch calldata from encode_item() results: the array's offset and length, one offset
    per element (from the end of the length word), then the elements."""
    offsets, position = [], 32 * len(encoded)
    for element in encoded:
        offsets.append(_word(position))
        position += len(element)
    return b"".join((REGISTER_BATCH_SELECTOR, _word(32), _word(len(encoded)), *offsets, *encoded))


def _read_calls(registry: str, item: tuple) -> list[tuple[str, list]]:
    digest, service, version = item[0], item[1], item[2]
    record_of = _RECORD_OF + _word(64) + _word(64 + len(_string(service))) + _string(service) + _string(version)
    get_artifact = _GET_ARTIFACT + digest + _word(64) + _string(service)
    return [("eth_call", [{"to": registry, "data": "0x" + data.hex()}, "pending"]) for data in (record_of, get_artifact)]


def _revert_of(reply: dict) -> tuple[str, dict] | None:
    """The decoded custom error in an error reply (nodes put the revert data in error.data)."""
    data = (reply.get("error") or {}).get("data")
    if isinstance(data, dict):
        data = data.get("data")
    try:
        return decode_revert(data) if isinstance(data, str) and data.startswith("0x") else None
    except (ValueError, TypeError):
        return None


# ---------------------------------------------------------------------- the batch

@dataclass
class _Chunk:
    items: list[int]  # positions in the batch
    gas: int = 0
    state: str = "new"  # new -> sending -> sent -> confirmed | reverted; "sending" -> unsent after a look
    tx_hash: str | None = None
    sent_at: float = 0.0
    registered: int = 0  # ArtifactRegistered events in the receipt
    receipt: TxReceipt | None = None


@dataclass
class RegistrationBatch:
    """Validated artifacts checked against the ledger (made by Ledger.batch_registration); send()
    registers what is missing. After send() raised (KeyboardInterrupt included), settle() takes one
    look at the node and result() says where things stand."""

    sender: object  # TxSender
    registry: str
    urls: list[str]  # the nodes to read from, in order (Ledger.connect's in-sync ones)
    items: list[tuple]
    labels: list[str]
    timeout: float = 120.0
    todo: list[int] = field(default_factory=list)
    skipped: int = 0
    chunks: list[_Chunk] = field(default_factory=list)  # those taken out of the queue, in order

    def __post_init__(self):
        self.urls = list(self.urls)
        self.rpc = Rpc(self.urls[0])
        self.progress: Callable[[int], None] | None = None
        self._encoded: list[bytes] = []
        self._by_key: dict[tuple, int] = {}
        self._failure: ShipledgerError | None = None
        self._access_lists = True
        self._check_unique()
        self._check_ledger()

    # ------------------------------------------------------------------ before sending

    def _check_unique(self) -> None:
        """A version or a digest twice in one batch is a mistake in the batch (exit 2), even when the
        lines are identical: the ledger would take the first and make the second a no-op."""
        for i, (digest, service, version, *_) in enumerate(self.items):
            first = self._by_key.setdefault(("version", service, version), i)
            if first != i:
                raise UsageError(f"{self.labels[i]}: {service} {version} is also on {self.labels[first]}; "
                                 "a batch names each version once")
            first = self._by_key.setdefault(("digest", service, digest), i)
            if first != i:
                raise UsageError(f"{self.labels[i]}: {format_digest(digest)} is also on {self.labels[first]} "
                                 f"(as {service} {self.items[first][2]}); a digest is registered once per service")

    def _check_ledger(self) -> None:
        """Skip what is registered identically; refuse (exit 3, nothing sent) what conflicts."""
        calls = [("eth_getBlockByNumber", ["latest", False])]
        for item in self.items:
            calls += _read_calls(self.registry, item)
        replies = []
        for start in range(0, len(calls), READS_PER_REQUEST):
            replies += self._replies(calls[start : start + READS_PER_REQUEST])
        block = self._result(replies[0], "eth_getBlockByNumber")
        self.budget = min(CHUNK_GAS, int(block["gasLimit"], 16) // 2)
        self.block_gas_limit = int(block["gasLimit"], 16)
        conflicts = []
        self._encoded = [encode_item(item) for item in self.items]
        for i, item in enumerate(self.items):
            record_reply, artifact_reply = replies[1 + 2 * i], replies[2 + 2 * i]
            existing = bytes.fromhex(self._result(record_reply, "recordOf")[2:].rjust(64, "0")[-64:])
            # identical only when the whole record hashes the same, not the digest alone
            if existing == record_hash_of(self._encoded[i]):
                self.skipped += 1
                continue
            if existing != b"\0" * 32:
                conflicts.append(self._labelled(i, revert_error("VersionAlreadyRegistered", {
                    "service": item[1], "version": item[2], "existingRecordHash": existing})))
                continue
            if "error" in artifact_reply:
                data = (artifact_reply.get("error") or {}).get("data")
                # a selector check first: decoding every "not found" costs more than the call
                if not (isinstance(data, str) and data.startswith(_NOT_FOUND)) and (
                        (_revert_of(artifact_reply) or ("",))[0] != "ArtifactNotFound"):
                    raise ConnectionFailed(f"getArtifact failed: {error_text(artifact_reply)}")
            else:  # the digest is registered for this service under another version
                words = self._result(artifact_reply, "getArtifact")[2:]
                registrant, at = to_checksum_address("0x" + words[24:64]), int(words[64:128], 16)
                error = revert_error("ArtifactAlreadyRegistered", {"digest": item[0], "service": item[1]})
                conflicts.append(self._labelled(i, error, f" (registered by {registrant} at unix time {at})"))
                continue
            self.todo.append(i)
        if conflicts:
            first = conflicts[0]
            if len(conflicts) > 1:
                first = type(first)(first.arguments, f"{first.sentence} (and {len(conflicts) - 1} more lines conflict "
                                    "with the ledger); nothing was sent")
            else:
                first = type(first)(first.arguments, f"{first.sentence}; nothing was sent")
            raise first

    def _replies(self, calls: list[tuple[str, list]]) -> list[dict]:
        """self.rpc.replies, moving on to the next node given (`--rpc URL,URL`) when this one cannot be
        reached. Reads, estimates and receipts are the same on every node of the chain, and the sends
        already fail over (FailoverProvider hands the unmined ones to the next node), so a node
        restarted mid-batch need not end the batch (it did: these reads stayed on the first node)."""
        for _ in range(len(self.urls) - 1):
            try:
                return self.rpc.replies(calls)
            except ConnectionFailed:
                self.urls.append(self.urls.pop(0))
                self.rpc = Rpc(self.urls[0])
        return self.rpc.replies(calls)

    def _result(self, reply: dict, what: str):
        if "error" in reply:
            raise ConnectionFailed(f"{what} failed: {error_text(reply)}")
        return reply.get("result")

    def _labelled(self, i: int, error, suffix: str = ""):
        return type(error)(error.arguments, f"{self.labels[i]}: {error.sentence}{suffix}")

    def _item_of_error(self, name: str, arguments: dict) -> int | None:
        """The batch position a decoded revert is about, if it names one."""
        if name == "VersionAlreadyRegistered":
            return self._by_key.get(("version", arguments["service"], arguments["version"]))
        if name == "ArtifactAlreadyRegistered":
            return self._by_key.get(("digest", arguments["service"], bytes(arguments["digest"])))
        return None

    def _error(self, reply: dict, chunk: _Chunk) -> ShipledgerError:
        decoded = _revert_of(reply)
        span = self._span(chunk)
        if decoded is None:
            message = error_text(reply)
            if "timed out" in message:
                return ConnectionFailed(f"the JSON-RPC node timed out on {span}")
            return ShipledgerError(f"the node refused the transaction for {span}: {message}")
        error = revert_error(*decoded)
        i = self._item_of_error(*decoded)
        return self._labelled(i, error) if i is not None else error

    def _replay(self, chunk: _Chunk, block: int) -> ShipledgerError | None:
        """The chunk's call at `block`: its decoded revert, None if it succeeds or says nothing decodable."""
        call = {"from": self.sender.address, "to": self.registry, "data": self._data(chunk)}
        [reply] = self._replies([("eth_call", [call, hex(block)])])
        return self._error(reply, chunk) if "error" in reply and _revert_of(reply) else None

    def _span(self, chunk: _Chunk) -> str:
        first, last = self.labels[chunk.items[0]], self.labels[chunk.items[-1]]
        return first if first == last else f"{first} to {last}"

    # ------------------------------------------------------------------ sending

    def _chunks(self) -> deque[_Chunk]:
        """Consecutive artifacts, as many as fit the gas budget (by the upper bounds, with the
        estimate's margin) and the byte limit."""
        chunks, current, gas, size = deque(), [], TX_GAS, 4 + 64
        for i in self.todo:
            cost, length = ITEM_GAS + BYTE_GAS * len(self._encoded[i]), 32 + len(self._encoded[i])
            if current and (gas + cost > self.budget / GAS_MARGIN or size + length > CHUNK_BYTES):
                chunks.append(_Chunk(current))
                current, gas, size = [], TX_GAS, 4 + 64
            current.append(i)
            gas, size = gas + cost, size + length
        if current:
            chunks.append(_Chunk(current))
        return chunks

    def _data(self, chunk: _Chunk) -> str:
        return "0x" + batch_calldata([self._encoded[i] for i in chunk.items]).hex()

    def _estimate(self, chunk: _Chunk) -> list[_Chunk]:
        """The chunk with its gas limit (its estimate plus the margin), or its halves if that is over
        the budget.

        The estimate is eth_createAccessList's gasUsed: one execution of the chunk on the current
        state, where eth_estimateGas bisects over about eight (50 ms against 8 ms per 100 artifacts on
        anvil, most of a batch's time). For registerBatch the two agree within 0.5%: it makes no calls
        (no 63/64 rule) and earns no refunds. A node without the method, or a chunk that reverts, goes
        to eth_estimateGas, whose error carries the revert data to decode."""
        call = {"from": self.sender.address, "to": self.registry, "data": self._data(chunk)}
        gas = None
        if self._access_lists:
            [reply] = self._replies([("eth_createAccessList", [call, "latest"])])
            result = reply.get("result")
            if isinstance(result, dict) and "gasUsed" in result and not result.get("error"):
                gas = int(result["gasUsed"], 16)
            elif (reply.get("error") or {}).get("code") == -32601:  # method not found
                self._access_lists = False
        if gas is None:
            [reply] = self._replies([("eth_estimateGas", [call])])
            if "error" in reply:
                raise self._error(reply, chunk)
            gas = int(reply["result"], 16)
        gas = int(gas * GAS_MARGIN)
        if gas > self.budget and len(chunk.items) > 1:
            half = len(chunk.items) // 2
            return self._estimate(_Chunk(chunk.items[:half])) + self._estimate(_Chunk(chunk.items[half:]))
        chunk.gas = min(gas, self.block_gas_limit)
        return [chunk]

    def _send(self, chunk: _Chunk) -> None:
        chunk.state = "sending"
        self.chunks.append(chunk)

        def signed(tx_hash: str) -> None:
            chunk.tx_hash = tx_hash

        try:
            self.sender.send_data(self.registry, self._data(chunk), chunk.gas, on_signed=signed)
        except ConnectionFailed:
            raise  # the node may or may not have it: "sending" until settle() looks
        except Exception as exc:  # noqa: BLE001 - the node refused it outright: not sent
            chunk.state = "unsent"
            if isinstance(exc, ShipledgerError):
                raise
            raise ShipledgerError(f"the node refused the transaction for {self._span(chunk)}: {exc}") from None
        chunk.state, chunk.sent_at = "sent", time.monotonic()

    def _apply(self, chunk: _Chunk, receipt: dict, explain: bool = True) -> None:
        block = int(receipt["blockNumber"], 16)
        self.sender.saw_block(block)
        chunk.receipt = TxReceipt(chunk.tx_hash, block, int(receipt["gasUsed"], 16))
        if int(receipt.get("status", "0x1"), 16) == 1:
            chunk.state = "confirmed"
            chunk.registered = sum(
                1 for log in receipt.get("logs", [])
                if log.get("topics") and log["topics"][0] == _REGISTERED and log["address"].lower() == self.registry.lower()
            )
            if self.progress:
                self.progress(len(chunk.items))
            return
        chunk.state = "reverted"
        if self._failure is None:
            self._failure = ShipledgerError(f"the transaction for {self._span(chunk)} ({chunk.tx_hash}) reverted in block {block}")
            if explain:  # the node's revert reason, or a replay where one can be trusted
                where = f"the transaction for {self._span(chunk)} ({chunk.tx_hash}) reverted in block {block}"
                self._failure = reverted_because(receipt, where, lambda at: self._replay(chunk, at),
                                                 lambda: int(self.rpc.call("eth_getBlockTransactionCountByNumber", [hex(block)]), 16))

    def _collect(self) -> None:
        """One poll of the receipts of everything in flight; waits a little if none has arrived."""
        flying = [c for c in self.chunks if c.state == "sent"]
        replies = self._replies([("eth_getTransactionReceipt", [c.tx_hash]) for c in flying])
        arrived = False
        for chunk, reply in zip(flying, replies):
            receipt = self._result(reply, "eth_getTransactionReceipt")
            if receipt is None:
                if time.monotonic() - chunk.sent_at > self.timeout:
                    raise TransactionTimeout(f"no receipt for {chunk.tx_hash} ({self._span(chunk)}) after "
                                             f"{self.timeout:.0f}s; it may still be mined")
                continue
            self._apply(chunk, receipt)
            arrived = True
        if not arrived:
            time.sleep(POLL)

    def send(self, progress: Callable[[int], None] | None = None) -> BatchResult:
        """Register what is missing; progress(n) as each transaction's n artifacts are confirmed.
        Stops sending at the first transaction that reverts, waits for those in flight, then raises
        its error. Nothing to do sends nothing."""
        self.progress = progress
        queue = self._chunks()
        while True:
            while queue and self._failure is None and sum(c.state == "sent" for c in self.chunks) < WINDOW:
                chunk = queue.popleft()
                try:
                    for part in self._estimate(chunk):
                        self._send(part)
                except ConnectionFailed as exc:
                    raise ConnectionFailed(f"{exc} (while sending {self._span(chunk)})") from None
            if not any(c.state == "sent" for c in self.chunks):
                break
            self._collect()
        if self._failure is not None:
            raise self._failure
        return self.result()

    def settle(self, timeout: float = 5.0) -> None:
        """After send() raised: one look at the node for the transactions in flight (receipts that
        arrived since, and whether one being sent when it stopped reached the node). Best effort."""
        self.progress = None
        looks = [c for c in self.chunks if c.state in ("sending", "sent")]
        for chunk in looks:
            if chunk.tx_hash is None:  # stopped before it was signed
                chunk.state = "unsent"
        looks = [c for c in looks if c.tx_hash]
        calls = [("eth_getTransactionReceipt", [c.tx_hash]) for c in looks]
        calls += [("eth_getTransactionByHash", [c.tx_hash]) for c in looks]
        try:
            replies = Rpc(self.urls[0], timeout=timeout).replies(calls)
        except ConnectionFailed:
            return
        for n, chunk in enumerate(looks):
            receipt, known = replies[n].get("result"), replies[len(looks) + n]
            if receipt:
                self._apply(chunk, receipt, explain=False)
            elif chunk.state == "sending" and "error" not in known and known.get("result") is None:
                chunk.state = "unsent"  # the node never got it
            elif chunk.state == "sending" and known.get("result"):
                chunk.state = "sent"

    def result(self) -> BatchResult:
        by_state: dict[str, list[_Chunk]] = {}
        for chunk in self.chunks:
            by_state.setdefault(chunk.state, []).append(chunk)
        confirmed = by_state.get("confirmed", [])
        in_flight = by_state.get("sent", []) + by_state.get("sending", [])
        registered = sum(c.registered for c in confirmed)
        already = self.skipped + sum(len(c.items) - c.registered for c in confirmed)
        pending = sum(len(c.items) for c in in_flight)
        failed = sum(len(c.items) for c in by_state.get("reverted", []))
        done = {i for c in confirmed for i in c.items}
        resume = next((self.labels[i] for i in self.todo if i not in done), None)
        return BatchResult(
            artifacts=len(self.items), registered=registered, already=already, pending=pending, failed=failed,
            not_sent=len(self.items) - registered - already - pending - failed,
            transactions=tuple(c.receipt for c in confirmed), pending_transactions=tuple(c.tx_hash for c in in_flight if c.tx_hash),
            resume_at=resume,
        )

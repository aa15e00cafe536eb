"""The index: every event of the suite in a SQLite file, synced incrementally from eth_getLogs.

Other modules (trace, audit, export, report, suspects) read these tables directly, so the names are
a contract: add, never rename.

    meta(key, value)      schema_version, chain_id, registry, ledger, governance (checksummed), start_block
                          (deployment block of the suite), checkpoint_block, checkpoint_hash
    blocks(number, hash, timestamp)   every block holding an indexed event, and the checkpoints
    events(block_number, log_index, block_hash, tx_hash, tx_index, timestamp, contract, address,
           event, kind, service, environment, args, history_head, history_count)
                          one row per record, in chain order; kind is
                          shipledger.models.EVENT_KINDS[event]; service/environment resolved as
                          Ledger.history() does ('' when none); args a JSON object by ABI name;
                          history_head/history_count: the emitting contract's historyHead() right
                          after this record, recomputed from the raw log (_internal/history.py)
    <record tables>       one per event type, snake_case of its name (artifact_approved,
                          deployment_rolled_back, role_granted...): block_number, log_index,
                          block_hash, tx_hash, timestamp, one column per argument (snake_case;
                          structs flattened as <arg>_<field>, e.g. policy_set.new_policy_threshold;
                          arrays as JSON text), plus service and environment for events keyed by
                          a target (the resolved names)

Values: addresses checksummed, bytes '0x' + lowercase hex, bools true/false in JSON and 0/1 in
columns, integers as integers (in columns, values of 2**63 and more as decimal text). Artifact
digests are bytes32 ('0x' + 64 hex). Column names that are SQL keywords (approver_slot_assigned."index")
need quotes.

Only records are indexed: the logs the contracts fold into their history heads. TimelockController's
own events (from the Governance address) are skipped, so the index's last head per contract must equal
the chain's historyHead() at the checkpoint (the audit checks it).

Sync works in block-range chunks. Each chunk is fetched with raw JSON-RPC (web3's per-log decoding is
far too slow for a whole history), decoded once per log, and written with its new checkpoint in one
transaction, so a crash loses nothing committed and never leaves half a chunk. The checkpoint keeps
its block hash; when the chain no longer has that block (a reorg, a devnet restarted) the index
rewinds to the last block it still shares with the chain and syncs again from there.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time as dt_time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from shipledger._internal import artifacts
from shipledger._internal.history import ZERO_HEAD, fold_log, is_record
from shipledger._internal.abi import checksum_address, keccak
from shipledger._internal.revert import canonical_type
from shipledger._internal.rpc import Rpc, error_text
from shipledger.errors import ConnectionFailed, PathError, ShipledgerError, UsageError, path_error
from shipledger.models import HistoryEvent

try:
    import fcntl
except ImportError:  # not on Windows: syncs of one file then rely on the checkpoint check alone
    fcntl = None

DEFAULT_DB = Path(".shipledger") / "index.sqlite"
SCHEMA_VERSION = "2"  # 2: suite v2 (three contracts, history heads)
INITIAL_CHUNK = 500  # blocks per eth_getLogs at first; grows and shrinks with the node's answers
MAX_CHUNK = 100_000  # never ask for more blocks than this at once
TARGET_LOGS = 5_000  # aim for chunks of about this many logs (memory, progress, node limits)
RPC_TIMEOUT = 60  # seconds; a node that takes longer for a range is treated as refusing it
MAX_BATCH = 500  # JSON-RPC calls per HTTP request: hosted nodes cap batch sizes
MAX_RESTARTS = 10  # a chain that keeps moving under the sync: give up after this many restarts
# What nodes say when a range is too much for them: Besu, geth, Erigon, Infura, Alchemy, QuickNode...
REFUSAL = re.compile(
    r"more than \d+ results|too many|too large|range|limit|exceed|timeout|timed out|response size|query returned",
    re.IGNORECASE,
)
# What a node says of a range past its own head, when it lags the head another node gave us (nodes
# behind one load balancer, a validator catching up): geth "block range extends beyond current head
# block", others "toBlock is greater than latest block" and the like. Not a refusal: the blocks are
# not there yet, so the sync stops where that node is and the next one goes on.
NOT_YET = re.compile(r"beyond (the )?current head|greater than (the )?(latest|head|current|chain head)|exceeds (the )?head"
                     r"|after (the )?(latest|head)|unknown block|header not found", re.IGNORECASE)
DEPLOYMENT_EVENTS = ("DeploymentPromoted", "CanaryAnalysisRecorded", "DeploymentCompleted", "DeploymentFailed",
                     "DeploymentRolledBack")  # keyed by a deployment id: their digest is the deployment's
KIND_ALIASES = {
    "incident": ("incident-opened", "incident-acknowledged", "incident-mitigated", "incident-resolve-approved",
                 "incident-resolved", "postmortem"),
    "proposal": ("proposal-created", "proposal-approved", "proposal-scheduled", "proposal-executed",
                 "proposal-cancelled"),
}
# Tables whose `digest` column is not an artifact digest (a postmortem document's): --digest skips them.
NOT_ARTIFACT_DIGEST = frozenset({"postmortem_attached"})


_json_object = json.JSONDecoder().decode  # one decoder for every row: json.loads re-checks its arguments each call


class IndexMismatch(ShipledgerError):
    """The index file belongs to another chain or another suite (or another schema)."""


class IndexBusy(ShipledgerError):
    """Another process is syncing this index file right now."""


class IndexReadOnly(PathError):
    """The index file (or its directory) cannot be written by this process, and a sync needs to: a
    path the user named that cannot be used, exit 2 like any other."""


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: the blocks it scanned (from_block > to_block when there was nothing new),
    the events it added, and the checkpoint it found gone from the chain (None if there was no rewind)."""

    from_block: int
    to_block: int
    events: int
    rewound_from: int | None


# ---------------------------------------------------------------------- naming and values

def snake_case(name: str) -> str:
    """serviceKey -> service_key, fromStatus -> from_status, EIP712DomainChanged -> eip712_domain_changed."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name).lower()


@lru_cache(maxsize=4096)
def _checksum(address: str) -> str:
    return checksum_address(address)


def _json_value(abi_type: str, value, components: list | None = None):
    """A decoded ABI value as the spec encodes it in JSON (see the module docstring of the spec)."""
    if abi_type.endswith("]"):
        inner = abi_type[: abi_type.rindex("[")]
        return [_json_value(inner, v, components) for v in value]
    if abi_type == "tuple":
        return {c["name"]: _json_value(c["type"], v, c.get("components")) for c, v in zip(components, value)}
    if abi_type == "address":
        return _checksum(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def _topic_reader(abi_type: str) -> Callable[[str], object]:
    """Reads an indexed argument from its topic ('0x' + 64 hex): value types are the 32-byte word,
    other types (string, bytes, arrays, structs) only their keccak hash."""
    if abi_type == "address":
        return lambda topic: _checksum("0x" + topic[-40:])
    if abi_type == "bool":
        return lambda topic: int(topic, 16) != 0
    if abi_type.startswith("uint"):
        return lambda topic: int(topic, 16)
    if abi_type.startswith("int"):
        return lambda topic: int(topic, 16) - (1 << 256) if int(topic[2], 16) >= 8 else int(topic, 16)
    if abi_type.startswith("bytes") and abi_type != "bytes":
        size = int(abi_type[5:])
        return lambda topic: "0x" + topic[2 : 2 + 2 * size].lower()
    return lambda topic: topic.lower()


def _column_value(value):
    """A JSON value as a record-table column: bools 0/1, big integers as text, arrays as JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
        return str(value)
    if isinstance(value, list):
        return json.dumps(value)
    return value


# Types whose JSON value is already its column value (the common case, skipped cheaply).
_PLAIN_COLUMN_TYPES = frozenset(["address", "string", "bytes"] + [f"bytes{n}" for n in range(1, 33)]
                                + [f"uint{n}" for n in range(8, 64, 8)] + [f"int{n}" for n in range(8, 72, 8)])


_ARGS_JSON = json.JSONEncoder(check_circular=False, separators=(",", ":"))  # compact; args hold no cycles


def _column_type(abi_type: str) -> str:
    """Declared SQLite type. Wide integers get none: an INTEGER column would turn big text into REAL."""
    match = re.fullmatch(r"(u?)int(\d*)", abi_type)
    if match:
        bits = int(match.group(2) or 256)
        return "INTEGER" if bits < 64 or (bits == 64 and match.group(1) == "") else ""
    return "INTEGER" if abi_type == "bool" else "TEXT"


def _word_reader(abi_type: str):
    """A reader of one 32-byte ABI word at a position, giving the JSON value; None if not a word type."""
    if abi_type == "address":
        return lambda data, at: _checksum("0x" + data[at + 12 : at + 32].hex())
    if abi_type == "bool":
        return lambda data, at: data[at : at + 32] != bytes(32)
    match = re.fullmatch(r"(u?)int(\d*)", abi_type)
    if match:
        signed = match.group(1) == ""
        return lambda data, at: int.from_bytes(data[at : at + 32], "big", signed=signed)
    match = re.fullmatch(r"bytes(\d+)", abi_type)
    if match:
        size = int(match.group(1))
        return lambda data, at: "0x" + data[at : at + size].hex()
    return None


def _word_array(abi_type: str):
    """A reader of a dynamic array of value types (`T[]`) whose offset word is at `at`, counted from
    `base` (0 at the top level, a struct's start inside one); None for other types."""
    if not re.fullmatch(r"[a-z0-9]+\[\]", abi_type) or _word_reader(abi_type[:-2]) is None:
        return None
    element = _word_reader(abi_type[:-2])

    def read(data, at, base=0):
        offset = base + int.from_bytes(data[at : at + 32], "big")
        count = int.from_bytes(data[offset : offset + 32], "big")
        if offset + 32 * (count + 1) > len(data):
            raise ValueError("truncated")
        return [element(data, offset + 32 * (i + 1)) for i in range(count)]

    return read


def _fast_decoder(inputs: list[dict]):
    """A decoder of event data for the plain shapes the suite emits (value types, static structs of
    value types, string, bytes, arrays of value types), giving the same JSON values as eth_abi's
    decode followed by _json_value at a fraction of its cost (eth_abi is ~80% of a sync otherwise).
    None when some input has another shape: that event then goes through eth_abi."""
    readers = []  # (head size, fn(data, head position) -> value)
    for item in inputs:
        kind = item["type"]
        word = _word_reader(kind)
        if word is not None:
            readers.append((32, word))
        elif kind == "tuple" and all(_word_reader(c["type"]) for c in item["components"]):
            fields = [(c["name"], _word_reader(c["type"]), 32 * i) for i, c in enumerate(item["components"])]
            readers.append((32 * len(fields), lambda data, at, fields=fields: {n: f(data, at + o) for n, f, o in fields}))
        elif kind == "tuple" and all(_word_reader(c["type"]) or _word_array(c["type"]) for c in item["components"]):
            # A struct with arrays of value types (PolicySet's Policy): dynamic, so its head slot holds
            # the offset of its own head, and each array's offset counts from there.
            fields = [(c["name"], _word_reader(c["type"]), _word_array(c["type"]), 32 * i)
                      for i, c in enumerate(item["components"])]

            def read(data, at, fields=fields):
                base = int.from_bytes(data[at : at + 32], "big")
                if base + 32 * len(fields) > len(data):
                    raise ValueError("truncated")
                return {n: word(data, base + o) if word else array(data, base + o, base) for n, word, array, o in fields}

            readers.append((32, read))
        elif kind in ("string", "bytes"):
            as_text = kind == "string"

            def read(data, at, as_text=as_text):
                offset = int.from_bytes(data[at : at + 32], "big")
                length = int.from_bytes(data[offset : offset + 32], "big")
                if offset + 32 + length > len(data):
                    raise ValueError("truncated")
                raw = data[offset + 32 : offset + 32 + length]
                return raw.decode("utf-8") if as_text else "0x" + raw.hex()

            readers.append((32, read))
        elif _word_array(kind):
            readers.append((32, _word_array(kind)))
        elif kind == "string[]":

            def read(data, at):
                offset = int.from_bytes(data[at : at + 32], "big")
                count = int.from_bytes(data[offset : offset + 32], "big")
                items = offset + 32  # element offsets count from here
                if items + 32 * count > len(data):
                    raise ValueError("truncated")
                out = []
                for i in range(count):
                    start = items + int.from_bytes(data[items + 32 * i : items + 32 * (i + 1)], "big")
                    length = int.from_bytes(data[start : start + 32], "big")
                    if start + 32 + length > len(data):
                        raise ValueError("truncated")
                    out.append(data[start + 32 : start + 32 + length].decode("utf-8"))
                return out

            readers.append((32, read))
        else:
            return None
    head_size = sum(size for size, _ in readers)

    def decode(data: bytes) -> list:
        if len(data) < head_size:
            raise ValueError("short data")
        values, at = [], 0
        for size, read in readers:
            values.append(read(data, at))
            at += size
        return values

    return decode


# ---------------------------------------------------------------------- the events of the suite

@dataclass(frozen=True)
class EventType:
    contract: str  # 'ReleaseRegistry' | 'Governance' | 'DeploymentLedger'
    name: str  # ABI name, e.g. 'ArtifactApproved'
    kind: str
    table: str
    inputs: tuple  # ABI inputs, in order
    data_types: tuple  # canonical types of the non-indexed inputs, for one eth_abi.decode per log
    columns: tuple  # (column name, declared type) after the common columns
    has_target: bool  # keyed by target: gets resolved service and environment columns
    fast: Callable | None  # _fast_decoder of the data, when the shapes allow
    topic_readers: tuple  # per indexed input, in order: topic hex -> JSON value
    order: tuple  # input i's value is (topic values + data values)[order[i]]

    def decode(self, topics: list[str], data: bytes) -> dict:
        """The arguments by ABI name, JSON-ready."""
        values = None
        if self.fast is not None:
            try:
                values = self.fast(data)
            except (ValueError, UnicodeDecodeError):
                values = None  # malformed or not UTF-8: eth_abi below says what is wrong, or mends it
        if values is None:
            values = self.decode_with_eth_abi(data)
        combined = [read(topic) for read, topic in zip(self.topic_readers, topics[1:])] + values
        return {item["name"]: combined[i] for item, i in zip(self.inputs, self.order)}

    def decode_with_eth_abi(self, data: bytes) -> list:
        """The non-indexed arguments as JSON values, decoded by eth_abi (the reference decoder)."""
        # Imported here: eth_abi (with eth_utils and pydantic) costs ~0.5 s of CPU to import, and the
        # fast decoder handles every event the suite emits well-formed, so most syncs never need it.
        from eth_abi import decode as abi_decode

        try:
            raw = abi_decode(self.data_types, data)
        except Exception:  # noqa: BLE001 - e.g. a string that is not UTF-8: keep the event, mend the text
            types = tuple("bytes" if t == "string" else t for t in self.data_types)
            raw = [v.decode("utf-8", "replace") if t == "string" else v
                   for t, v in zip(self.data_types, abi_decode(types, data, strict=False))]
        items = [i for i in self.inputs if not i.get("indexed")]
        return [_json_value(i["type"], v, i.get("components")) for i, v in zip(items, raw)]

    def column_values(self, args: dict) -> list:
        """The argument columns of the record table, in `columns` order (structs flattened)."""
        out = []
        for item in self.inputs:
            value = args[item["name"]]
            kind = item["type"]
            if kind in _PLAIN_COLUMN_TYPES:
                out.append(value)  # text, or an integer that fits: stored as it is
            elif kind == "tuple":
                out.extend(_column_value(value[c["name"]]) for c in item["components"])
            else:
                out.append(_column_value(value))
        return out


def _event_type(contract: str, item: dict) -> EventType:
    from shipledger.models import EVENT_KINDS

    columns = []
    for arg in item["inputs"]:
        if arg["type"] == "tuple":
            for c in arg["components"]:
                columns.append((f"{snake_case(arg['name'])}_{snake_case(c['name'])}", _column_type(c["type"])))
        else:
            columns.append((snake_case(arg["name"]), _column_type(arg["type"])))
    # keyed by a target (keccak of service and environment); ProposalCreated's `target` is an address
    has_target = any(arg["name"] == "target" and arg["type"] == "bytes32" for arg in item["inputs"])
    indexed = [i for i in item["inputs"] if i.get("indexed")]
    plain = [i for i in item["inputs"] if not i.get("indexed")]
    if has_target:
        columns += [("service", "TEXT"), ("environment", "TEXT")]
    return EventType(
        contract=contract,
        name=item["name"],
        kind=EVENT_KINDS.get(item["name"], item["name"]),
        table=snake_case(item["name"]),
        inputs=tuple(item["inputs"]),
        data_types=tuple(canonical_type(i) for i in item["inputs"] if not i.get("indexed")),
        columns=tuple(columns),
        has_target=has_target,
        fast=_fast_decoder([i for i in item["inputs"] if not i.get("indexed")]),
        topic_readers=tuple(_topic_reader(i["type"]) for i in indexed),
        order=tuple(indexed.index(i) if i.get("indexed") else len(indexed) + plain.index(i) for i in item["inputs"]),
    )


@lru_cache(maxsize=1)
def event_types() -> dict[str, EventType]:
    """topic0 ('0x' + hex) -> EventType, for every record event of the suite (see _internal/history:
    OpenZeppelin's events the contracts do not fold are left out, so no topic0 names two contracts)."""
    table = {}
    for contract in artifacts.SUITE:
        for item in artifacts.abi(contract):
            if item["type"] == "event" and not item.get("anonymous") and is_record(contract, item["name"]):
                signature = f"{item['name']}({','.join(canonical_type(i) for i in item['inputs'])})"
                topic = "0x" + keccak(signature).hex()
                assert topic not in table, f"{item['name']} is a record of two contracts"
                table[topic] = _event_type(contract, item)
    return table


def record_tables() -> dict[str, EventType]:
    """Record table name -> EventType."""
    return {e.table: e for e in event_types().values()}


def _target_key(service: str, environment: str) -> str:
    return "0x" + keccak(keccak(service) + keccak(environment)).hex()


# ---------------------------------------------------------------------- schema

BASE_COLUMNS = ("block_number", "log_index", "block_hash", "tx_hash", "timestamp")
EVENT_COLUMNS = ("block_number", "log_index", "block_hash", "tx_hash", "tx_index", "timestamp", "contract",
                 "address", "event", "kind", "service", "environment", "args", "history_head", "history_count")
INDEXED_RECORD_COLUMNS = ("digest", "id", "approver", "org", "account")  # what history and trace look up


def _schema() -> list[str]:
    statements = [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL, timestamp INTEGER NOT NULL)",
        """CREATE TABLE IF NOT EXISTS events (
            block_number INTEGER NOT NULL, log_index INTEGER NOT NULL,
            block_hash TEXT NOT NULL, tx_hash TEXT NOT NULL, tx_index INTEGER NOT NULL,
            timestamp INTEGER NOT NULL, contract TEXT NOT NULL, address TEXT NOT NULL,
            event TEXT NOT NULL, kind TEXT NOT NULL, service TEXT NOT NULL, environment TEXT NOT NULL,
            args TEXT NOT NULL, history_head TEXT NOT NULL, history_count INTEGER NOT NULL,
            PRIMARY KEY (block_number, log_index))""",
        "CREATE INDEX IF NOT EXISTS events_history ON events (contract, history_count)",
        "CREATE INDEX IF NOT EXISTS events_kind ON events (kind)",
        "CREATE INDEX IF NOT EXISTS events_target ON events (service, environment)",
        "CREATE INDEX IF NOT EXISTS events_tx ON events (tx_hash)",
    ]
    for e in record_tables().values():
        # Quoted: some argument names are SQL keywords (ApproverSlotAssigned.index).
        columns = ", ".join(f'"{name}" {kind}'.rstrip() for name, kind in e.columns)
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {e.table} (block_number INTEGER NOT NULL, log_index INTEGER NOT NULL, "
            f"block_hash TEXT NOT NULL, tx_hash TEXT NOT NULL, timestamp INTEGER NOT NULL"
            f"{', ' + columns if columns else ''}, PRIMARY KEY (block_number, log_index))"
        )
        names = {name for name, _ in e.columns}
        for column in INDEXED_RECORD_COLUMNS:
            if column in names:
                statements.append(f"CREATE INDEX IF NOT EXISTS {e.table}_{column} ON {e.table} ({column})")
    return statements


# ---------------------------------------------------------------------- JSON-RPC

class _RangeRefused(Exception):
    """The node would not answer eth_getLogs for this range (too many results, too wide, too slow)."""


class _ChainMoved(Exception):
    """The chain changed while a chunk was being read: start over from the checkpoint check."""


class _NotThereYet(Exception):
    """The node has not got the blocks of this range yet (it lags): stop at what is committed."""


@dataclass(frozen=True)
class Endpoint:
    """What a sync reads from: the node's URL and the suite's addresses. Built from a connected Ledger,
    or by `connect` with one batched request and no web3 (the CLI's reads start ~0.4 s sooner).
    timeout: seconds to wait for the node's answer to one request."""

    url: str
    chain_id: int
    registry: str
    ledger: str
    start_block: int
    governance: str = ""
    timeout: float = field(default=RPC_TIMEOUT, compare=False)

    @classmethod
    def of(cls, source) -> "Endpoint":
        """An Endpoint as is, or a Ledger's (with the time-out it was connected with, if any)."""
        if isinstance(source, Endpoint):
            return source
        url = getattr(source.w3.provider, "endpoint_uri", None)
        return cls(_http_url(url), source.chain_id, source.registry.address, source.ledger.address,
                   _start_block(source.book), source.governance.address,
                   getattr(source, "rpc_timeout", None) or RPC_TIMEOUT)

    @classmethod
    def connect(cls, url: str, book: dict, timeout: float | None = None) -> "Endpoint":
        """Check the node against the address book (same chain id, code at both addresses), as
        Ledger.connect does."""
        from shipledger.errors import AddressBookError

        timeout = timeout or RPC_TIMEOUT
        contracts = {name: checksum_address(book["contracts"][name]["address"]) for name in artifacts.SUITE}
        chain_id, *codes = Rpc(_http_url(url), timeout=timeout).batch(
            [("eth_chainId", []), *(("eth_getCode", [address, "latest"]) for address in contracts.values())])
        if int(chain_id, 16) != int(book["chain_id"]):
            raise AddressBookError(f"the address book is for chain {book['chain_id']} but {url} is chain {int(chain_id, 16)}")
        for (name, address), code in zip(contracts.items(), codes):
            if code in (None, "0x", ""):
                raise AddressBookError(f"no contract code at {address} ({name}) on chain {int(chain_id, 16)}")
        return cls(url, int(chain_id, 16), contracts["ReleaseRegistry"], contracts["DeploymentLedger"],
                   _start_block(book), contracts["Governance"], timeout)

    def suite(self) -> dict[str, str]:
        """The meta rows that bind an index to this suite."""
        return {"chain_id": str(self.chain_id), "registry": self.registry, "ledger": self.ledger,
                "governance": self.governance, "start_block": str(self.start_block)}

    def contracts(self) -> dict[str, str]:
        """Contract name -> address, for the suite's three contracts."""
        return {"ReleaseRegistry": self.registry, "Governance": self.governance, "DeploymentLedger": self.ledger}


def _http_url(url) -> str:
    if not url or not str(url).startswith("http"):
        # as the gate and web3 say of a URL they cannot use: the node cannot be reached (exit 1)
        raise ConnectionFailed(f"cannot reach the JSON-RPC node at {url!r}: the index syncs over HTTP JSON-RPC, so it needs an http(s) URL")
    return str(url)


def _start_block(book: dict) -> int:
    return min(int(book["contracts"][name].get("block", 0)) for name in artifacts.SUITE)


def _block_call(number: int) -> tuple[str, list]:
    return "eth_getBlockByNumber", [hex(number), False]


# ---------------------------------------------------------------------- points in time

def parse_when(text: str, *, end: bool = False) -> int | datetime:
    """A --since/--until value: a plain integer is a block number; YYYY-MM-DD or an ISO datetime is a
    time (UTC unless it names a zone). With end=True a bare date means the end of that day."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, dt_time(), timezone.utc)
            return moment - timedelta(seconds=1) if end else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is neither a block number nor a date (YYYY-MM-DD) or ISO datetime") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _time_bound(value, end: bool) -> tuple[str, int]:
    """('block_number' | 'timestamp', number) for a since/until argument of Index.history."""
    if isinstance(value, bool):
        raise UsageError("since/until must be a block number, a date or a datetime")
    if isinstance(value, int):
        return "block_number", value
    if isinstance(value, float):
        return "timestamp", int(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return "timestamp", int(moment.timestamp())
    if isinstance(value, date):
        day = value + timedelta(days=1) if end else value
        seconds = int(datetime.combine(day, dt_time(), timezone.utc).timestamp())
        return "timestamp", seconds - 1 if end else seconds
    if isinstance(value, str):
        return _time_bound(parse_when(value, end=end), end)
    raise UsageError(f"since/until must be a block number, a date or a datetime, not {value!r}")


def digest_hex(value: str | bytes) -> str:
    """An artifact digest as the index stores it ('0x' + 64 hex) from 'sha256:<hex>', '0x<hex>' or bytes."""
    from shipledger._internal.names import parse_digest

    if isinstance(value, bytes):
        if len(value) != 32:
            raise UsageError("a digest is 32 bytes")
        return "0x" + value.hex()
    text = value.strip().lower()
    if text.startswith("0x"):
        if not re.fullmatch(r"0x[0-9a-f]{64}", text):
            raise UsageError(f"malformed digest {value!r}: expected sha256:<64 hex digits> or 0x<64 hex digits>")
        return text
    return "0x" + parse_digest(text).hex()


def expand_kinds(kinds: Iterable[str]) -> list[str]:
    """Event kinds with family aliases ('incident') expanded; unknown kinds are a usage error."""
    known = {e.kind for e in event_types().values()}
    out = []
    for kind in kinds:
        kind = kind.strip().lower()
        if kind in KIND_ALIASES:
            out.extend(KIND_ALIASES[kind])
        elif kind in known:
            out.append(kind)
        else:
            raise UsageError(f"unknown event kind {kind!r}; kinds are {', '.join(sorted(known | set(KIND_ALIASES)))}")
    return out


# ---------------------------------------------------------------------- the index

def _cannot_write(exc: sqlite3.OperationalError) -> bool:
    """SQLite's ways of saying the file or its directory is not writable here."""
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _read_only_connection(uri: str) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA cache_size=-65536")
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # SQLite opens lazily: fail here, not later
    return db


def _check_version(db: sqlite3.Connection, path: Path, version) -> None:
    if version is not None and version[0] != SCHEMA_VERSION:
        db.close()
        raise IndexMismatch(f"{path} has index schema {version[0]}, this shipledger writes {SCHEMA_VERSION}; "
                            f"delete it (it is rebuilt from the chain) or use another --db")
    if version is None:  # only a read-only open gets here: the file is some other SQLite database
        db.close()
        raise IndexMismatch(f"{path} is not an index (it has no schema version)")


def _open_writable(path: Path, timeout: float = 60) -> tuple[sqlite3.Connection, tuple | None]:
    """A connection in WAL mode with the schema in place, and the stored schema version (None if this
    call created it). Two processes opening a new file at once can get "database is locked" from the
    switch to WAL, which SQLite's busy timeout does not cover: that one is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash never loses a commit
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB: index pages of random keys (hashes) stay cached
            db.execute("BEGIN IMMEDIATE")
            for statement in _schema():
                db.execute(statement)
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
            return db, version
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        except BaseException:
            db.close()
            raise


class Index:
    """A SQLite index of one suite's events; see the module docstring."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db = db
        self.path = path
        self._chunk = INITIAL_CHUNK
        self._added = 0

    @classmethod
    def open(cls, path: str | Path = DEFAULT_DB, *, read_only: bool = False) -> "Index":
        """Open (and create) the index at path; with read_only, open an existing index without
        writing anything, so a file or directory this process may not write can still be read."""
        path = Path(path)
        if read_only:
            return cls._open_read_only(path)
        if str(path) != ":memory:":
            # a path we cannot use is bad input (exit 2); a file that is no index stays IndexMismatch below
            if path.is_dir():
                raise PathError(f"index database {path} is a directory")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise path_error(f"the directory of index database {path}", exc, "create") from None
            # SQLite's WAL files go beside the database
            if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
                raise IndexReadOnly(f"cannot write the index {path} (permission denied or a read-only filesystem); "
                                    "read it as it is with --no-sync, or sync a copy this user may write")
        try:
            db, version = _open_writable(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _cannot_write(exc):
                raise IndexReadOnly(f"cannot write the index {path} ({exc}); read it as it is with --no-sync, "
                                    f"or sync a copy this user may write") from None
            raise IndexMismatch(f"{path} is not a usable index database: {exc}") from None
        _check_version(db, path, version or (SCHEMA_VERSION,))  # None: it was just created
        return cls(db, path)

    @classmethod
    def _open_read_only(cls, path: Path) -> "Index":
        if not path.is_file():
            where = f"{path.parent} does not exist" if not path.parent.is_dir() else "no such file"
            raise UsageError(f"no index at {path} ({where}); sync one first (drop --no-sync, or run "
                             f"`shipledger index sync --db {path}`)")
        uri = "file:" + quote(str(path.resolve()))
        try:
            db = _read_only_connection(uri + "?mode=ro")
        except sqlite3.OperationalError as exc:
            # A WAL index read where nothing may be written: SQLite wants to create the -shm file.
            # With no -wal file every commit is in the main file, and no writer has it open (a
            # writer keeps both files), so reading it as immutable is exact.
            if not _cannot_write(exc) or path.with_name(path.name + "-wal").exists():
                raise IndexMismatch(f"cannot read the index {path}: {exc}") from None
            try:
                db = _read_only_connection(uri + "?mode=ro&immutable=1")
            except sqlite3.DatabaseError as exc:
                raise IndexMismatch(f"{path} is not a usable index database: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise IndexMismatch(f"{path} is not a usable index database: {exc}") from None
        try:
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise IndexMismatch(f"{path} is not a usable index database: {exc}") from None
        _check_version(db, path, version)
        return cls(db, path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ meta

    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self.db.execute("SELECT key, value FROM meta")}

    def _checkpoint(self) -> tuple[int, str] | None:
        meta = self.meta()
        if "checkpoint_block" not in meta:
            return None
        return int(meta["checkpoint_block"]), meta["checkpoint_hash"]

    def _bind(self, endpoint: Endpoint) -> None:
        """Tie a new index to this suite, or check that an old one belongs to it."""
        suite = endpoint.suite()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            meta = self.meta()
            if "chain_id" not in meta:
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", suite.items())
            else:
                for key in ("chain_id", "registry", "ledger", "governance"):
                    if meta.get(key) != suite[key]:
                        raise IndexMismatch(
                            f"the index {self.path} belongs to chain {meta['chain_id']}, registry {meta['registry']}, "
                            f"ledger {meta['ledger']}, governance {meta.get('governance')}, not to this suite (chain "
                            f"{suite['chain_id']}, registry {suite['registry']}, ledger {suite['ledger']}, governance "
                            f"{suite['governance']}); pass another --db")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ sync

    def sync(
        self,
        source,
        *,
        confirmations: int = 0,
        progress: Callable[[int, int], None] | None = None,
        chunk_blocks: int | None = None,
    ) -> SyncResult:
        """Bring the index up to the chain head minus `confirmations` blocks, reading from `source`
        (a Ledger or an Endpoint). progress(done, total) is called after each committed chunk. chunk_blocks sets the first chunk's size (tests)."""
        if confirmations < 0:
            raise UsageError("confirmations must be 0 or more")
        endpoint = Endpoint.of(source)
        with self._sync_lock():
            self._bind(endpoint)
            return self._sync(endpoint, Rpc(endpoint.url, timeout=endpoint.timeout), confirmations, progress, chunk_blocks)

    @contextmanager
    def _sync_lock(self):
        """One sync at a time per index file; readers never wait. A second sync fails at once rather
        than wait behind the first, which may itself be waiting a minute for a hung node: two syncs
        racing would fetch the same chunks and the loser's commits would be refused anyway."""
        if fcntl is None or str(self.path) == ":memory:":
            yield
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock = open(lock_path, "a")
        except OSError as exc:
            raise IndexReadOnly(f"cannot write the index lock {lock_path} ({exc.strerror}); read the index as it "
                                f"is with --no-sync") from None
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusy(f"another process is syncing the index {self.path} (it holds {lock_path}); "
                                f"try again when it is done, or read the index as it is with --no-sync") from None
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _sync(self, endpoint: Endpoint, rpc, confirmations, progress, chunk_blocks) -> SyncResult:
        if chunk_blocks:
            self._chunk = chunk_blocks
        suite = endpoint.suite()
        addresses = [suite["registry"], suite["governance"], suite["ledger"]]
        self._contract_at = {address.lower(): name for name, address in endpoint.contracts().items()}
        targets = self._known_targets()
        self._heads = self.history_heads()
        rewound_from = None
        self._added = 0  # events committed by this sync, counted per chunk (a restart keeps the count)
        first_block = None
        for _ in range(MAX_RESTARTS):
            head = int(rpc.call("eth_blockNumber", []), 16) - confirmations
            checkpoint = self._checkpoint()
            if checkpoint is not None:
                block = rpc.call(*_block_call(checkpoint[0]))
                if block is None or block["hash"] != checkpoint[1]:
                    rewound_from = checkpoint[0] if rewound_from is None else rewound_from
                    self._rewind(rpc, suite)
                    targets = self._known_targets()
                    self._heads = self.history_heads()
                    continue
            start = checkpoint[0] + 1 if checkpoint else int(self.meta()["start_block"])
            first_block = start if first_block is None else first_block
            try:
                synced_to = self._sync_range(rpc, addresses, targets, checkpoint, start, head, progress)
            except _ChainMoved:
                targets = self._known_targets()
                self._heads = self.history_heads()
                continue
            return SyncResult(first_block, synced_to, self._added, rewound_from)
        raise ConnectionFailed(f"the chain kept changing under the index ({MAX_RESTARTS} restarts); try again")

    def _sync_range(self, rpc, addresses, targets, checkpoint, start, head, progress) -> int:
        """Fetch chunk after chunk and commit each; the next chunk is fetched (in a worker thread)
        while this one is decoded and written, so the node and this process work at once. Returns
        the last block committed: `head`, or less when the node turned out not to have the blocks yet."""
        ceiling = MAX_CHUNK  # below the smallest range the node refused lately
        successes = 0
        pool = ThreadPoolExecutor(max_workers=1)

        def fetch(cursor: int, anchor) -> tuple:
            size = min(self._chunk, ceiling)
            end = min(cursor + size - 1, head)
            return cursor, end, size, anchor, pool.submit(self._fetch, rpc, addresses, anchor, cursor, end)

        if start > head:
            return head  # nothing new (from_block > to_block in the SyncResult)
        synced_to = start - 1
        try:
            pending = fetch(start, checkpoint) if start <= head else None
            while pending is not None:
                cursor, end, size, anchor, future = pending
                try:
                    logs, end_block = future.result()
                except _NotThereYet:
                    # The node has not got block `end` yet: sync as far as it has, halving the range
                    # towards its head; a block it lacks right after the checkpoint ends this sync.
                    if end == cursor:
                        return synced_to
                    head = (cursor + end) // 2
                    pending = fetch(cursor, anchor)
                    continue
                except _RangeRefused as exc:
                    if end == cursor:
                        raise ConnectionFailed(f"the node refuses eth_getLogs even for block {cursor}: {exc}") from None
                    ceiling = self._chunk = max(1, (end - cursor + 1) // 2)
                    successes = 0
                    pending = fetch(cursor, anchor)
                    continue
                # Adapt: shrink towards TARGET_LOGS per chunk, else grow (not past a recent refusal).
                successes += 1
                if successes >= 10:
                    ceiling = MAX_CHUNK
                if len(logs) > 2 * TARGET_LOGS:
                    self._chunk = max(1, size * TARGET_LOGS // len(logs))
                elif len(logs) < TARGET_LOGS:
                    self._chunk = min(size * 2, MAX_CHUNK)
                pending = fetch(end + 1, (end, end_block["hash"])) if end < head else None
                checkpoint = self._write(logs, end_block, targets, checkpoint)
                synced_to = end
                self._added += self._written
                if progress:
                    progress(end - start + 1, head - start + 1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return synced_to

    def _fetch(self, rpc, addresses, checkpoint, start, end) -> tuple[list[dict], dict]:
        """The suite's logs in [start, end] and the header of `end`, checked to belong to one chain
        that still holds the checkpoint: end's hash is read before and after the logs."""
        before, logs = rpc.replies([
            _block_call(end),
            ("eth_getLogs", [{"address": addresses, "fromBlock": hex(start), "toBlock": hex(end)}]),
        ])
        if "error" in logs:
            text = error_text(logs)
            if NOT_YET.search(text):
                raise _NotThereYet(text)
            if REFUSAL.search(text) or (logs.get("error") or {}).get("code") == -32005:
                raise _RangeRefused(text)
            raise ConnectionFailed(f"eth_getLogs failed: {text}")
        if before.get("result") is None:
            # This node has no block `end`: it lags the head we were given, or the chain went back
            # (the next sync's checkpoint check sees that).
            raise _NotThereYet()
        logs = [log for log in logs["result"] if not log.get("removed")]
        # Blocks whose time the logs do not carry (older nodes), plus end and checkpoint to check.
        needed = sorted({int(log["blockNumber"], 16) for log in logs if "blockTimestamp" not in log})
        numbers = [end] + ([checkpoint[0]] if checkpoint else []) + needed
        blocks = rpc.fetch("eth_getBlockByNumber", [[hex(n), False] for n in numbers], MAX_BATCH)
        end_block = blocks[0]
        if end_block is None or end_block["hash"] != before["result"]["hash"]:
            raise _ChainMoved()
        if checkpoint and (blocks[1] is None or blocks[1]["hash"] != checkpoint[1]):
            raise _ChainMoved()
        headers = {int(b["number"], 16): b for b in blocks[1 + bool(checkpoint):] if b is not None}
        for log in logs:
            if "blockTimestamp" not in log:
                header = headers.get(int(log["blockNumber"], 16))
                if header is None or header["hash"] != log["blockHash"]:
                    raise _ChainMoved()
                log["blockTimestamp"] = header["timestamp"]
        return logs, end_block

    def _known_targets(self) -> dict[str, tuple[str, str]]:
        """target key -> (service, environment), from the deployments and incidents indexed so far."""
        rows = self.db.execute(
            "SELECT DISTINCT service, environment FROM deployment_started "
            "UNION SELECT DISTINCT service, environment FROM incident_opened"
        )
        return {_target_key(r[0], r[1]): (r[0], r[1]) for r in rows}

    def _write(self, logs, end_block, targets, checkpoint) -> tuple[int, str]:
        """Decode a chunk and commit it with its new checkpoint, all or nothing."""
        types = event_types()
        contract_at = self._contract_at
        heads = dict(self._heads)  # committed below with the chunk, or dropped with it
        event_rows = []
        record_rows: dict[str, list] = {}
        blocks = {}
        for log in logs:
            event = types.get(log["topics"][0] if log["topics"] else None)
            if event is None or contract_at.get(log["address"].lower()) != event.contract:
                continue  # not a record of the contract at that address (TimelockController's own events)
            head, count = heads.get(event.contract, (ZERO_HEAD, 0))
            heads[event.contract] = head, count = fold_log(head, log), count + 1
            args = event.decode(log["topics"], bytes.fromhex(log["data"][2:]))
            number = int(log["blockNumber"], 16)
            index = int(log["logIndex"], 16)
            block_hash = log["blockHash"].lower()
            tx_hash = log["transactionHash"].lower()
            timestamp = int(log["blockTimestamp"], 16)
            blocks[number] = (block_hash, timestamp)
            # Service and environment as Ledger.history() resolves them.
            service, environment = args.get("service", ""), args.get("environment", "")
            if event.kind in ("deployed", "incident-opened"):
                targets[_target_key(service, environment)] = (service, environment)
            elif event.has_target:
                service, environment = targets.get(args["target"], ("", ""))
            event_rows.append((
                number, index, block_hash, tx_hash, int(log["transactionIndex"], 16), timestamp, event.contract,
                _checksum(log["address"]), event.name, event.kind, service, environment, _ARGS_JSON.encode(args),
                head, count,
            ))
            row = [number, index, block_hash, tx_hash, timestamp, *event.column_values(args)]
            if event.has_target:
                row += [service, environment]
            record_rows.setdefault(event.table, []).append(row)
        end = int(end_block["number"], 16)
        blocks[end] = (end_block["hash"], int(end_block["timestamp"], 16))
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._checkpoint() != checkpoint:
                raise _ChainMoved()  # another process synced meanwhile: continue from its checkpoint
            db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?)", [(n, h, t) for n, (h, t) in blocks.items()])
            db.executemany(f"INSERT INTO events VALUES ({', '.join('?' * len(EVENT_COLUMNS))})", event_rows)
            for table, rows in record_rows.items():
                db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [("checkpoint_block", str(end)), ("checkpoint_hash", end_block["hash"])])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._heads = heads
        self._written = len(event_rows)
        return end, end_block["hash"]

    def _rewind(self, rpc, suite) -> None:
        """Drop everything after the last block the index shares with the chain, in one transaction."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            common = None
            below = None
            while common is None:
                page = db.execute(
                    "SELECT number, hash FROM blocks WHERE number < coalesce(?, 1 << 62) ORDER BY number DESC LIMIT 200",
                    (below,),
                ).fetchall()
                if not page:
                    break
                replies = rpc.replies([_block_call(row["number"]) for row in page])
                for row, reply in zip(page, replies):
                    block = reply.get("result")
                    if block is not None and block["hash"] == row["hash"]:
                        common = (row["number"], row["hash"])
                        break
                below = page[-1]["number"]
            floor = common[0] if common else -1
            for table in ["events", "blocks", *record_tables()]:
                column = "number" if table == "blocks" else "block_number"
                db.execute(f"DELETE FROM {table} WHERE {column} > ?", (floor,))
            if common:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("checkpoint_block", str(common[0])), ("checkpoint_hash", common[1])])
            else:  # nothing in common: start over from the suite's deployment block
                db.execute("DELETE FROM meta WHERE key IN ('checkpoint_block', 'checkpoint_hash')")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('start_block', ?)", (suite["start_block"],))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ reads

    def history_heads(self) -> dict[str, tuple[str, int]]:
        """Contract name -> (head, count) after its last indexed record (absent: no record yet)."""
        rows = self.db.execute(
            "SELECT e.contract, e.history_head, e.history_count FROM events AS e JOIN "
            "(SELECT contract, max(history_count) AS n FROM events GROUP BY contract) AS last "
            "ON e.contract = last.contract AND e.history_count = last.n").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def organisation_id(self, org: int | str) -> int:
        """An organisation by id or by name (names come from OrganisationAdded)."""
        if isinstance(org, int) or (isinstance(org, str) and org.strip().isdigit()):
            return int(org)
        row = self.db.execute("SELECT org FROM organisation_added WHERE name = ? ORDER BY block_number DESC",
                              (org,)).fetchone()
        if row is None:
            known = [r[0] for r in self.db.execute("SELECT name FROM organisation_added ORDER BY org")]
            raise UsageError(f"no organisation named {org!r} in the index" + (f"; known: {', '.join(known)}" if known else ""))
        return int(row[0])

    def members(self) -> list[dict]:
        """Current members in the order they joined: {'address', 'org', 'organisation' (its name)},
        rebuilt from the member and organisation events as Ledger.members() does from the logs."""
        names = dict(self.db.execute("SELECT org, name FROM organisation_added").fetchall())
        members: dict[str, dict] = {}
        for account, org, added, _, _ in self.db.execute(
                "SELECT account, org, 1, block_number, log_index FROM member_added UNION ALL "
                "SELECT account, org, 0, block_number, log_index FROM member_removed ORDER BY 4, 5").fetchall():
            if added:
                members[account] = {"address": account, "org": org, "organisation": names.get(org)}
            else:
                members.pop(account, None)
        return list(members.values())

    def open_incidents(self, service: str, environment: str) -> list[int]:
        """Ids of the incidents on (service, environment) with no IncidentResolved indexed, oldest first."""
        rows = self.db.execute(
            "SELECT id FROM incident_opened WHERE service = ? AND environment = ? AND id NOT IN "
            "(SELECT id FROM incident_resolved) ORDER BY id", (service, environment)).fetchall()
        return [int(r[0]) for r in rows]

    def started_release(self, deployment_id: int) -> tuple[str, str] | None:
        """(digest, version) of the artifact deployment_id started with (digest as '0x' + hex; version
        '' if its registration is not indexed), or None if the index does not hold that deployment."""
        row = self.db.execute(
            "SELECT d.digest, coalesce(r.version, '') FROM deployment_started AS d LEFT JOIN artifact_registered AS r "
            "ON r.digest = d.digest AND r.service = d.service WHERE d.id = ?", (deployment_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def never_started(self, service: str, environment: str, limit: int) -> list[tuple[str, str]]:
        """The newest `limit` artifacts registered for service that no deployment to environment has
        started with: (digest, version), newest first."""
        rows = self.db.execute(
            "SELECT r.digest, r.version FROM artifact_registered AS r WHERE r.service = ? AND NOT EXISTS "
            "(SELECT 1 FROM deployment_started AS d WHERE d.digest = r.digest AND d.service = r.service "
            "AND d.environment = ?) ORDER BY r.block_number DESC, r.log_index DESC LIMIT ?",
            (service, environment, limit)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def history(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        digest: str | bytes | None = None,
        approver: str | None = None,
        org: int | str | None = None,
        kinds: Iterable[str] | None = None,
        since=None,
        until=None,
    ) -> list[HistoryEvent]:
        """Events in chain order, filtered (all filters combine with AND):
        digest: events naming the artifact, plus the lifecycle events of deployments of it;
        approver: votes cast by that account (approved, rejected, withdrawn);
        org: events naming the organisation (id or name): votes, members, slots, its creation;
        kinds: event kinds ('incident' stands for every incident-* kind);
        since/until (inclusive): an int is a block number; a datetime, a date or a float (unix
        seconds) is a time (a date as `until` means the end of that day)."""
        # Filters on record tables give sets of (block_number, log_index) keys, intersected and then
        # looked up in events by primary key (a scan of events would cost ~20 ms per 100k rows).
        keys, key_params = [], []
        tables = record_tables()

        def by_column(column: str, value, skip=frozenset()) -> None:
            parts = [f"SELECT block_number, log_index FROM {t} WHERE {column} = ?"
                     for t, e in tables.items() if t not in skip and any(name == column for name, _ in e.columns)]
            keys.append(" UNION ALL ".join(parts))
            key_params.extend([value] * len(parts))

        if digest is not None:
            key = digest_hex(digest)
            by_column("digest", key, NOT_ARTIFACT_DIGEST)
            for name in DEPLOYMENT_EVENTS:
                keys[-1] += (f" UNION ALL SELECT block_number, log_index FROM {snake_case(name)} "
                             f"WHERE id IN (SELECT id FROM deployment_started WHERE digest = ?)")
                key_params.append(key)
        if approver is not None:
            try:
                by_column("approver", _checksum(approver))
            except (ValueError, TypeError):
                raise UsageError(f"{approver!r} is not an Ethereum address") from None
        if org is not None:
            by_column("org", self.organisation_id(org))
        where, params = [], []
        for column, value in (("service", service), ("environment", environment)):
            if value is not None:
                where.append(f"e.{column} = ?")
                params.append(value)
        if kinds is not None:
            wanted = expand_kinds(kinds)
            where.append(f"e.kind IN ({', '.join('?' * len(wanted))})" if wanted else "0")
            params += wanted
        for value, operator, end in ((since, ">=", False), (until, "<=", True)):
            if value is not None:
                column, number = _time_bound(value, end)
                where.append(f"e.{column} {operator} ?")
                params.append(number)
        columns = "e.block_number, e.log_index, e.tx_hash, e.timestamp, e.kind, e.service, e.environment, e.args"
        if keys:
            source = (f"(SELECT * FROM ({' INTERSECT '.join(f'SELECT * FROM ({k})' for k in keys)})) AS k "
                      f"CROSS JOIN events AS e ON e.block_number = k.block_number AND e.log_index = k.log_index")
        else:
            source = "events AS e"
        sql = f"SELECT {columns} FROM {source}" + (" WHERE " + " AND ".join(where) if where else "")
        if not keys:
            sql += " ORDER BY e.block_number, e.log_index"  # the primary key's order: no sort needed
        cursor = self.db.cursor()
        cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row for thousands of rows
        rows = cursor.execute(sql, key_params + params).fetchall()
        if keys:
            rows.sort()  # chain order: (block_number, log_index) lead; ~5x cheaper than SQLite's ORDER BY here
        return [
            HistoryEvent(kind=r[4], block_number=r[0], tx_hash=r[2], log_index=r[1], timestamp=r[3],
                         service=r[5], environment=r[6], fields=_json_object(r[7]))
            for r in rows
        ]

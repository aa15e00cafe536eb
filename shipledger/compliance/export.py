"""Exports of the indexed history (CSV or JSON Lines) and their verification against the chain.

An export holds one record per event, in chain order, with where the event sits on the chain (block
number and hash, transaction hash, log index, emitting address) and every decoded argument. The
arguments are written as one JSON object (`args`) exactly as the index holds them (see
index-spec: addresses checksummed, bytes as 0x-hex, integers as JSON numbers, structs as objects).
In CSV that object is one column: a spreadsheet opens the file as is (and free text such as a
comment cannot start a cell with `=`), and `verify-export` reads the same cell back.

After each record come `head` and `count`: the emitting contract's history head and record count
right after that record (contracts/libraries/History.sol), `as_of_block` (the block the index had
synced to when the export was written) and `filter` ("" for a complete export, else the filters that
selected the lines).

`verify_export` needs only a JSON-RPC node: it re-fetches every record's transaction receipt and
block header in batches, re-decodes the log at the record's index with the suite's ABIs and compares
every field. That proves each line is on the chain. For a complete export it also proves that no line
was dropped, added or reordered: it folds the chain's raw logs in file order, contract by contract,
checks each line's head and count against that running hash, and compares the result with each
contract's historyHead() at `as_of_block` (an eth_call at that block). A filtered export leaves
records out on purpose, so it cannot be proven complete: its lines are verified one by one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import to_checksum_address

from shipledger._internal import artifacts
from shipledger._internal.history import ZERO_HEAD, decode_head, fold_log, head_call
from shipledger._internal.logs import decode_log
from shipledger._internal.rpc import Rpc
from shipledger._internal.files import created_mode
from shipledger.errors import UsageError

FORMATS = ("csv", "jsonl")
# Columns in file order. `time` is `timestamp` written for people (UTC, ISO 8601).
COLUMNS = ("block_number", "block_hash", "tx_hash", "log_index", "timestamp", "time", "address", "contract",
           "event", "kind", "service", "environment", "args", "head", "count", "as_of_block", "filter")
_HEAD = re.compile(r"^0x[0-9a-f]{48}$")
BATCH_SIZE = 250  # JSON-RPC requests per HTTP batch: few round trips, replies of a few MB at most
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


# ---------------------------------------------------------------------- writing

def records(index, events: Iterable, filter_text: str = "") -> Iterator[dict]:
    """Export records for HistoryEvents returned by Index.history(...): the filters are the index's,
    the rows (block hash, address, contract, event name, raw args, history head) come from its events
    table. filter_text says which filters selected the events ("" when none did: a complete export)."""
    wanted = [(e.block_number, e.log_index) for e in events]
    as_of = int(index.meta().get("checkpoint_block") or 0)
    if not wanted:
        return
    rows = {}
    query = "SELECT * FROM events WHERE block_number BETWEEN ? AND ? ORDER BY block_number, log_index"
    keys = set(wanted)
    for row in index.db.execute(query, (wanted[0][0], wanted[-1][0])):  # one scan, not a query per record
        if (row["block_number"], row["log_index"]) in keys:
            rows[(row["block_number"], row["log_index"])] = row
    for key in wanted:
        row = rows.get(key)
        if row is None:  # the index changed under us: never export a record we cannot back
            raise UsageError(f"event at block {key[0]} log {key[1]} is missing from the index")
        yield {
            "block_number": row["block_number"], "block_hash": row["block_hash"], "tx_hash": row["tx_hash"],
            "log_index": row["log_index"], "timestamp": row["timestamp"], "time": iso_time(row["timestamp"]),
            "address": row["address"], "contract": row["contract"], "event": row["event"], "kind": row["kind"],
            "service": row["service"], "environment": row["environment"], "args": json.loads(row["args"]),
            "head": row["history_head"], "count": row["history_count"], "as_of_block": as_of, "filter": filter_text,
        }


def iso_time(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def args_json(args: dict) -> str:
    """The canonical text of an args object (sorted keys, no spaces): what CSV cells hold."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def export_lines(rows: Iterable[dict], fmt: str) -> Iterator[str]:
    """The text of an export, a line at a time (a CSV's header first): what write_export writes and
    what the server streams, so both give the same file."""
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")

        def line(values) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(values)
            return buffer.getvalue()

        yield line(COLUMNS)
        for row in rows:
            yield line([args_json(row["args"]) if c == "args" else row[c] for c in COLUMNS])
    else:
        for row in rows:
            yield json.dumps({c: row[c] for c in COLUMNS}, ensure_ascii=False) + "\n"


def write_export(rows: Iterable[dict], path: str | Path, fmt: str) -> int:
    """Write records to path atomically (a temporary file beside it, then os.replace): a failure at
    any point leaves the previous file, or none, never half an export. Returns the record count."""
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"directory {path.parent} does not exist")
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        os.fchmod(handle, created_mode())  # mkstemp's 0600 would ignore the umask
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            for number, line in enumerate(export_lines(rows, fmt)):
                out.write(line)
                count += number > 0 or fmt != "csv"  # a CSV's header is no record
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


# ---------------------------------------------------------------------- reading

@dataclass
class Line:
    """One record of an export file, or why it could not be read."""

    number: int  # line number in the file (a CSV's header is line 1)
    record: dict | None
    problem: str = ""


def read_export(path: str | Path) -> list[Line]:
    """Records of a CSV or JSONL export (told apart by the first character: `{` is JSONL)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        raise UsageError(f"{path} is empty")
    return _read_jsonl(text) if text.lstrip().startswith("{") else _read_csv(text, path)


def _read_jsonl(text: str) -> list[Line]:
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            lines.append(Line(number, None, f"not JSON: {exc.msg}"))
            continue
        lines.append(Line(number, record) if isinstance(record, dict) else Line(number, None, "not a JSON object"))
    return lines


def _read_csv(text: str, path: Path) -> list[Line]:
    reader = csv.reader(text.splitlines(keepends=True))
    header = next(reader, None)
    if header is None or "args" not in header or "block_number" not in header:
        raise UsageError(f"{path} is neither a JSONL export nor a CSV export with a header row")
    lines, number = [], reader.line_num
    for cells in reader:
        number_of_row, number = number + 1, reader.line_num  # a row starts right after the previous one
        if not cells:
            continue
        if len(cells) != len(header):
            lines.append(Line(number_of_row, None, f"has {len(cells)} cells, the header has {len(header)}"))
            continue
        record: dict = dict(zip(header, cells))
        try:
            record["args"] = json.loads(record["args"])
        except json.JSONDecodeError as exc:
            lines.append(Line(number_of_row, None, f"args is not JSON: {exc.msg}"))
            continue
        for name in ("block_number", "log_index", "timestamp", "count", "as_of_block"):
            value = record.get(name)
            if isinstance(value, str) and value.isdigit():
                record[name] = int(value)
        lines.append(Line(number_of_row, record))
    return lines


# ---------------------------------------------------------------------- verifying

@dataclass
class Mismatch:
    line: int
    problems: list[str] = field(default_factory=list)


@dataclass
class Completeness:
    """Whether the export is the whole history. `complete` is None when that cannot be proven (a
    filtered export, or one without heads), and says why in `reason`."""

    complete: bool | None
    reason: str
    as_of_block: int | None = None
    contracts: dict = field(default_factory=dict)  # name -> {"address", "records", "head", "chain_count", "chain_head"}
    problems: list[str] = field(default_factory=list)  # about the file as a whole


@dataclass
class VerifyResult:
    lines: int
    mismatches: list[Mismatch]
    transactions: int
    blocks: int
    completeness: Completeness | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches and (self.completeness is None or self.completeness.complete is not False)


def _canonical(value) -> str:
    """Values compare by their JSON text, so `true` never equals `1` nor "5" equal 5."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _shape_problems(record: dict) -> list[str]:
    problems = []
    for name in ("block_number", "log_index", "timestamp"):
        value = record.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{name} {value!r} is not a whole number")
    for name in ("block_hash", "tx_hash"):
        if not isinstance(record.get(name), str) or not _HASH.match(record[name]):
            problems.append(f"{name} {record.get(name)!r} is not a 32-byte 0x-hex hash")
    if not isinstance(record.get("address"), str) or not _ADDRESS.match(record["address"]):
        problems.append(f"address {record.get('address')!r} is not an address")
    if not isinstance(record.get("args"), dict):
        problems.append("args is missing or not a JSON object")
    for name in ("contract", "event", "kind", "service", "environment"):
        if not isinstance(record.get(name), str):
            problems.append(f"{name} is missing")
    return problems


def _names_problems(record: dict, args: dict) -> list[str]:
    """service/environment are resolved names, not log fields: check them against what the log commits
    to (the names themselves, or keccak keys of them)."""
    from shipledger.client import target_key

    service, environment = record["service"], record["environment"]
    problems = []
    if isinstance(args.get("target"), str) and _HASH.match(args["target"]):  # a target key, not ProposalCreated's address
        if "0x" + target_key(service, environment).hex() != args["target"]:
            problems.append(f"service/environment {service!r}/{environment!r} do not match the log's target {args['target']}")
        return problems
    for name, value in (("service", service), ("environment", environment)):
        expected = args.get(name, "")
        if isinstance(expected, str) and value != expected:
            problems.append(f"{name}: file has {value!r}, chain has {expected!r}")
    return problems


def check_record(record: dict, receipt: dict | None, header: dict | None, suite: dict[str, str] | None = None) -> list[str]:
    """Every way one record differs from the chain; [] when it matches. `suite` maps lower-case
    addresses to contract names (from an address book) to also flag logs of other contracts."""
    from shipledger.models import EVENT_KINDS

    problems = _shape_problems(record)
    if problems:
        return problems
    number, log_index, tx_hash = record["block_number"], record["log_index"], record["tx_hash"]
    if header is None:
        problems.append(f"block {number} does not exist on this chain")
    else:
        if header["hash"].lower() != record["block_hash"].lower():
            problems.append(f"block_hash: file has {record['block_hash']}, chain has {header['hash']} at block {number}")
        chain_time = int(header["timestamp"], 16)
        if chain_time != record["timestamp"]:
            problems.append(f"timestamp: file has {record['timestamp']}, block {number} has {chain_time}")
    if "time" in record and record["time"] != iso_time(record["timestamp"]):
        problems.append(f"time {record['time']!r} is not timestamp {record['timestamp']}")
    if receipt is None:
        return problems + [f"transaction {tx_hash} does not exist on this chain"]
    if int(receipt["blockNumber"], 16) != number or receipt["blockHash"].lower() != record["block_hash"].lower():
        problems.append(f"transaction {tx_hash} is in block {int(receipt['blockNumber'], 16)} ({receipt['blockHash']}), "
                        f"not block {number} ({record['block_hash']})")
    logs = {int(log["logIndex"], 16): log for log in receipt.get("logs", [])}
    log = logs.get(log_index)
    if log is None:
        held = ", ".join(map(str, sorted(logs))) or "none"
        return problems + [f"no log at index {log_index} in transaction {tx_hash} (its logs: {held})"]
    if log["address"].lower() != record["address"].lower():
        problems.append(f"address: file has {record['address']}, the log is from {to_checksum_address(log['address'])}")
    if suite is not None and record["address"].lower() not in suite:
        problems.append(f"address {record['address']} is not a contract of the suite in the address book")
    elif suite is not None and suite[record["address"].lower()] != record["contract"]:
        problems.append(f"contract: file has {record['contract']!r}, the address book has {suite[record['address'].lower()]!r} there")
    try:
        contract, event, args = decode_log(log)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a finding about this line
        return problems + [f"log {log_index} does not decode as the suite's event: {exc}"]
    for name, chain_value in (("contract", contract), ("event", event)):
        if record[name] != chain_value:
            problems.append(f"{name}: file has {record[name]!r}, the log is {chain_value!r}")
    if event in EVENT_KINDS and record["kind"] != EVENT_KINDS[event]:
        problems.append(f"kind: file has {record['kind']!r}, {event} is {EVENT_KINDS[event]!r}")
    for name in sorted(set(args) | set(record["args"])):
        if name not in record["args"]:
            problems.append(f"args.{name} is missing (chain has {_canonical(args[name])})")
        elif name not in args:
            problems.append(f"args.{name} is not a field of {event}")
        elif _canonical(record["args"][name]) != _canonical(args[name]):
            problems.append(f"args.{name}: file has {_canonical(record['args'][name])}, chain has {_canonical(args[name])}")
    return problems + _names_problems(record, args)


def verify_export(
    path: str | Path, rpc_url: str, *, book: dict | None = None, batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None, timeout: float | None = None,
) -> VerifyResult:
    """Check every line of an export against the chain at rpc_url. progress(done, total) counts
    JSON-RPC requests; timeout: seconds per request (the Rpc default if None)."""
    lines = read_export(path)
    mismatches = [Mismatch(line.number, [line.problem]) for line in lines if line.record is None]
    readable = [(line, _shape_problems(line.record)) for line in lines if line.record is not None]
    for line, problems in readable:
        if problems:
            mismatches.append(Mismatch(line.number, problems))
    good = [line for line, problems in readable if not problems]
    tx_hashes = sorted({line.record["tx_hash"].lower() for line in good})
    numbers = sorted({line.record["block_number"] for line in good})
    total, done = len(tx_hashes) + len(numbers), 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    rpc = Rpc(rpc_url, timeout=timeout)
    receipts = dict(zip(tx_hashes, rpc.fetch("eth_getTransactionReceipt", [[h] for h in tx_hashes], batch_size, step)))
    headers = dict(zip(numbers, rpc.fetch("eth_getBlockByNumber", [[hex(n), False] for n in numbers], batch_size, step)))
    suite = None
    if book is not None:
        suite = {c["address"].lower(): name for name, c in book["contracts"].items() if name in artifacts.SUITE}
    seen: dict[tuple[int, int], int] = {}
    for line in good:
        record = line.record
        problems = check_record(record, receipts[record["tx_hash"].lower()], headers[record["block_number"]], suite)
        key = (record["block_number"], record["log_index"])
        if key in seen:
            problems.append(f"duplicate of line {seen[key]} (same block and log index)")
        seen.setdefault(key, line.number)
        if problems:
            mismatches.append(Mismatch(line.number, problems))
    completeness = check_completeness(lines, receipts, rpc, book, mismatches)
    mismatches.sort(key=lambda m: m.line)
    return VerifyResult(lines=len(lines), mismatches=mismatches, transactions=len(tx_hashes), blocks=len(numbers),
                        completeness=completeness)


def _log_of(receipt: dict | None, log_index: int) -> dict | None:
    for log in (receipt or {}).get("logs", []):
        if int(log["logIndex"], 16) == log_index:
            return log
    return None


def check_completeness(lines: list[Line], receipts: dict, rpc: Rpc, book: dict | None,
                       mismatches: list[Mismatch]) -> Completeness:
    """The chain of history heads over the file (see the module docstring). Appends a problem to
    `mismatches` for each line where the chain breaks; file-wide problems go in the result."""
    records = [line for line in lines if line.record is not None]
    if not records:
        return Completeness(None, "the export holds no readable records")
    if any("head" not in line.record or "count" not in line.record for line in records):
        return Completeness(None, "the export carries no history heads (it was written before suite v2), so it "
                                  "cannot be proven complete; its lines were verified one by one")
    filters = {str(line.record.get("filter") or "") for line in records}
    if filters != {""}:
        named = sorted(f for f in filters if f)
        return Completeness(None, f"the export is filtered ({'; '.join(named)}): it leaves records out on purpose, so "
                                  f"it cannot be proven complete; its lines were verified one by one")
    if len(records) != len(lines):
        return Completeness(False, "some lines cannot be read, so the history they belong to cannot be rebuilt")
    as_of = {line.record.get("as_of_block") for line in records}
    last_block = max(line.record["block_number"] for line in records)
    if len(as_of) != 1 or not isinstance(next(iter(as_of)), int) or next(iter(as_of)) < last_block:
        return Completeness(False, f"the lines disagree about the block the export was made at ({sorted(map(str, as_of))})")
    block = as_of.pop()

    # The contracts to prove: the suite's three with an address book, else those the lines name.
    if book is not None:
        contracts = {c["address"].lower(): name for name, c in book["contracts"].items() if name in artifacts.SUITE}
    else:
        contracts = {}
        for line in records:
            contracts.setdefault(str(line.record["address"]).lower(), str(line.record["contract"]))
    running = {address: (ZERO_HEAD, 0) for address in contracts}
    problems: list[str] = []
    by_line = {m.line: m for m in mismatches}

    def flag(line: Line, text: str) -> None:
        if line.number not in by_line:
            by_line[line.number] = Mismatch(line.number)
            mismatches.append(by_line[line.number])
        by_line[line.number].problems.append(text)

    for line in records:
        record = line.record
        address = str(record["address"]).lower()
        if address not in running:
            continue  # already flagged line by line: not a contract of the suite
        head, count = running[address]
        log = _log_of(receipts.get(str(record["tx_hash"]).lower()), record["log_index"])
        if log is None or log["address"].lower() != address:
            return Completeness(False, f"line {line.number} is not a record on this chain, so the history cannot be rebuilt")
        expected = fold_log(head, log), count + 1
        stated = str(record["head"]).lower(), record["count"]
        if stated != expected:
            name = contracts[address]
            if record["count"] == count + 1:
                why = "its head does not follow from the lines before it"
            elif isinstance(record["count"], int) and record["count"] > count + 1:
                why = f"{record['count'] - count - 1} record(s) of {name} before it are missing from the file"
            else:
                why = "it repeats or comes before a record already in the file (a line added or moved)"
            flag(line, f"history: this is record {count + 1} of {name} in the file's order but the line says record "
                       f"{record['count']} ({why})")
            # Go on from what the line states when it is ahead (records dropped before it), so each
            # break is reported once; a line that repeats or comes back in time leaves the run as it was.
            valid = isinstance(stated[1], int) and not isinstance(stated[1], bool) and _HEAD.match(stated[0])
            if valid and stated[1] > count:
                running[address] = stated
        else:
            running[address] = expected

    calls = [head_call(address, block) for address in contracts]
    heads = {}
    for address, reply in zip(contracts, rpc.replies(calls)):
        name = contracts[address]
        if "error" in reply or not reply.get("result") or reply["result"] == "0x":
            problems.append(f"historyHead() of {name} at block {block} cannot be read: "
                            f"{(reply.get('error') or {}).get('message', 'no answer')}")
            continue
        heads[address] = decode_head(reply["result"])
    summary = {}
    for address, name in contracts.items():
        head, count = running[address]
        chain = heads.get(address)
        summary[name] = {"address": to_checksum_address(address), "records": count, "head": head,
                         "chain_count": chain[1] if chain else None, "chain_head": chain[0] if chain else None}
        if chain is not None and chain != (head, count):
            if chain[1] > count:
                problems.append(f"{name} holds {chain[1]} records at block {block} but the file's history of it ends at "
                                f"record {count}: records are missing")
            else:
                problems.append(f"{name}'s history head at block {block} is {chain[0]} (record {chain[1]}), the file's "
                                f"is {head} (record {count})")
    broken = problems or any(p.startswith("history:") for m in mismatches for p in m.problems)
    reason = ("the heads do not match: the export is not the complete history" if broken else
              f"every record of {', '.join(sorted(summary))} up to block {block} is in the file, in chain order")
    return Completeness(not broken, reason, block, summary, problems)

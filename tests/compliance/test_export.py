"""`shipledger export` and `verify-export` against a real devnet: exports verify, and a tampered line
(a field, a block hash, a log index, an address) is caught with exit 3 and its line number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shipledger.compliance import export
from support import ENV, ok, unique

FORMATS = ("jsonl", "csv")
HEADER_LINES = {"jsonl": 0, "csv": 1}  # a CSV's header is its line 1


@pytest.fixture(scope="module")
def story(dn):
    """One service with a policy (a struct argument), an approval by signature, a rejection whose reason
    holds what CSV and spreadsheets trip on, a completed deployment and an incident naming it."""
    service = unique("exp")
    deployment = dn.deployed(service)  # policy, registration, two approvals, start, complete
    digest = dn.register(service, "2.0.0")
    vote = dn.ledger("approver", 2).sign_approval(digest, service, ENV)
    dn.ledger("outsider").submit_approvals([vote])
    dn.ledger("approver", 0).reject(digest, service, ENV, '=HYPERLINK("x"), "quoted", naïve\nsecond line')
    dn.ledger("responder").open_incident(service, ENV, 2, "5xx, after deploy", suspects=[deployment])
    return {"service": service, "deployment": deployment, "events": len(dn.history(service))}


@pytest.fixture(scope="module")
def exported(dn, story, tmp_path_factory) -> dict:
    """The service's history exported once per format; tests tamper with copies."""
    directory = tmp_path_factory.mktemp("exports")
    return {fmt: _export(dn, directory, fmt, "--service", story["service"]) for fmt in FORMATS}


def _copy(exported: dict, fmt: str, tmp_path: Path) -> Path:
    path = tmp_path / exported[fmt].name
    path.write_bytes(exported[fmt].read_bytes())
    return path


def _export(dn, tmp_path, fmt: str, *filters) -> Path:
    out = tmp_path / f"export.{fmt}"
    data = ok(dn.run("export", "--format", fmt, "--out", out, "--db", tmp_path / "index.sqlite", "--json", *filters))
    assert data == {"out": str(out), "format": fmt, "records": data["records"], "filter": data["filter"],
                    "complete": not filters}
    assert bool(data["filter"]) is bool(filters) and not data["filter"].startswith("-")
    return out


def _lines(path: Path, fmt: str) -> list:
    """The records of an export as dicts (CSV cells as text, args parsed)."""
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        row["args"] = json.loads(row["args"])
    return rows


def _rewrite(path: Path, fmt: str, index: int, edit) -> int:
    """Apply edit(record) to record number `index` (0-based) in the file; return its line number."""
    if fmt == "jsonl":
        lines = path.read_text().splitlines()
        record = json.loads(lines[index])
        edit(record)
        lines[index] = json.dumps(record)
        path.write_text("\n".join(lines) + "\n")
    else:
        rows = list(csv.reader(path.open(newline="")))
        header, row = rows[0], dict(zip(rows[0], rows[index + 1]))
        row["args"] = json.loads(row["args"])
        edit(row)
        row["args"] = json.dumps(row["args"])
        rows[index + 1] = [row.get(c, "") for c in header]
        with path.open("w", newline="") as out:
            csv.writer(out, lineterminator="\n").writerows(rows)
    return index + 1 + HEADER_LINES[fmt]


def _verify(dn, path: Path, code: int) -> dict:
    result = dn.run("verify-export", path, "--json")
    assert result.code == code, f"exit {result.code}: {result.err}"
    return result.json()


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_of_a_service_verifies_against_the_chain(dn, story, exported, fmt):
    path = exported[fmt]
    records = _lines(path, fmt)
    assert len(records) == story["events"] >= 9
    kinds = [r["kind"] for r in records]
    assert kinds[:2] == ["registered", "policy-set"] and "incident-opened" in kinds and "rejected" in kinds
    for record in records:
        assert set(record) == set(export.COLUMNS)
        assert record["service"] == story["service"]
    rejected = next(r for r in records if r["kind"] == "rejected")
    assert rejected["args"]["reason"] == '=HYPERLINK("x"), "quoted", naïve\nsecond line'
    policy = next(r for r in records if r["kind"] == "policy-set")
    assert policy["args"]["newPolicy"]["threshold"] == 2
    report = _verify(dn, path, 0)
    assert report["ok"] is True and report["mismatches"] == [] and report["suite_checked"] is True
    assert report["lines"] == len(records)
    # filtered by service: each line is on the chain, but the whole cannot be proven complete
    assert report["complete"] is None and "cannot be proven complete" in report["completeness"]["reason"]


def test_export_csv_cells_are_plain_text_a_spreadsheet_opens(dn, story, tmp_path):
    path = _export(dn, tmp_path, "csv", "--service", story["service"], "--kind", "rejected")
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(export.COLUMNS)
    assert len(text.splitlines()) == 2  # the reason's newline stays escaped inside the JSON cell
    row = next(csv.DictReader(path.open(newline="")))
    assert row["args"].startswith("{") and not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())
    assert row["block_number"].isdigit() and row["time"].endswith("+00:00")


def test_export_filters_come_from_the_index(dn, story, tmp_path):
    approver = dn.address("approver", 2)
    path = _export(dn, tmp_path, "jsonl", "--service", story["service"], "--approver", approver)
    records = _lines(path, "jsonl")
    assert [(r["kind"], r["args"]["approver"], r["args"]["bySignature"]) for r in records] == [("approved", approver, True)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tamper, needle", [
    (lambda r: r["args"].update(approver="0x" + "12" * 20), "args.approver"),
    (lambda r: r["args"].update(bySignature=1), "args.bySignature: file has 1, chain has false"),
    (lambda r: r.update(block_hash="0x" + "ab" * 32), "block_hash: file has 0x" + "ab" * 32),
    (lambda r: r.update(log_index=int(r["log_index"]) + 5), "no log at index"),
    (lambda r: r.pop("log_index"), "is not a whole number"),
    (lambda r: r.update(service="someone-else"), "service: file has 'someone-else'"),
], ids=["field", "bool-as-int", "block-hash", "log-index", "no-log-index", "service"])
def test_verify_export_catches_a_tampered_line(dn, exported, tmp_path, fmt, tamper, needle):
    path = _copy(exported, fmt, tmp_path)
    records = _lines(path, fmt)
    target = next(i for i, r in enumerate(records) if r["kind"] == "approved")
    line = _rewrite(path, fmt, target, tamper)
    report = _verify(dn, path, 3)
    assert report["ok"] is False
    assert [m["line"] for m in report["mismatches"]] == [line]
    problems = " | ".join(report["mismatches"][0]["problems"])
    assert needle in problems, problems


def test_verify_export_flags_a_log_moved_to_another_index_and_a_foreign_address(dn, exported, tmp_path):
    path = _copy(exported, "jsonl", tmp_path)
    records = _lines(path, "jsonl")
    completed = next(i for i, r in enumerate(records) if r["kind"] == "completed")
    started = next(i for i, r in enumerate(records) if r["kind"] == "deployed")
    registry = json.loads(dn.book.read_text())["contracts"]["ReleaseRegistry"]["address"]
    # a record claiming to be the deployment-start log but pointing at the completion's position
    moved = _rewrite(path, "jsonl", started, lambda r: r.update(
        tx_hash=records[completed]["tx_hash"], block_number=records[completed]["block_number"],
        block_hash=records[completed]["block_hash"], timestamp=records[completed]["timestamp"],
        time=records[completed]["time"], log_index=records[completed]["log_index"]))
    foreign = _rewrite(path, "jsonl", completed, lambda r: r.update(address=registry))
    report = _verify(dn, path, 3)
    by_line = {m["line"]: " | ".join(m["problems"]) for m in report["mismatches"]}
    assert set(by_line) == {moved, foreign}
    assert "event: file has 'DeploymentStarted', the log is 'DeploymentCompleted'" in by_line[moved]
    assert "duplicate of line" in by_line[foreign]
    assert f"address: file has {registry}" in by_line[foreign]
    assert "contract: file has 'DeploymentLedger', the address book has 'ReleaseRegistry' there" in by_line[foreign]


def test_verify_export_human_output_names_each_bad_line(dn, story, exported, tmp_path):
    path = _copy(exported, "csv", tmp_path)
    line = _rewrite(path, "csv", 0, lambda r: r["args"].update(version="9.9.9"))
    with path.open("a") as out:
        out.write("not,a,record\n")
    result = dn.run("verify-export", path)
    assert result.code == 3 and result.out == ""
    assert f"{path}:{line}: args.version: file has \"9.9.9\", chain has \"1.0.0\"" in result.err
    assert f"{path}:{story['events'] + 2}: has 3 cells, the header has {len(export.COLUMNS)}" in result.err
    assert f"2 of {story['events'] + 1} lines do not match the chain" in result.err
    assert result.err.strip().splitlines()[-1].startswith("completeness not proven: the export is filtered")


def test_export_bad_input_writes_nothing(dn, tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("previous export\n")
    result = dn.run("export", "--format", "jsonl", "--out", out, "--kind", "bogus", "--db", tmp_path / "i.sqlite")
    assert result.code == 2 and "bogus" in result.err
    result = dn.run("export", "--format", "csv", "--out", tmp_path / "missing" / "x.csv", "--db", tmp_path / "i.sqlite")
    assert result.code == 2 and "does not exist" in result.err
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]


def test_write_export_failing_midway_leaves_the_old_file(tmp_path):
    out = tmp_path / "export.csv"
    out.write_text("previous export\n")
    row = {c: 1 for c in export.COLUMNS} | {"args": {"a": 1}}

    def rows():
        yield row
        yield row
        raise OSError("the index went away")

    with pytest.raises(OSError):
        export.write_export(rows(), out, "csv")
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]
    assert export.write_export(iter([row, row]), out, "csv") == 2
    assert len(out.read_text().splitlines()) == 3


def test_verify_export_of_a_missing_file_is_a_usage_error(dn, tmp_path):
    result = dn.run("verify-export", tmp_path / "nope.jsonl")
    assert result.code == 2 and "is not a file" in result.err

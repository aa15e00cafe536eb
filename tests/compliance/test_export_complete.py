"""verify-export's completeness proof: a complete export's chain of history heads ends at each
contract's historyHead() at the export's block, so a line dropped, added or moved fails, while a
filtered export says it cannot be proven complete and is verified line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipledger._internal.history import ZERO_HEAD, fold_log
from support import ENV, ok, rpc_call, unique

FORMATS = ("jsonl", "csv")


@pytest.fixture(scope="module")
def everything(dn, tmp_path_factory) -> dict:
    """A history through all three contracts (a policy by governance, votes, a deployment, an
    incident), exported whole, once per format."""
    service = unique("all")
    deployment = dn.deployed(service)
    dn.ledger("responder").open_incident(service, ENV, 3, "slow", suspects=[deployment])
    directory = tmp_path_factory.mktemp("complete")
    out = {}
    for fmt in FORMATS:
        path = directory / f"all.{fmt}"
        data = ok(dn.run("export", "--format", fmt, "--out", path, "--db", directory / "index.sqlite", "--json"))
        assert data["filter"] == "" and data["complete"] is True
        out[fmt] = path
    return out


def _records(path: Path) -> list[str]:
    """The record lines of an export (a CSV's header left out), as text."""
    lines = path.read_text().splitlines(keepends=True)
    return lines[1:] if path.suffix == ".csv" else lines


def _write(path: Path, source: Path, records: list[str]) -> Path:
    header = source.read_text().splitlines(keepends=True)[:1] if source.suffix == ".csv" else []
    path.write_text("".join(header + records))
    return path


def _verify(dn, path: Path, code: int) -> dict:
    result = dn.run("verify-export", path, "--json")
    assert result.code == code, f"exit {result.code}: {result.err}"
    return result.json()


def _contract_of(line: str, fmt: str) -> str:
    return json.loads(line)["contract"] if fmt == "jsonl" else line.split(",")[7]


def test_a_whole_export_is_proven_complete_by_the_heads(dn, everything):
    report = _verify(dn, everything["jsonl"], 0)
    assert report["ok"] is True and report["complete"] is True
    contracts = report["completeness"]["contracts"]
    assert set(contracts) == {"ReleaseRegistry", "Governance", "DeploymentLedger"}
    for name, entry in contracts.items():
        assert entry["records"] == entry["chain_count"] > 0 and entry["head"] == entry["chain_head"], name
    # the heads in the file are the chain's: refold the first ledger records from their receipts
    lines = [json.loads(line) for line in _records(everything["jsonl"])]
    ledger = [r for r in lines if r["contract"] == "DeploymentLedger"]
    head = ZERO_HEAD
    for count, record in enumerate(ledger, 1):
        receipt = rpc_call(dn.rpc_url, "eth_getTransactionReceipt", [record["tx_hash"]])
        log = next(log for log in receipt["logs"] if int(log["logIndex"], 16) == record["log_index"])
        head = fold_log(head, log)
        assert (record["head"], record["count"]) == (head, count)
    as_of = report["completeness"]["as_of_block"]
    assert as_of >= lines[-1]["block_number"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dropped_line_fails_against_the_head(dn, everything, tmp_path, fmt):
    records = _records(everything[fmt])
    # drop a registry record that another registry record follows: only the head chain can tell
    registry = [i for i, line in enumerate(records) if _contract_of(line, fmt) == "ReleaseRegistry"]
    dropped = registry[len(registry) // 2]
    path = _write(tmp_path / f"dropped.{fmt}", everything[fmt], records[:dropped] + records[dropped + 1:])
    report = _verify(dn, path, 3)
    assert report["complete"] is False
    [mismatch] = report["mismatches"]  # every line left is a real record: only the history breaks
    assert "1 record(s) of ReleaseRegistry before it are missing" in " ".join(mismatch["problems"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dropped_last_line_fails_against_the_chain_head(dn, everything, tmp_path, fmt):
    records = _records(everything[fmt])
    last = records[-1]
    path = _write(tmp_path / f"truncated.{fmt}", everything[fmt], records[:-1])
    report = _verify(dn, path, 3)
    assert report["mismatches"] == [] and report["complete"] is False
    name = _contract_of(last, fmt)
    assert any(p.startswith(f"{name} holds") and "records are missing" in p for p in report["completeness"]["problems"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_added_line_fails(dn, everything, tmp_path, fmt):
    records = _records(everything[fmt])
    path = _write(tmp_path / f"added.{fmt}", everything[fmt], records[:3] + [records[2]] + records[3:])
    report = _verify(dn, path, 3)
    assert report["complete"] is False
    problems = " ".join(p for m in report["mismatches"] for p in m["problems"])
    assert "duplicate of line" in problems and "a line added or moved" in problems


@pytest.mark.parametrize("fmt", FORMATS)
def test_reordered_lines_fail(dn, everything, tmp_path, fmt):
    records = _records(everything[fmt])
    # two records of one contract swapped: each line alone is still a true record
    same = [i for i, line in enumerate(records) if _contract_of(line, fmt) == "ReleaseRegistry"]
    a, b = same[1], same[2]
    swapped = list(records)
    swapped[a], swapped[b] = swapped[b], swapped[a]
    path = _write(tmp_path / f"reordered.{fmt}", everything[fmt], swapped)
    report = _verify(dn, path, 3)
    assert report["complete"] is False
    assert all(any(p.startswith("history:") for p in m["problems"]) for m in report["mismatches"])
    assert len(report["mismatches"]) == 2


def test_a_filtered_export_says_it_cannot_be_proven_complete(dn, everything, tmp_path):
    path = tmp_path / "deployed.jsonl"
    data = ok(dn.run("export", "--format", "jsonl", "--out", path, "--kind", "deployed", "--db",
                     tmp_path / "index.sqlite", "--json"))
    assert data["filter"] == "kind=deployed" and data["complete"] is False
    report = _verify(dn, path, 0)
    assert report["ok"] is True and report["complete"] is None and report["mismatches"] == []
    assert "filtered (kind=deployed)" in report["completeness"]["reason"]
    assert "cannot be proven complete" in report["completeness"]["reason"]
    human = dn.run("verify-export", path)
    assert human.code == 0 and "completeness not proven: the export is filtered" in human.err
    # ...and dropping one of its lines is no completeness finding either: it proves nothing
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > 1:
        path.write_text("".join(lines[1:]))
        assert _verify(dn, path, 0)["complete"] is None


def test_claiming_an_export_is_unfiltered_is_caught(dn, everything, tmp_path):
    path = tmp_path / "one-kind.jsonl"
    ok(dn.run("export", "--format", "jsonl", "--out", path, "--kind", "approved", "--db", tmp_path / "index.sqlite",
              "--json"))
    # strip the filter marker: the gaps in the counts now show
    records = [json.loads(line) | {"filter": ""} for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = _verify(dn, path, 3)
    assert report["complete"] is False

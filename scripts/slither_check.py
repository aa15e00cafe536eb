#!/usr/bin/env python3
"""Run Slither over contracts/ with the build settings, and fail on any finding not in slither.triage.

    python scripts/slither_check.py            what `make lint` runs
    python scripts/slither_check.py --list     print every finding's triage key, triaged or not

Why a standard-JSON input: crytic-compile's solc platform calls `solc --combined-json` with flags of its
own and drops viaIR, and the contracts do not compile without it. So this script writes the standard
JSON input that scripts/build.py compiles (its SETTINGS: viaIR, evmVersion berlin, the optimizer),
with the OpenZeppelin remapping of foundry.toml so every source has a path on disk, and hands that file
to Slither's "Solc-json" platform, which keeps the settings and runs tools/solc --standard-json.

slither.triage holds one line per finding that stands: its key, '#', and why it stands. A key is
`detector Contract.function(signature)` (or `detector Contract.variable`, `detector Contract`), so it
survives edits that move lines. Every finding must match a line, and every line must match a finding
(a stale line means the finding is gone: delete it). Findings in node_modules are not ours to fix and
are filtered out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = ROOT / "slither.triage"
SOLC = ROOT / "tools" / "solc"
SLITHER = Path(sys.executable).with_name("slither")
REMAPPINGS = ["@openzeppelin/=node_modules/@openzeppelin/"]  # as foundry.toml

sys.path.insert(0, str(ROOT / "scripts"))
from build import SETTINGS  # noqa: E402  the one definition of the build settings

# What crytic-compile asks solc for when it builds the input itself.
OUTPUT_SELECTION = {
    "*": {
        "*": ["abi", "metadata", "devdoc", "userdoc", "evm.bytecode", "evm.deployedBytecode"],
        "": ["ast"],
    }
}


def standard_input() -> dict:
    settings = {k: v for k, v in SETTINGS.items() if k != "outputSelection"}
    settings["remappings"] = REMAPPINGS
    settings["outputSelection"] = OUTPUT_SELECTION
    sources = {p.relative_to(ROOT).as_posix(): {"urls": [p.relative_to(ROOT).as_posix()]}
               for p in sorted((ROOT / "contracts").glob("*.sol"))}
    return {"language": "Solidity", "sources": sources, "settings": settings}


def run_slither() -> list[dict]:
    """Slither's results (the `detectors` list of its JSON output)."""
    with tempfile.TemporaryDirectory(prefix="slither-") as tmp:
        input_file = Path(tmp) / "standard-input.json"
        input_file.write_text(json.dumps(standard_input()))
        report = Path(tmp) / "report.json"
        cmd = [
            str(SLITHER), str(input_file),
            "--compile-force-framework", "solc-json",
            "--solc", str(SOLC),
            "--solc-working-dir", str(ROOT),
            "--filter-paths", "node_modules",
            "--exclude-dependencies",
            "--fail-none",
            "--json", str(report),
        ]
        # Run from outside the repo: crytic-compile walks up from its working directory, finds
        # foundry.toml and would swap in its own idea of the compiler and flags.
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if not report.exists():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            sys.exit(f"slither_check: Slither produced no report (exit {proc.returncode})")
        data = json.loads(report.read_text())
    if not data.get("success"):
        sys.exit(f"slither_check: Slither failed: {data.get('error')}")
    return (data.get("results") or {}).get("detectors", [])


def element_name(element: dict) -> str:
    """Contract.function(signature), Contract.variable or Contract for a result's first element."""
    fields = element.get("type_specific_fields", {})
    kind = element.get("type")
    if kind == "node":  # a statement: name it by the function it is in
        return element_name(fields.get("parent", {}))
    if kind == "function":
        parent = fields.get("parent", {}).get("name", "?")
        return f"{parent}.{fields.get('signature', element.get('name'))}"
    if kind in ("variable", "event", "struct", "enum", "custom_error", "modifier"):
        parent = fields.get("parent", {})
        if parent.get("type") == "function":  # a local variable: Contract.function(signature).name
            return f"{element_name(parent)}.{element.get('name')}"
        return f"{parent['name']}.{element.get('name')}" if parent.get("name") else element.get("name", "?")
    return element.get("name", "?")


def finding_key(result: dict) -> str:
    elements = result.get("elements") or [{}]
    return f"{result['check']} {element_name(elements[0])}"


def read_triage(path: Path) -> dict[str, str]:
    """{key: why} from the triage file; a line without a reason is an error."""
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, why = line.partition("#")
        if not sep or not why.strip():
            sys.exit(f"slither_check: {path.name}:{number}: no reason after '#': {line}")
        entries[" ".join(key.split())] = why.strip()
    return entries


def judge(results: list[dict], triage: dict[str, str]) -> tuple[list[str], list[str], dict[str, int]]:
    """(untriaged finding lines, stale triage keys, finding count per detector)."""
    by_detector: dict[str, int] = {}
    untriaged = []
    seen = set()
    for result in results:
        key = finding_key(result)
        by_detector[result["check"]] = by_detector.get(result["check"], 0) + 1
        seen.add(key)
        if key not in triage:
            first_line = result.get("description", "").strip().splitlines()[0] if result.get("description") else ""
            untriaged.append(f"{key}  [{result.get('impact')}/{result.get('confidence')}] {first_line}")
    stale = sorted(set(triage) - seen)
    return untriaged, stale, by_detector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every finding's key and description")
    parser.add_argument("--triage", type=Path, default=TRIAGE, help="triage file (default slither.triage)")
    args = parser.parse_args()

    results = run_slither()
    if args.list:
        for result in results:
            print(f"{finding_key(result)}\n    [{result.get('impact')}/{result.get('confidence')}] "
                  f"{result.get('description', '').strip()}")
        return 0
    untriaged, stale, by_detector = judge(results, read_triage(args.triage))
    counts = ", ".join(f"{name} {count}" for name, count in sorted(by_detector.items())) or "none"
    print(f"slither: {len(results)} findings over contracts/ ({counts})")
    if untriaged:
        print(f"slither: {len(untriaged)} finding(s) not in {args.triage.name} (fix them, or add a line "
              "saying why they stand):", file=sys.stderr)
        for line in untriaged:
            print(f"  {line}", file=sys.stderr)
    if stale:
        print(f"slither: {len(stale)} line(s) of {args.triage.name} match no finding any more (delete them):",
              file=sys.stderr)
        for key in stale:
            print(f"  {key}", file=sys.stderr)
    if untriaged or stale:
        return 1
    print(f"slither: every finding is triaged in {args.triage.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

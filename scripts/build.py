#!/usr/bin/env python3
"""Compile contracts/*.sol into shipledger/artifacts/<ContractName>.json.

    python scripts/build.py          compile and (re)write the artifacts
    python scripts/build.py --check  compile in memory; exit 1 if the committed artifacts differ

The compiler is the pinned solc-js behind tools/solc (see package.json). Imports such as
"@openzeppelin/contracts/..." resolve under node_modules, with source unit names kept as written,
so Ape (ape-config.yaml) compiles the same sources to the same bytes. Output is deterministic:
compiling again reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import solcx
from solcx.exceptions import SolcError

ROOT = Path(__file__).resolve().parents[1]
SOLC = ROOT / "tools" / "solc"
ARTIFACTS = ROOT / "shipledger" / "artifacts"
EIP170_RUNTIME_LIMIT = 24576  # bytes of deployed code
EIP3860_INITCODE_LIMIT = 49152  # bytes of creation code

# Keep in step with ape-config.yaml (tests/packaging/test_ape_build.py checks that the bytes agree).
SETTINGS = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "berlin",  # GoQuorum QBFT and older Besu stop at Berlin: no PUSH0, no MCOPY
    "viaIR": True,  # the contracts emit events with many fields: the legacy pipeline runs out of stack
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "metadata",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
            ]
        }
    },
}


def compiler_version() -> str:
    """The full version, e.g. 0.8.37+commit.f401782d.Emscripten.clang."""
    out = subprocess.run([str(SOLC), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].removeprefix("Version:").strip()


def source_file(name: str) -> Path:
    """Where a source unit name lives on disk: the repo first, then node_modules (as tools/solc does)."""
    for base in (ROOT, ROOT / "node_modules"):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(name)


def sources_sha256(metadata: dict) -> str:
    """sha256 over every source the contract was built from (its own file and all its imports)."""
    digest = hashlib.sha256()
    for name in sorted(metadata["sources"]):
        digest.update(name.encode() + b"\0" + source_file(name).read_bytes() + b"\0")
    return digest.hexdigest()


def print_diagnostics(errors: list[dict]) -> None:
    """Print the compiler's messages to stderr; dependencies' warnings (not ours to fix) as counts."""
    in_dependencies: dict[str, int] = {}
    for error in errors:
        file = error.get("sourceLocation", {}).get("file", "")
        if error["severity"] != "error" and file and not file.startswith("contracts/"):
            in_dependencies[file] = in_dependencies.get(file, 0) + 1
            continue
        print(error.get("formattedMessage") or error["message"], file=sys.stderr)
    for file, count in sorted(in_dependencies.items()):
        print(f"({count} compiler warning(s) in dependency {file} not shown)", file=sys.stderr)


def compile_contracts() -> dict[str, str]:
    """Compile; return {artifact file name: file text}. Exits 1 on compiler errors or oversize code."""
    files = sorted((ROOT / "contracts").glob("*.sol"))
    if not files:
        sys.exit("build: no contracts/*.sol to compile")
    standard_input = {
        "language": "Solidity",
        "sources": {f.relative_to(ROOT).as_posix(): {"content": f.read_text()} for f in files},
        "settings": SETTINGS,
    }
    try:
        output = solcx.compile_standard(
            standard_input, solc_binary=SOLC, base_path=ROOT, allow_paths=[str(ROOT)]
        )
    except SolcError as exc:
        print_diagnostics(exc.error_dict or [])
        if not exc.error_dict:
            print(exc, file=sys.stderr)
        sys.exit("build: compilation failed")
    print_diagnostics(output.get("errors", []))  # warnings and infos only: errors raised above

    version = compiler_version()
    artifacts: dict[str, str] = {}
    too_big = []
    for source_name, contracts in sorted(output["contracts"].items()):
        if source_name not in standard_input["sources"]:
            continue  # imported: OpenZeppelin, interfaces, internal libraries
        for name, out in sorted(contracts.items()):
            bytecode = out["evm"]["bytecode"]["object"]
            runtime = out["evm"]["deployedBytecode"]["object"]
            if not bytecode:
                continue  # interface or abstract contract
            if f"{name}.json" in artifacts:
                sys.exit(f"build: two contracts are named {name}; artifact names must be unique")
            runtime_size, init_size = len(runtime) // 2, len(bytecode) // 2
            print(f"{name:<32} runtime {runtime_size:>6} bytes  initcode {init_size:>6} bytes")
            if runtime_size > EIP170_RUNTIME_LIMIT or init_size > EIP3860_INITCODE_LIMIT:
                too_big.append(name)
            artifact = {
                "contractName": name,
                "sourceName": source_name,
                "abi": out["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + runtime,
                "immutableReferences": out["evm"]["deployedBytecode"].get("immutableReferences", {}),
                "compiler": version,
                "settings": SETTINGS,
                "sourcesSha256": sources_sha256(json.loads(out["metadata"])),
            }
            artifacts[f"{name}.json"] = json.dumps(artifact, sort_keys=True, indent=2) + "\n"
    if too_big:
        sys.exit(
            f"build: over the EIP-170 runtime limit ({EIP170_RUNTIME_LIMIT} bytes) or the EIP-3860 "
            f"initcode limit ({EIP3860_INITCODE_LIMIT} bytes): {', '.join(too_big)}"
        )
    if not artifacts:
        sys.exit("build: contracts/*.sol define no deployable contract")
    return artifacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed artifacts are stale")
    args = parser.parse_args()

    artifacts = compile_contracts()
    existing = {p.name: p for p in ARTIFACTS.glob("*.json")}
    if args.check:
        stale = sorted(
            name
            for name in artifacts.keys() | existing.keys()
            if name not in existing or name not in artifacts or existing[name].read_text() != artifacts[name]
        )
        if stale:
            sys.exit(f"build --check: artifacts out of date: {', '.join(stale)}; run `make build`")
        print(f"build --check: {len(artifacts)} artifacts up to date")
        return

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in existing.keys() - artifacts.keys():
        existing[name].unlink()
        print(f"removed stale {ARTIFACTS.relative_to(ROOT) / name}")
    for name, text in artifacts.items():
        (ARTIFACTS / name).write_text(text)
    print(f"wrote {len(artifacts)} artifacts to {ARTIFACTS.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Bundle the web app's wallet code with viem (esbuild, both pinned in package.json).

    python scripts/build_wallet.py          bundle and (re)write the files
    python scripts/build_wallet.py --check  bundle in memory; exit 1 if the committed files differ

web/wallet.js      -> shipledger/server/static/wallet.js  (served by `shipledger serve`; committed so
                                                            pip users need no node)
web/test-wallet.js -> tests/server/test-wallet.js          (the Playwright tests' EIP-1193 wallet)

The output is deterministic: esbuild is given relative paths from the repository root, no source
map, no legal comments and a fixed target, so bundling again reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"
BUNDLES = {"web/wallet.js": "shipledger/server/static/wallet.js", "web/test-wallet.js": "tests/server/test-wallet.js"}
OPTIONS = ["--bundle", "--format=iife", "--platform=browser", "--target=es2020", "--minify", "--legal-comments=none",
           "--charset=utf8", "--log-level=warning"]


def bundle(source: str) -> bytes:
    """The bundle of `source` (a path relative to ROOT) as esbuild writes it to stdout."""
    if not ESBUILD.exists():
        sys.exit(f"build_wallet: {ESBUILD.relative_to(ROOT)} is missing; run `npm ci` first")
    done = subprocess.run([str(ESBUILD), source, *OPTIONS], cwd=ROOT, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"build_wallet: esbuild failed on {source}:\n{done.stderr.decode()}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed bundles are stale")
    args = parser.parse_args()
    stale = []
    for source, target in BUNDLES.items():
        data, path = bundle(source), ROOT / target
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(target)
        else:
            path.write_bytes(data)
            print(f"build_wallet: {target} ({len(data)} bytes)")
    if stale:
        sys.exit(f"build_wallet --check: out of date: {', '.join(stale)}; run `python scripts/build_wallet.py`")
    if args.check:
        print(f"build_wallet --check: {len(BUNDLES)} bundles up to date")


if __name__ == "__main__":
    main()

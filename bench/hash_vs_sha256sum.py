"""Artifact hashing: `shipledger.digests.digest_path` (in-process) and the CLI's hashing path vs
`sha256sum`, on one large file with a warm page cache, side by side in the same run.

The CLI path is `shipledger gate FILE ... --deployment <missing>`: the gate hashes the artifact
first and then stops at the missing address book (exit 1), so its time is start-up + hashing with
no chain involved. Target: digest_path >= 0.9x sha256sum's throughput. Prints throughputs and
ratios; never fails on time. The file is deleted at the end.

    .venv/bin/python bench/hash_vs_sha256sum.py [--size-mib 1024] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHIPLEDGER, header, median

TARGET = 0.9
BLOCK = 64 << 20  # a random 64 MiB block, repeated: sha256 has no shortcut for repeated input


def make_file(path: Path, size: int) -> None:
    block = os.urandom(min(BLOCK, size))
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, len(block))
            out.write(block[:n])
            left -= n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", help="where to write the file (default: the system temp dir)")
    opts = parser.parse_args()

    from shipledger.digests import digest_path

    sha256sum = shutil.which("sha256sum")
    if not sha256sum:
        print("sha256sum not found on PATH", file=sys.stderr)
        return 1
    size = opts.size_mib << 20
    header(f"hash: digest_path vs sha256sum on a {opts.size_mib} MiB file (warm cache, median of {opts.runs})")
    workdir = Path(tempfile.mkdtemp(prefix="shipledger-bench-hash-", dir=opts.dir))
    try:
        path = workdir / "artifact.bin"
        make_file(path, size)
        with open(path, "rb") as handle:  # warm the page cache
            while handle.read(BLOCK):
                pass

        def sha256sum_once() -> tuple[float, str]:
            start = time.perf_counter()
            out = subprocess.run([sha256sum, str(path)], capture_output=True, text=True, check=True).stdout
            return time.perf_counter() - start, "sha256:" + out.split()[0]

        def digest_path_once() -> tuple[float, str]:
            start = time.perf_counter()
            digest = digest_path(path)
            return time.perf_counter() - start, digest

        missing_book = workdir / "no-such-book.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}

        def cli_once() -> tuple[float, str]:
            start = time.perf_counter()
            proc = subprocess.run([SHIPLEDGER, "gate", str(path), "--service", "bench", "--env", "prod",
                                   "--deployment", str(missing_book), "--json"], capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - start
            if proc.returncode != 1 or "address book" not in proc.stderr:  # it must have got past hashing
                raise RuntimeError(f"unexpected CLI result {proc.returncode}: {proc.stderr.strip()}")
            return seconds, ""

        peers = {"sha256sum": sha256sum_once, "digest_path (in-process)": digest_path_once, "shipledger gate FILE (CLI)": cli_once}
        times: dict[str, list[float]] = {name: [] for name in peers}
        digests: dict[str, set[str]] = {name: set() for name in peers}
        for i in range(opts.runs):  # interleaved, alternating order
            for name, fn in (peers.items() if i % 2 == 0 else reversed(peers.items())):
                seconds, digest = fn()
                times[name].append(seconds)
                if digest:
                    digests[name].add(digest)

        if digests["sha256sum"] != digests["digest_path (in-process)"] or len(digests["sha256sum"]) != 1:
            raise RuntimeError(f"digests disagree: {digests}")
        print(f"   digest: {digests['sha256sum'].pop()} (sha256sum and digest_path agree)")
        base = median(times["sha256sum"])
        for name, values in times.items():
            seconds = median(values)
            print(f"   {name:28} median {seconds:6.3f} s  {size / seconds / 2**20:7.0f} MiB/s   {base / seconds:5.2f}x sha256sum")
        ratio = base / median(times["digest_path (in-process)"])
        print(f"   target digest_path >= {TARGET}x sha256sum: {'met' if ratio >= TARGET else 'MISSED'} ({ratio:.2f}x)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers for the benchmarks: a throwaway devnet in a temp dir, timing, formatting.

Not a benchmark itself (the leading underscore). Benchmarks print ratios against a peer measured
side by side in the same run; nothing here asserts a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHIPLEDGER = str(VENV_BIN / "shipledger") if (VENV_BIN / "shipledger").exists() else shutil.which("shipledger")


def free_port() -> int:
    from shipledger.network.devnet import free_port as _free_port

    return _free_port()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def devnet(prefix: str = "shipledger-bench-"):
    """`shipledger devnet up --port <free> --json` in a fresh temp dir; always `devnet down` and
    remove the dir afterwards. Yields (workdir, state) where state is the devnet JSON plus
    'book' (absolute path of deployments/devnet.json)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    pid = None
    try:
        port = free_port()
        up = subprocess.run([SHIPLEDGER, "devnet", "up", "--port", str(port), "--json"], cwd=workdir,
                            capture_output=True, text=True, timeout=180)
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads((workdir / ".shipledger" / "devnet" / "state.json").read_text())["pid"]
        if up.returncode != 0:
            raise RuntimeError(f"devnet up failed ({up.returncode}): {up.stderr.strip()}")
        state = json.loads(up.stdout)
        state["book"] = str(workdir / state["deployment"])
        yield workdir, state
    finally:
        subprocess.run([SHIPLEDGER, "devnet", "down", "--json"], cwd=workdir, capture_output=True, timeout=60)
        if pid is not None and _pid_alive(pid):  # the anvil we started outlived `devnet down`
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def timed_run(argv: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time from process start to exit (seconds), and the finished process."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - start, proc


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   python {sys.version.split()[0]} on {os.cpu_count()} cpus")

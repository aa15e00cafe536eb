"""What the CLI tests share: running `shipledger` as a subprocess with a clean environment, checking
its output, naming things uniquely, and a real devnet started with `shipledger devnet up`.

Any test module can take the `dn` fixture (one devnet per module, defined here and re-exported by
conftest) and call the helpers below.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from eth_account import Account

from shipledger import ArtifactSpec, Ledger
from shipledger.network.devnet import free_port, rpc_call

ENV = "prod"
CLI = [sys.executable, "-m", "shipledger.cli"]

# ============================================================================ running the CLI


class Result(NamedTuple):
    code: int
    out: str
    err: str
    json_mode: bool = False  # --json was passed: a failure prints the one error document on stdout

    def json(self):
        """stdout as exactly one JSON document."""
        return json.loads(self.out)


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, f"a Python traceback reached the user:\n{text}"


def clean_env(**extra: str) -> dict:
    """The test process's environment without any SHIPLEDGER_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    env.update(extra)
    return env


def run(args, key: str | None = None, *, cwd: Path, env: dict | None = None, timeout: float = 120) -> Result:
    """Run `shipledger ARGS` in cwd; the key (if any) goes in $SHIPLEDGER_PRIVATE_KEY, never argv."""
    env = clean_env(**(env or {}))
    if key is not None:
        env["SHIPLEDGER_PRIVATE_KEY"] = key
    proc = subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert_no_traceback(proc.stderr)
    assert_no_traceback(proc.stdout)
    return Result(proc.returncode, proc.stdout, proc.stderr, "--json" in map(str, args))


def ok(result: Result) -> dict:
    """Exit 0 and one JSON document on stdout; return it."""
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result.json()


def fails(result: Result, code: int, *needles: str) -> str:
    """Exit `code`, the message on stderr containing every needle (returned), and on stdout nothing, or
    with --json only the error document {"error": {"code", "message", "exit"}} carrying the same message."""
    assert result.code == code, f"expected exit {code}, got {result.code}: {result.err}{result.out}"
    message = result.err.strip()
    if result.json_mode:
        document = result.json()
        assert set(document) == {"error"} and set(document["error"]) == {"code", "message", "exit"}, document
        error = document["error"]
        assert error["exit"] == code and error["code"] and isinstance(error["code"], str), document
        assert error["message"] and error["message"] in message, f"{error['message']!r} is not the message on stderr"
    else:
        assert result.out == "", f"stdout should be empty on failure: {result.out!r}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def one_line(message: str) -> None:
    assert message and "\n" not in message.strip(), f"expected one line on stderr, got:\n{message}"


# ============================================================================ naming things


def unique(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_for(text: str) -> str:
    return "sha256:" + sha256_hex(text.encode())


def new_address() -> str:
    return Account.create().address


# ============================================================================ the devnet


@dataclass
class Devnet:
    """A running `shipledger devnet up` and the JSON it printed."""

    workdir: Path
    info: dict
    port: int

    @property
    def rpc_url(self) -> str:
        return self.info["rpc_url"]

    @property
    def book(self) -> Path:
        return self.workdir / self.info["deployment"]

    def account(self, part: str, index: int = 0) -> dict:
        listed = part in ("approver", "steward")  # one per organisation, in the same order
        entry = self.info["accounts"][part + "s" if listed else part]
        return entry[index] if listed else entry

    def key(self, part: str, index: int = 0) -> str:
        return self.account(part, index)["private_key"]

    def address(self, part: str, index: int = 0) -> str:
        return self.account(part, index)["address"]

    def run(self, *args, key: str | None = None, cwd: Path | None = None, env: dict | None = None) -> Result:
        return run(args, key, cwd=cwd or self.workdir, env=env)

    def as_(self, part: str, *args, index: int = 0, **kw) -> Result:
        """Run a command signed by a devnet account, e.g. dn.as_("admin", "org", "add", "x", "--json")."""
        return self.run(*args, key=self.key(part, index), **kw)

    def ledger(self, part: str | None = None, index: int = 0) -> Ledger:
        """A fresh SDK connection (fresh, so its nonce counter never lags behind CLI processes)."""
        return Ledger.connect(self.rpc_url, self.book, signer=self.key(part, index) if part else None)

    def nonce(self, part: str, index: int = 0) -> int:
        return int(rpc_call(self.rpc_url, "eth_getTransactionCount", [self.address(part, index), "latest"]), 16)

    def book_variant(self, directory: Path, name: str, edit) -> Path:
        """A copy of the address book changed by edit(book) -> None."""
        book = json.loads(self.book.read_text())
        edit(book)
        path = directory / f"{name}.json"
        path.write_text(json.dumps(book))
        return path

    # -------------------------------------------------------------- SDK shortcuts for setup

    def register(self, service: str, version: str = "1.0.0", digest: str | None = None) -> str:
        digest = digest or digest_for(f"{service}@{version}")
        self.ledger("registrar").register(ArtifactSpec(digest=digest, service=service, version=version))
        return digest

    def set_policy(self, service: str, env: str = ENV, threshold: int = 2, **policy) -> None:
        """As the consortium does it: the acme steward proposes, globex's approves (K = 2), and a
        weakening change (a first policy always is) waits out the delay and executes."""
        self.passed(self.ledger("steward", 0).set_policy(service, env, threshold=threshold, **policy).id)

    def advance(self, seconds: int) -> None:
        """Move the devnet's clock forward (anvil only) and mine a block at the new time."""
        rpc_call(self.rpc_url, "evm_increaseTime", [seconds])
        rpc_call(self.rpc_url, "evm_mine", [])

    def block_time(self) -> int:
        return int(rpc_call(self.rpc_url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def passed(self, proposal_id: int):
        """A proposal approved by the globex steward (and the next ones, up to the K organisations the
        governance needs) and, if it waits for the delay, executed after it."""
        for index in range(1, self.info["governance"]["organisations_needed"]):
            proposal = self.ledger("steward", index).approve_proposal(proposal_id)
        if proposal.state == "scheduled":
            self.advance(max(proposal.executable_at - self.block_time(), 0) + 1)
            proposal = self.ledger("outsider").execute_proposal(proposal_id)
        assert proposal.state == "executed", proposal
        return proposal

    def govern(self, change) -> None:
        """A governance change as the consortium makes it: acme's steward proposes, globex's approves
        (K = 2); a weakening change waits out the delay on the devnet's clock, then executes."""
        self.passed(self.ledger("steward", 0).propose(change).id)

    def approve(self, digest: str, service: str, env: str = ENV, approvers=(0, 1)) -> None:
        for index in approvers:
            self.ledger("approver", index).approve(digest, service, env)

    def release(self, service: str, version: str = "1.0.0", env: str = ENV, threshold: int = 2, **policy) -> str:
        """A registered artifact approved by enough approvers for its policy: the gate allows it."""
        digest = self.register(service, version)
        if self.ledger().policy(service, env) is None:
            self.set_policy(service, env, threshold=threshold, min_organisations=min(threshold, 3), **policy)
        self.approve(digest, service, env, approvers=range(threshold))
        return digest

    def deployed(self, service: str, version: str = "1.0.0", env: str = ENV) -> int:
        """A released artifact rolled out to 100% and completed (live); its deployment id."""
        digest = self.release(service, version, env)
        deployer = self.ledger("deployer")
        deployment_id = deployer.start_deployment(digest, service, env, 100)
        deployer.complete(deployment_id)
        return deployment_id

    def history(self, service: str | None = None, kind: str | None = None) -> list:
        return [e for e in self.ledger().history(service) if kind is None or e.kind == kind]


def _devnet_up(workdir: Path, port: int) -> Result:
    return run(["devnet", "up", "--port", port, "--json"], cwd=workdir, timeout=120)


def _stop_devnet(workdir: Path) -> None:
    """`devnet down`, then make sure the anvil we started (its pid is in the state file) is gone."""
    state_file = workdir / ".shipledger" / "devnet" / "state.json"
    pid = json.loads(state_file.read_text())["pid"] if state_file.is_file() else None
    run(["devnet", "down", "--json"], cwd=workdir)
    if pid is not None:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        os.kill(pid, 9)


@dataclass
class Consortium(Devnet):
    """A running `shipledger network up` (tests/network/test_consortium.py): Devnet's helpers on a
    chain with a real clock. Commands reach it through SHIPLEDGER_RPC_URL (`endpoint`, node 1 unless
    changed) and SHIPLEDGER_DEPLOYMENT, as a pipeline would."""

    network_dir: Path = None
    endpoint: str = None

    def __post_init__(self):
        self.endpoint = self.endpoint or self.info["nodes"][0]["rpc_url"]

    @property
    def rpc_url(self) -> str:
        return self.endpoint

    @property
    def book(self) -> Path:
        return Path(self.info["deployment"])

    def run(self, *args, key: str | None = None, cwd: Path | None = None, env: dict | None = None) -> Result:
        env = {"SHIPLEDGER_RPC_URL": self.endpoint, "SHIPLEDGER_DEPLOYMENT": str(self.book), **(env or {})}
        return super().run(*args, key=key, cwd=cwd, env=env)

    def network(self, *args) -> Result:
        """`shipledger network ARGS --dir <this network's folder>`."""
        return run(["network", *args, "--dir", self.network_dir], cwd=self.workdir, timeout=180)

    def advance(self, seconds: int) -> None:
        """No clock to move on a real chain: wait until a block `seconds` newer than the head is sealed."""
        target = self.block_time() + seconds
        deadline = time.monotonic() + seconds + 60
        while self.block_time() < target:
            assert time.monotonic() < deadline, f"no block {seconds}s newer than the head within {seconds + 60}s"
            time.sleep(0.25)

    def head(self, url: str | None = None) -> int:
        return int(rpc_call(url or self.endpoint, "eth_blockNumber"), 16)

    def block_hash(self, number: int, url: str | None = None) -> str:
        return rpc_call(url or self.endpoint, "eth_getBlockByNumber", [hex(number), False])["hash"]


@pytest.fixture(scope="module")
def dn(tmp_path_factory) -> Devnet:
    workdir = tmp_path_factory.mktemp("devnet")
    port = free_port()
    result = _devnet_up(workdir, port)
    try:
        info = ok(result)
        yield Devnet(workdir=workdir, info=info, port=port)
    finally:
        _stop_devnet(workdir)

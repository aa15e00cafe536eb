"""Start and stop anvil, the embedded development chain.

The anvil binary comes from the npm package @foundry-rs/anvil pinned in package.json (its platform
binary arrives as an optional dependency); SHIPLEDGER_ANVIL or an `anvil` on PATH override it.
Only tests and `shipledger devnet` use this module: nothing else may assume the chain is anvil.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shipledger._internal.rpc import quick_batch
from shipledger.errors import ConnectionFailed, ShipledgerError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default


class ToolNotFound(RuntimeError):
    pass


def find_foundry_tool(name: str) -> str:
    """Path of a Foundry binary (anvil, cast) installed by `npm ci`, or on PATH."""
    override = os.environ.get(f"SHIPLEDGER_{name.upper()}")
    if override:
        return override
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    system = platform.system().lower()
    if arch:
        binary = PROJECT_ROOT / "node_modules" / "@foundry-rs" / f"{name}-{system}-{arch}" / "bin" / name
        if binary.is_file():
            return str(binary)
    found = shutil.which(name)
    if found:
        return found
    raise ToolNotFound(f"{name} not found: run `make setup` (npm ci) or put {name} on PATH")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rpc_call(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    """One JSON-RPC call with the standard library (no web3 import on fast paths); ConnectionFailed
    when the node cannot be reached or answers with an error."""
    [result] = quick_batch(url, [(method, params or [])], timeout=timeout)
    return result


def wait_for_rpc(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> int:
    """Wait until the node answers eth_chainId; return the chain id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(rpc_call(url, "eth_chainId", timeout=1.0), 16)
        except ConnectionFailed:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"anvil exited with code {process.returncode} before answering on {url}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JSON-RPC answer from {url} within {timeout:.0f}s") from None
            time.sleep(0.05)


@dataclass
class Anvil:
    """A running anvil process."""

    process: subprocess.Popen
    url: str
    chain_id: int

    @classmethod
    def start(
        cls,
        port: int | None = None,
        chain_id: int = 31337,
        accounts: int = 10,
        log_path: Path | None = None,
        detach: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> "Anvil":
        port = port or free_port()
        args = [
            find_foundry_tool("anvil"),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--chain-id", str(chain_id),
            "--accounts", str(accounts),
            "--mnemonic", DEV_MNEMONIC,
            "--silent",
            *extra_args,
        ]
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=detach
            )
        finally:
            if log_path:
                log.close()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_rpc(url, process=process)
        except BaseException:
            process.kill()
            raise
        return cls(process=process, url=url, chain_id=chain_id)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def dev_private_keys(count: int = 10) -> list[str]:
    """The private keys anvil funds from DEV_MNEMONIC (m/44'/60'/0'/0/i)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex() for i in range(count)
    ]


# ---------------------------------------------------------------------- `shipledger devnet up|down`

STATE_DIR = Path(".shipledger") / "devnet"
DEFAULT_BOOK = Path("deployments") / "devnet.json"
DEV_ROLES = {  # dev account index -> (part, organisation or None, roles)
    0: ("admin", None, ()),
    1: ("registrar", None, ("REGISTRAR",)),
    2: ("deployer", None, ("DEPLOYER",)),
    3: ("responder", None, ("RESPONDER",)),
    4: ("approver", "acme", ("APPROVER",)),
    5: ("approver", "globex", ("APPROVER",)),
    6: ("approver", "initech", ("APPROVER",)),
    7: ("outsider", None, ()),
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _read_state(state_dir: Path) -> dict | None:
    """The state file `devnet up` wrote, None if there is none; ShipledgerError if it is not one."""
    path = state_dir / "state.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ShipledgerError(f"devnet state {path} is unreadable: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), int) for k in ("pid", "chain_id")) or not all(
            isinstance(state.get(k), str) for k in ("rpc_url", "deployment", "registry")):
        raise ShipledgerError(f"devnet state {path} is not one `devnet up` wrote: stop its anvil yourself, then delete it")
    return state


def running_devnet(state_dir: Path = STATE_DIR) -> dict | None:
    """The devnet recorded in state_dir if its anvil still answers, else None."""
    try:
        state = _read_state(state_dir)
    except ShipledgerError:
        return None  # `devnet up` starts a new one and writes a good state file over it
    if state is None or not _alive(state["pid"]):
        return None
    try:
        if int(rpc_call(state["rpc_url"], "eth_chainId"), 16) != state["chain_id"]:
            return None
        code = rpc_call(state["rpc_url"], "eth_getCode", [state["registry"], "latest"])
    except ConnectionFailed:
        return None
    return state if code not in ("0x", "") else None


def devnet_up(port: int = 8545, book_path: Path = DEFAULT_BOOK, state_dir: Path = STATE_DIR) -> dict:
    """Start anvil in the background, deploy the suite, create a demo consortium; reuse a running one."""
    state = running_devnet(state_dir)
    if state is not None and Path(state["deployment"]).is_file():
        return state
    from eth_account import Account

    from shipledger.client import Ledger

    state_dir.mkdir(parents=True, exist_ok=True)
    node = Anvil.start(port=port, log_path=state_dir / "anvil.log", detach=True)
    try:
        keys = dev_private_keys(len(DEV_ROLES))
        accounts = [Account.from_key(k) for k in keys]
        admin = Ledger.deploy_suite(node.url, accounts[0], out=book_path)
        org_ids = {name: admin.add_organisation(name) for name in ("acme", "globex", "initech")}
        summary: dict = {"approvers": []}
        for index, (part, org, roles) in DEV_ROLES.items():
            account = accounts[index]
            if org:
                admin.add_member(org_ids[org], account.address)
            for role in roles:
                admin.grant_role(role, account.address)
            entry = {"address": account.address, "private_key": keys[index], "org": org}
            if part == "approver":
                summary["approvers"].append(entry)
            else:
                summary[part] = entry
    except BaseException:
        node.stop()
        raise
    book = json.loads(book_path.read_text())
    book["rpc_url"] = node.url  # so the CLI finds the devnet with no --rpc
    book_path.write_text(json.dumps(book, indent=2) + "\n")
    state = {
        "rpc_url": node.url,
        "deployment": str(book_path),
        "chain_id": node.chain_id,
        "accounts": summary,
        "pid": node.process.pid,
        "registry": admin.registry.address,
    }
    tmp = state_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / "state.json")
    return state


def devnet_down(state_dir: Path = STATE_DIR) -> bool:
    """Stop the background anvil and forget its address book; False if none was running."""
    state = _read_state(state_dir)  # a broken one is reported: which process to stop is not known
    if state is None:
        return False
    stopped = False
    if _alive(state["pid"]):
        os.kill(state["pid"], 15)
        stopped = True
        for _ in range(100):
            if not _alive(state["pid"]):
                break
            time.sleep(0.05)
    Path(state["deployment"]).unlink(missing_ok=True)
    (state_dir / "state.json").unlink(missing_ok=True)
    return stopped

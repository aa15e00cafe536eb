"""Start and stop anvil, the embedded development chain.

The anvil binary comes from the npm package @foundry-rs/anvil pinned in package.json (its platform
binary arrives as an optional dependency): from the clone's node_modules, else from a node_modules in
the current directory (`npm install @foundry-rs/anvil` next to a pip install), else an `anvil` on
PATH. SHIPLEDGER_ANVIL overrides them all.
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
from shipledger.models import Bootstrap
from urllib.parse import urlsplit

from shipledger._internal.rpc import quick_batch
from shipledger.errors import ConnectionFailed, ShipledgerError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default


class DevnetError(ShipledgerError):
    """The devnet cannot start: its port is taken, another devnet runs, anvil died or is missing."""


class ToolNotFound(DevnetError):
    """A Foundry binary (anvil, cast) is not installed where we look."""


def find_foundry_tool(name: str) -> str:
    """Path of a Foundry binary (anvil, cast) from npm (the clone's or the current directory's
    node_modules), or on PATH."""
    variable = f"SHIPLEDGER_{name.upper()}"
    override = os.environ.get(variable)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise ToolNotFound(f"{variable}={override} is not an executable file")
        return override
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    system = platform.system().lower()
    if arch:
        for root in (PROJECT_ROOT, Path.cwd()):
            binary = root / "node_modules" / "@foundry-rs" / f"{name}-{system}-{arch}" / "bin" / name
            if binary.is_file():
                return str(binary)
    found = shutil.which(name)
    if found:
        return found
    raise ToolNotFound(
        f"{name} not found: install it with `npm install @foundry-rs/{name}` (in this directory, or with -g "
        f"to put it on PATH), put a Foundry {name} on PATH, or set {variable} to its path"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now. SO_REUSEADDR as anvil sets it, so a port
    left in TIME_WAIT by a stopped devnet counts as free and a live listener (also on 0.0.0.0) does not."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process pid holds the listening socket on 127.0.0.1:port (Linux /proc); None where
    /proc cannot tell (another OS)."""
    if not os.path.exists("/proc/net/tcp"):
        return None
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # the process is gone
        return False
    local = f"0100007F:{port:04X}"  # 127.0.0.1, little-endian as the kernel prints it
    inodes = {f[9] for f in (line.split() for line in table) if f[1] == local and f[3] == "0A"}  # 0A: LISTEN
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def rpc_call(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    """One JSON-RPC call with the standard library (no web3 import on fast paths); ConnectionFailed
    when the node cannot be reached or answers with an error."""
    [result] = quick_batch(url, [(method, params or [])], timeout=timeout)
    return result


def wait_for_rpc(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None, name: str = "anvil") -> int:
    """Wait until the node answers eth_chainId; return the chain id. process (named `name` in the
    error): the node's process, whose exit ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(rpc_call(url, "eth_chainId", timeout=1.0), 16)
        except ConnectionFailed:
            if process is not None and process.poll() is not None:
                raise DevnetError(f"{name} exited with code {process.returncode} before answering on {url}") from None
            if time.monotonic() > deadline:
                raise DevnetError(f"no JSON-RPC answer from {url} within {timeout:.0f}s") from None
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
        accounts: int = 20,
        log_path: Path | None = None,
        detach: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> "Anvil":
        if port and not port_is_free(port):
            raise DevnetError(f"port {port} on 127.0.0.1 is already in use by another process: choose another port")
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
            # The answer may come from a process that took the port after our check (our anvil then
            # dies on its bind): trust it only from the listener we started.
            if process.poll() is not None or listens_on(process.pid, port) is False:
                raise DevnetError(f"port {port} on 127.0.0.1 is answered by another process, not the anvil we started")
        except BaseException:
            process.kill()
            process.wait()
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
DEV_ORGANISATIONS = ("acme", "globex", "initech")


def dev_roles(organisations) -> dict:
    """Dev account index -> (part, organisation or None, roles held everywhere) for a consortium of
    `organisations`: an admin who deploys the suite and keeps no role, a registrar (REGISTRAR and
    ATTESTOR) and a deployer in the first organisation, a responder in the second (the first if
    alone), one approver per organisation, an outsider, one steward per organisation."""
    first, second = organisations[0], organisations[1 % len(organisations)]
    roles = {0: ("admin", None, ()), 1: ("registrar", first, ("REGISTRAR", "ATTESTOR")), 2: ("deployer", first, ("DEPLOYER",)),
             3: ("responder", second, ("RESPONDER",))}
    n = len(organisations)
    roles.update({4 + i: ("approver", org, ()) for i, org in enumerate(organisations)})
    roles[4 + n] = ("outsider", None, ())
    roles.update({5 + n + i: ("steward", org, ()) for i, org in enumerate(organisations)})
    return roles


def majority(count: int) -> int:
    """K for `count` organisations: more than half of them."""
    return count // 2 + 1


DEV_ROLES = dev_roles(DEV_ORGANISATIONS)  # 0 admin, 1 registrar, 2 deployer, 3 responder, 4-6 approvers, 7 outsider, 8-10 stewards
DEV_ORGANISATIONS_NEEDED = majority(len(DEV_ORGANISATIONS))  # K: two of the three organisations
DEV_GOVERNANCE_DELAY = 60  # seconds a weakening change waits on the devnet (production default: 48 h)


def dev_bootstrap(addresses: list[str], delay: int = DEV_GOVERNANCE_DELAY, policies=(), roles=(),
                  organisations=DEV_ORGANISATIONS) -> Bootstrap:
    """The demo consortium of dev_roles(organisations), for dev account addresses (index as there),
    K a majority of the organisations. `devnet up`, `network up`, the tests and `make gas` all start
    from it. policies: (service, env, policy kwargs) to start with; roles: extra (role, scope, address)
    grants to members (both set at deployment, not by governance)."""
    table = dev_roles(organisations)
    stewards = {org: addresses[i] for i, (part, org, _) in table.items() if part == "steward"}
    return Bootstrap(
        organisations=tuple((org, stewards[org]) for org in organisations),
        members=tuple((addresses[i], org, part == "approver") for i, (part, org, _) in table.items()
                      if org and part != "steward"),
        roles=tuple((role, "", addresses[i]) for i, (_, _, held) in table.items() for role in held) + tuple(roles),
        policies=tuple(policies),
        organisations_needed=majority(len(organisations)),
        delay=delay,
    )


def dev_accounts(keys: list[str], organisations=DEV_ORGANISATIONS) -> dict:
    """What `devnet up` and `network up` print of the dev accounts: one entry per part, and lists of
    approvers and stewards in the organisations' order. keys: dev_private_keys(len(dev_roles(...)))."""
    from eth_account import Account

    summary: dict = {"approvers": [], "stewards": []}
    for index, (part, org, _) in dev_roles(organisations).items():
        entry = {"address": Account.from_key(keys[index]).address, "private_key": keys[index], "org": org}
        if part in ("approver", "steward"):
            summary[part + "s"].append(entry)
        else:
            summary[part] = entry
    return summary


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


def devnet_port(state: dict) -> int:
    return urlsplit(state["rpc_url"]).port


def devnet_up(
    port: int = 8545, book_path: Path = DEFAULT_BOOK, state_dir: Path = STATE_DIR, governance_delay: int = DEV_GOVERNANCE_DELAY,
    policies=(), roles=(),
) -> dict:
    """Start anvil in the background, deploy the suite, create a demo consortium (with the bootstrap
    `policies` and extra `roles` of dev_bootstrap, if given). The devnet this state_dir already runs is
    reused when it is on the port asked (state["reused"] says so; its bootstrap is what it was), else refused."""
    state = running_devnet(state_dir)
    if state is not None:
        running = devnet_port(state)
        if running != port:
            raise DevnetError(f"a devnet from this directory already runs on port {running}: use --port {running}, "
                              "or stop it with `shipledger devnet down` first")
        if not Path(state["deployment"]).is_file():
            raise DevnetError(f"the devnet on port {running} has lost its address book {state['deployment']}: "
                              "restart it with `shipledger devnet down` and `shipledger devnet up`")
        return {**state, "reused": True}
    from eth_account import Account

    from shipledger.client import Ledger

    state_dir.mkdir(parents=True, exist_ok=True)
    node = Anvil.start(port=port, log_path=state_dir / "anvil.log", detach=True)
    try:
        keys = dev_private_keys(len(DEV_ROLES))
        accounts = [Account.from_key(k) for k in keys]
        bootstrap = dev_bootstrap([a.address for a in accounts], governance_delay, policies, roles)
        admin = Ledger.deploy_suite(node.url, accounts[0], bootstrap, out=book_path)
        summary = dev_accounts(keys)
    except BaseException:
        node.stop()
        raise
    book = json.loads(book_path.read_text())
    book["rpc_url"] = node.url  # so the CLI finds the devnet with no --rpc
    book_path.write_text(json.dumps(book, indent=2) + "\n")
    state = {
        "rpc_url": node.url,
        "deployment": str(book_path.resolve()),  # right from any directory
        "chain_id": node.chain_id,
        "accounts": summary,
        "pid": node.process.pid,
        "registry": admin.registry.address,
        "governance": {"organisations_needed": bootstrap.organisations_needed, "delay": bootstrap.delay},
    }
    tmp = state_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / "state.json")
    return {**state, "reused": False}


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

"""`shipledger network`: a consortium chain on this machine, one validator per organisation.

The engine is go-ethereum v1.13.15 sealing with Clique, built from tools/geth by `make engine` into
.cache/engine (SHIPLEDGER_GETH overrides). GoQuorum's QBFT was the first choice, but the Go module
proxy refuses github.com/Consensys/quorum at every version, so it cannot be built here; Clique on 4
signers fails the same way QBFT on 4 validators does (seals with 1 down, stalls with 2 down).
`--engine anvil` runs the same consortium on one anvil, for a quick look.

`network up` writes a folder of plain files a person can read (default .shipledger/network):

    network.json        what runs: engine, chain id, nodes (ports, pid), accounts; `network` reads it
    genesis.json        Clique config, the signers in extraData, the dev accounts funded
    nodeN/nodekey       the node's key (hex): its p2p identity and the Clique signer's account
    nodeN/keystore/     the same key encrypted for geth --unlock, whose password is nodeN/password
    nodeN/config.toml   geth's config: ports, static peers, no discovery, archive, full sync
    nodeN/geth.log      the node's log; nodeN/data is its chain database

It is a development network: the keys and passwords are files in the clear.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shipledger.errors import ConnectionFailed, PathError
from shipledger.network.devnet import (
    PROJECT_ROOT, Anvil, DevnetError, _alive, dev_accounts, dev_bootstrap, dev_private_keys, dev_roles, free_port,
    listens_on, port_is_free, rpc_call, wait_for_rpc,
)

ENGINES = ("clique", "anvil")
GETH_VERSION = "v1.13.15"  # tools/geth/go.mod pins it; the Makefile's ENGINE_VERSION names the cache folder
DEFAULT_DIR = Path(".shipledger") / "network"
DEFAULT_BOOK = Path("deployments") / "consortium.json"
CHAIN_ID = 133_701  # ape-config.yaml's consortium network names it too
GAS_LIMIT = 30_000_000  # as anvil's blocks: the suite's deployment and big batches fit
FUNDS = 10_000 * 10**18  # wei per funded account, as anvil gives its dev accounts
CLIQUE_EPOCH = 30_000
# admin and miner too: the fault tests cut a node off its peers (admin_removePeer/addPeer) and hold its
# sealing (miner_stop/start). Loopback only, on a development network whose keys are files in the clear.
HTTP_APIS = "eth,net,web3,clique,txpool,debug,admin,miner"
MIN_BLOCK_AGE = 30  # seconds: the address book's max_block_age is 10 block periods, never less than this
START_TIMEOUT = 90.0  # seconds for a node to answer, for peers to connect, for blocks to flow (shared 2-core machines)
STOP_TIMEOUT = 15.0


class NetworkError(DevnetError):
    """The consortium network cannot do what was asked: none runs, a node number is out of range, a
    node is already stopped or running, the engine is missing or a node would not start."""


def qbft_refusal() -> str:
    return ("--engine qbft: GoQuorum cannot be built here (the Go module proxy answers 403 'module version not "
            "available' for github.com/Consensys/quorum at every version); this build runs --engine clique "
            "(geth v1.13.15, which fails like QBFT: it seals with 1 of 4 validators down and stalls with 2); "
            "for Besu, generate its files with `shipledger network besu-config`")


def find_geth() -> str:
    """The geth binary `make engine` built (or SHIPLEDGER_GETH)."""
    override = os.environ.get("SHIPLEDGER_GETH")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise NetworkError(f"SHIPLEDGER_GETH={override} is not an executable file")
        return override
    built = PROJECT_ROOT / ".cache" / "engine" / f"geth-{GETH_VERSION}" / "geth"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    raise NetworkError(f"the consortium engine is not built: run `make engine` in {PROJECT_ROOT} (builds geth "
                       f"{GETH_VERSION} from tools/geth, about 5 minutes cold), or set SHIPLEDGER_GETH to a geth {GETH_VERSION}")


# ---------------------------------------------------------------------- the files

def clique_extra_data(signers: list[str]) -> str:
    """Clique's genesis extraData: 32 bytes of vanity, the signers' addresses (ascending, as Clique's
    snapshots keep them), 65 zero bytes where a block's seal goes."""
    addresses = sorted(bytes.fromhex(a[2:]) for a in signers)
    return "0x" + "00" * 32 + b"".join(addresses).hex() + "00" * 65


def genesis(chain_id: int, block_period: int, signers: list[str], funded: list[str]) -> dict:
    """A Clique genesis: every fork up to London at block 0 (the suite's Berlin bytecode runs on it),
    the signers in extraData, `funded` and the signers given FUNDS each."""
    forks = ("homestead", "eip150", "eip155", "eip158", "byzantium", "constantinople", "petersburg", "istanbul",
             "muirGlacier", "berlin", "london")
    return {
        "config": {"chainId": chain_id, **{f"{fork}Block": 0 for fork in forks},
                   "clique": {"period": block_period, "epoch": CLIQUE_EPOCH}},
        "nonce": "0x0",
        "timestamp": hex(int(time.time())),
        "extraData": clique_extra_data(signers),
        "gasLimit": hex(GAS_LIMIT),
        "difficulty": "0x1",
        "alloc": {address: {"balance": hex(FUNDS)} for address in dict.fromkeys([*funded, *signers])},
    }


def enode(key: str, p2p_port: int) -> str:
    """The enode URL of a node with private key `key` listening on 127.0.0.1:p2p_port."""
    from eth_keys import keys

    public = keys.PrivateKey(bytes.fromhex(key.removeprefix("0x"))).public_key
    return f"enode://{public.to_bytes().hex()}@127.0.0.1:{p2p_port}"


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def geth_config(node: dict, chain_id: int, static_nodes: list[str]) -> str:
    """The node's geth TOML (read with --config): ports, the static peers, no discovery."""
    return f"""# geth {GETH_VERSION} config for node {node['number']} ({node['org']}), written by `shipledger network up`.
[Eth]
NetworkId = {chain_id}
SyncMode = "full"
# archive: calls at past blocks (revert diagnosis, audits) keep working on every node
NoPruning = true

[Node]
DataDir = {json.dumps(str(Path(node['dir']) / 'data'))}
# no IPC socket: its path under a deep folder can be longer than a unix socket allows
IPCPath = ""
HTTPHost = "127.0.0.1"
HTTPPort = {node['http_port']}
HTTPModules = {_toml_list(HTTP_APIS.split(','))}
AuthAddr = "127.0.0.1"
AuthPort = {node['auth_port']}

[Node.P2P]
MaxPeers = {len(static_nodes) + 5}
NoDiscovery = true
DiscoveryV4 = false
ListenAddr = "127.0.0.1:{node['p2p_port']}"
StaticNodes = {_toml_list(static_nodes)}
"""


def geth_command(node: dict) -> list[str]:
    """The command line that runs (and re-runs, after stop-node) a node from its files. The sealing
    settings are flags because geth has no TOML for them."""
    home = Path(node["dir"])
    return [
        find_geth(), "--config", str(home / "config.toml"), "--nodekey", str(home / "nodekey"),
        "--keystore", str(home / "keystore"), "--nat", "none",
        "--unlock", node["validator"], "--password", str(home / "password"), "--allow-insecure-unlock",
        "--mine", "--miner.etherbase", node["validator"], "--verbosity", "3",
    ]


def write_node_files(node: dict, key: str, chain_id: int, static_nodes: list[str], genesis_path: Path) -> None:
    """A node's key, keystore, password and config, and its database initialised from the genesis."""
    from eth_account import Account

    home = Path(node["dir"])
    (home / "keystore").mkdir(parents=True)
    (home / "nodekey").write_text(key.removeprefix("0x"))
    password = secrets.token_hex(16)
    (home / "password").write_text(password + "\n")
    # A light scrypt: the key is also in nodekey in the clear, so a slow one would only slow `up` down.
    keystore = Account.encrypt(key, password, kdf="scrypt", iterations=2**12)
    (home / "keystore" / f"UTC--{node['validator'].lower()[2:]}.json").write_text(json.dumps(keystore))
    (home / "config.toml").write_text(geth_config(node, chain_id, static_nodes))
    init = subprocess.run([find_geth(), "--config", str(home / "config.toml"), "init", str(genesis_path)],
                          capture_output=True, text=True)
    if init.returncode != 0:
        raise NetworkError(f"geth init of node {node['number']} failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")


# ---------------------------------------------------------------------- the processes

def start_process(node: dict) -> int:
    """Start node's geth in the background (its own session, so the CLI may exit); return its pid
    once it answers JSON-RPC from the port it was given."""
    for port in (node["http_port"], node["p2p_port"], node["auth_port"]):
        if not port_is_free(port):
            raise NetworkError(f"node {node['number']} ({node['org']}) cannot start: port {port} on 127.0.0.1 is taken by another process")
    with open(Path(node["dir"]) / "geth.log", "ab") as log:
        process = subprocess.Popen(geth_command(node), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for_rpc(node["rpc_url"], timeout=START_TIMEOUT, process=process, name=f"geth of node {node['number']}")
        if process.poll() is not None or listens_on(process.pid, node["http_port"]) is False:
            raise NetworkError(f"port {node['http_port']} is answered by another process, not node {node['number']}'s geth")
    except DevnetError as exc:
        process.kill()
        process.wait()
        # `up` removes the folder on failure, geth.log with it: say here what geth said last
        raise NetworkError(f"{exc}; the end of its geth.log:\n{_log_tail(Path(node['dir']) / 'geth.log')}") from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process.pid


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"


def stop_process(pid: int) -> None:
    """SIGTERM (geth writes its state to disk), then SIGKILL if it has not gone after STOP_TIMEOUT."""
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            _reap(pid)
            time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect pid's exit status if this process started it (else it stays a zombie and looks alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def node_running(node: dict) -> bool:
    pid = node.get("pid")
    if not pid:
        return False
    _reap(pid)
    return _alive(pid) and listens_on(pid, node["http_port"]) is not False


def _wait(what: str, check, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ConnectionFailed:
            pass
        if time.monotonic() > deadline:
            raise NetworkError(f"the network did not come up: {what} within {timeout:.0f}s (see the nodes' geth.log)")
        time.sleep(0.2)


def head(url: str) -> int:
    return int(rpc_call(url, "eth_blockNumber"), 16)


def peers(url: str) -> int:
    return int(rpc_call(url, "net_peerCount"), 16)


def wait_for_block_time(url: str, timestamp: int) -> None:
    """Wait until the chain at url has sealed a block at unix time `timestamp` or later. A real
    chain's clock cannot be moved (anvil's evm_increaseTime): a governance delay is waited out."""
    deadline = time.monotonic() + max(timestamp - time.time(), 0) + START_TIMEOUT
    while int(rpc_call(url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16) < timestamp:
        if time.monotonic() > deadline:
            raise NetworkError(f"no block at unix time {timestamp} or later from {url}: is the chain sealing?")
        time.sleep(0.5)


# ---------------------------------------------------------------------- state

def _read_state(directory: Path) -> dict | None:
    if directory.exists() and not directory.is_dir():
        raise PathError(f"--dir {directory} is a file: it takes the network's folder")
    path = directory / "network.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NetworkError(f"network state {path} is unreadable: {exc}") from None
    if not isinstance(state, dict) or state.get("engine") not in ENGINES or not isinstance(state.get("nodes"), list):
        raise NetworkError(f"{path} is not one `network up` wrote")
    return state


def _write_state(directory: Path, state: dict) -> None:
    tmp = directory / "network.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(directory / "network.json")


def running_network(directory: Path = DEFAULT_DIR) -> dict:
    """The network recorded in directory with at least one node running; NetworkError otherwise."""
    state = _read_state(directory)
    if state is None or not any(node_running(n) for n in state["nodes"]):
        raise NetworkError(f"no network is running from {directory}: start one with `shipledger network up`")
    return state


# ---------------------------------------------------------------------- up, status, stop, start, down

@dataclass(frozen=True)
class NetworkPlan:
    engine: str = "clique"
    validators: int = 4
    block_period: int = 1  # seconds
    directory: Path = DEFAULT_DIR
    governance_delay: int = 60
    book_path: Path = DEFAULT_BOOK


def max_block_age(block_period: int) -> int:
    return max(10 * block_period, MIN_BLOCK_AGE)


def network_up(plan: NetworkPlan) -> dict:
    """Start the network, deploy suite v2 with one organisation per validator (org1..orgN, K a
    majority), write the address book; return the state (`network.json`). On any failure nothing is
    left running and the folder is removed."""
    if plan.engine not in ENGINES:
        raise NetworkError(qbft_refusal() if plan.engine == "qbft" else f"unknown engine {plan.engine!r}: use one of {', '.join(ENGINES)}")
    if plan.validators < 1:
        raise NetworkError("--validators must be at least 1")
    if plan.block_period < 1:
        raise NetworkError("--block-period must be at least 1s (Clique counts whole seconds)")
    directory = plan.directory
    state = _read_state(directory)
    if state is not None and any(node_running(n) for n in state["nodes"]):
        raise NetworkError(f"a network from {directory} already runs: stop it with `shipledger network down` first")
    if directory.exists() and any(directory.iterdir()) and state is None:
        raise NetworkError(f"{directory} is not empty and holds no network: choose another --dir")
    if state is not None:
        shutil.rmtree(directory)  # a network that is down entirely: `up` starts a new chain
    if plan.engine == "clique":
        find_geth()  # say the engine is missing before writing anything
    directory.mkdir(parents=True, exist_ok=True)
    started: list[int] = []
    try:
        state = (_up_clique if plan.engine == "clique" else _up_anvil)(plan, started)
        _deploy(plan, state)
        _write_state(directory, state)
    except BaseException:
        for pid in started:
            stop_process(pid)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return state


def _organisations(count: int) -> tuple[str, ...]:
    return tuple(f"org{i}" for i in range(1, count + 1))


def _up_clique(plan: NetworkPlan, started: list[int]) -> dict:
    from eth_account import Account

    directory = plan.directory.resolve()
    organisations = _organisations(plan.validators)
    keys = ["0x" + secrets.token_hex(32) for _ in organisations]
    nodes = []
    for number, (org, key) in enumerate(zip(organisations, keys), 1):
        http_port, p2p_port, auth_port = free_port(), free_port(), free_port()
        nodes.append({"number": number, "org": org, "validator": Account.from_key(key).address,
                      "rpc_url": f"http://127.0.0.1:{http_port}", "http_port": http_port, "p2p_port": p2p_port,
                      "auth_port": auth_port, "dir": str(directory / f"node{number}"), "pid": None})
    dev = [Account.from_key(k).address for k in dev_private_keys(len(dev_roles(organisations)))]
    genesis_path = directory / "genesis.json"
    genesis_path.write_text(json.dumps(genesis(CHAIN_ID, plan.block_period, [n["validator"] for n in nodes], dev), indent=2) + "\n")
    enodes = [enode(key, n["p2p_port"]) for key, n in zip(keys, nodes)]
    for node, key, own in zip(nodes, keys, enodes):
        write_node_files(node, key, CHAIN_ID, [e for e in enodes if e != own], genesis_path)
    for node in nodes:
        node["pid"] = start_process(node)
        started.append(node["pid"])
    if len(nodes) > 1:
        _wait(f"every node connected to its {len(nodes) - 1} peers", lambda: all(peers(n["rpc_url"]) >= len(nodes) - 1 for n in nodes))
    first = head(nodes[0]["rpc_url"])
    _wait("blocks sealed on every node", lambda: all(head(n["rpc_url"]) >= first + 2 for n in nodes))
    return {"engine": "clique", "chain_id": CHAIN_ID, "block_period": plan.block_period, "rpc_url": nodes[0]["rpc_url"],
            "max_block_age": max_block_age(plan.block_period), "nodes": nodes}


def _up_anvil(plan: NetworkPlan, started: list[int]) -> dict:
    directory = plan.directory.resolve()
    anvil = Anvil.start(log_path=directory / "anvil.log", detach=True, accounts=len(dev_roles(_organisations(plan.validators))))
    started.append(anvil.process.pid)
    port = int(anvil.url.rsplit(":", 1)[1])
    node = {"number": 1, "org": None, "validator": None, "rpc_url": anvil.url, "http_port": port, "dir": str(directory),
            "pid": anvil.process.pid}
    # anvil mines on demand: a block's age says nothing there, so the book has no max_block_age
    return {"engine": "anvil", "chain_id": anvil.chain_id, "block_period": None, "rpc_url": anvil.url,
            "max_block_age": None, "nodes": [node]}


def _deploy(plan: NetworkPlan, state: dict) -> None:
    """Suite v2 with the consortium of dev_roles(org1..orgN) on the first node; the address book."""
    from eth_account import Account

    from shipledger.client import Ledger

    organisations = _organisations(plan.validators)
    keys = dev_private_keys(len(dev_roles(organisations)))
    bootstrap = dev_bootstrap([Account.from_key(k).address for k in keys], plan.governance_delay, organisations=organisations)
    admin = Ledger.deploy_suite(state["rpc_url"], Account.from_key(keys[0]), bootstrap, out=plan.book_path)
    book = json.loads(plan.book_path.read_text())
    book["rpc_url"] = state["rpc_url"]  # so the CLI finds the network with no --rpc
    book["nodes"] = public_nodes(state)
    if state["max_block_age"] is not None:
        book["max_block_age"] = state["max_block_age"]
    tmp = plan.book_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(book, indent=2) + "\n")
    tmp.replace(plan.book_path)
    state.update({
        "deployment": str(plan.book_path.resolve()),
        "registry": admin.registry.address,
        "accounts": dev_accounts(keys, organisations),
        "governance": {"organisations_needed": bootstrap.organisations_needed, "delay": bootstrap.delay},
    })


def public_nodes(state: dict) -> list[dict]:
    """The nodes as the address book and `network up --json` list them."""
    return [{"org": n["org"], "rpc_url": n["rpc_url"], "validator": n["validator"]} for n in state["nodes"]]


def network_status(directory: Path = DEFAULT_DIR) -> dict:
    """Per node: running, head (number, hash, age in seconds), peers, signers, syncing."""
    from eth_utils import to_checksum_address

    state = running_network(directory)
    nodes = []
    for node in state["nodes"]:
        entry = {"number": node["number"], "org": node["org"], "rpc_url": node["rpc_url"], "validator": node["validator"],
                 "running": node_running(node)}
        if entry["running"]:
            try:
                block = rpc_call(node["rpc_url"], "eth_getBlockByNumber", ["latest", False])
                clique = state["engine"] == "clique"  # anvil has no peers and no signers
                entry.update(head=int(block["number"], 16), head_hash=block["hash"],
                             head_age=max(0, int(time.time()) - int(block["timestamp"], 16)),
                             peers=peers(node["rpc_url"]) if clique else 0,
                             syncing=rpc_call(node["rpc_url"], "eth_syncing") is not False,
                             signers=[to_checksum_address(a) for a in rpc_call(node["rpc_url"], "clique_getSigners")] if clique else None)
            except ConnectionFailed as exc:
                entry["error"] = str(exc)  # its process runs but it does not answer (yet)
        nodes.append(entry)
    return {"engine": state["engine"], "chain_id": state["chain_id"], "deployment": state["deployment"], "nodes": nodes}


def _node(state: dict, number: int) -> dict:
    count = len(state["nodes"])
    if not 1 <= number <= count:
        raise NetworkError(f"node {number} is out of range: this network has nodes 1 to {count}")
    if state["engine"] != "clique":
        raise NetworkError(f"the {state['engine']} engine runs one node for all: stop-node and start-node need --engine clique")
    return state["nodes"][number - 1]


def stop_node(number: int, directory: Path = DEFAULT_DIR) -> dict:
    """Stop node `number` (from 1); its data stays, so start-node lets it catch up."""
    state = running_network(directory)
    node = _node(state, number)
    if not node_running(node):
        raise NetworkError(f"node {number} ({node['org']}) is already stopped")
    stop_process(node["pid"])
    node["pid"] = None
    _write_state(directory, state)
    return node


def start_node(number: int, directory: Path = DEFAULT_DIR) -> dict:
    """Start a stopped node again from its data; it then syncs from its peers."""
    state = _read_state(directory)
    if state is None:
        raise NetworkError(f"no network is running from {directory}: start one with `shipledger network up`")
    node = _node(state, number)
    if node_running(node):
        raise NetworkError(f"node {number} ({node['org']}) is already running")
    node["pid"] = start_process(node)
    _write_state(directory, state)
    return node


def network_down(directory: Path = DEFAULT_DIR) -> bool:
    """Stop every node, remove the address book and the network's folder; False if none was there."""
    state = _read_state(directory)
    if state is None:
        return False
    for node in state["nodes"]:
        if node_running(node):
            stop_process(node["pid"])
    if state.get("deployment"):
        Path(state["deployment"]).unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    return True

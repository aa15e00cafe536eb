"""`shipledger network besu-config`: the files a consortium needs to run shipledger's chain on
Hyperledger Besu, one QBFT validator per organisation.

Besu cannot run on the machines that build shipledger, so nothing here starts it: this writes plain
files a person can read, in Besu's published formats, and the tests check them against those formats.

    DIR/genesis.json                the chain (shipledger/network/qbft.py: the same block GoQuorum would run)
    DIR/orgK/config.toml            node K's options; paths are relative: run `besu` from DIR/orgK
    DIR/orgK/key                    node K's private key, 0600 (a secret: it signs blocks as validator K)
    DIR/orgK/static-nodes.json      the enode URLs of every node (no discovery)
    DIR/orgK/permissions_config.toml  the nodes and accounts allowlists, as local files

Permissioning is local-file only: Besu removed onchain (smart-contract) permissioning in 25.6.0
(CHANGELOG.md, 25.6.0, Breaking Changes: "Remove onchain permissioning #8597",
https://github.com/hyperledger/besu/pull/8597). Options are Besu's (reference:
https://besu.hyperledger.org/public-networks/reference/cli/options; local permissioning:
https://besu.hyperledger.org/private-networks/how-to/use-local-permissioning).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shipledger.errors import PathError, UsageError, path_error
from shipledger.network.qbft import NodeKey, qbft_genesis

MAX_VALIDATORS = 64  # a sanity bound: QBFT's message count grows with the square of it
P2P_PORT, RPC_PORT = 30303, 8545  # node K (from 1) listens on these plus K-1, so all fit on one host to try
RPC_APIS = ("ETH", "NET", "WEB3", "QBFT", "TXPOOL")  # no ADMIN, PERM or DEBUG: those change the node
# The limits the SDK is written against (README "Node limits"), set explicitly so a newer Besu default
# cannot move them: at most 1,024 calls a JSON-RPC batch and eth_getLogs over at most 5,000 blocks.
MAX_BATCH_SIZE, MAX_LOGS_RANGE = 1024, 5000
PERMISSIONS_FILE = "permissions_config.toml"


@dataclass(frozen=True)
class BesuNode:
    org: str
    key: NodeKey
    host: str
    p2p_port: int
    rpc_port: int

    @property
    def enode(self) -> str:
        return self.key.enode(self.host, self.p2p_port)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's, ASCII only
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(comment: str, entries: dict) -> str:
    """Flat key = value TOML (all Besu reads), under a comment saying what the file is."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    return "\n".join(lines + [""] + [f"{key}={_toml_value(value)}" for key, value in entries.items()]) + "\n"


def node_config(node: BesuNode) -> dict:
    """config.toml of one node: a free-gas QBFT validator answering JSON-RPC on loopback."""
    return {
        "genesis-file": "../genesis.json",
        "data-path": "data",
        "node-private-key-file": "key",
        "identity": node.org,
        "sync-mode": "FULL",
        "min-gas-price": 0,  # QBFT here is free gas: the SDK sends legacy transactions at price 0
        "revert-reason-enabled": True,  # receipts carry the revert reason the SDK reports
        "p2p-host": node.host,
        "p2p-port": node.p2p_port,
        "discovery-enabled": False,  # the peers are exactly the static nodes
        "static-nodes-file": "static-nodes.json",
        "rpc-http-enabled": True,
        "rpc-http-host": "127.0.0.1",  # the organisation's own pipelines; README says how to open it
        "rpc-http-port": node.rpc_port,
        "rpc-http-api": list(RPC_APIS),
        "host-allowlist": ["localhost", "127.0.0.1"],
        "rpc-http-max-batch-size": MAX_BATCH_SIZE,
        "rpc-max-logs-range": MAX_LOGS_RANGE,
        "permissions-nodes-config-file-enabled": True,
        "permissions-nodes-config-file": PERMISSIONS_FILE,
        "permissions-accounts-config-file-enabled": True,
        "permissions-accounts-config-file": PERMISSIONS_FILE,
    }


def parse_hosts(text: str | None, count: int) -> list[str]:
    """--hosts: one IP address per organisation (enode URLs need addresses, not names), or one for all;
    none: every node on 127.0.0.1, to try the network on one machine."""
    if not text:
        return ["127.0.0.1"] * count
    hosts = [h.strip() for h in text.split(",")]
    if len(hosts) == 1:
        hosts *= count
    if len(hosts) != count:
        raise UsageError(f"--hosts names {len(hosts)} hosts for {count} validators: give one IP address per organisation, or one for all")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"--hosts: {host!r} is not an IP address (Besu's enode URLs take addresses, not host names)") from None
    return hosts


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an --out that is a file, or a directory with something in it unless --force."""
    try:
        if out.resolve() in (Path.cwd(), *Path.cwd().parents):
            raise PathError(f"--out {out} is the current directory or holds it: name a directory of its own, e.g. besu-net")
        if out.exists() and not out.is_dir():
            raise PathError(f"--out {out} is a file, not a directory")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise PathError(f"--out {out} is not empty: choose an empty or new directory, or pass --force to replace it")
        if not out.resolve().parent.is_dir():
            raise PathError(f"cannot write {out}: its parent directory {out.resolve().parent} does not exist")
    except OSError as exc:  # a directory on the way we may not look into
        raise path_error(out, exc, "write") from None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    # created with its mode (not chmod-ed after), so a key is never readable by others, even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def besu_config(out: Path, validators: int, chain_id: int, block_period: int, funded: list[str],
                hosts: list[str] | None = None, force: bool = False) -> dict:
    """Write the Besu network for `validators` organisations (org1..orgN) into `out`, all or nothing:
    everything goes to a new directory next to it, renamed into place when complete. `funded`: the
    accounts the genesis funds and the accounts allowlist lets send transactions. Returns a summary."""
    if not 1 <= validators <= MAX_VALIDATORS:
        raise UsageError(f"--validators {validators}: between 1 and {MAX_VALIDATORS} organisations (4 or more to tolerate a faulty one)")
    if chain_id < 1:
        raise UsageError(f"--chain-id {chain_id}: a chain id is a positive integer")
    if block_period < 1:
        raise UsageError(f"--block-period {block_period}s: QBFT makes blocks in whole seconds, at least 1")
    if not funded:
        raise UsageError("no accounts to fund: the suite's deployer and members need at least one")
    check_out_dir(out, force)
    hosts = hosts or ["127.0.0.1"] * validators
    nodes = [BesuNode(f"org{k}", NodeKey.generate(), hosts[k - 1], P2P_PORT + k - 1, RPC_PORT + k - 1)
             for k in range(1, validators + 1)]
    genesis = qbft_genesis("besu", [n.key.address for n in nodes], chain_id, block_period, funded)
    enodes = [n.enode for n in nodes]
    accounts = sorted({a.lower() for a in funded})  # Besu's docs write allowlisted accounts in lower case
    permissions = toml_text(
        "Besu local permissioning (Besu removed onchain permissioning in 25.6.0): only these nodes may peer\n"
        "with this one, and only these accounts may send transactions through it. perm_* RPC calls (not\n"
        "enabled in config.toml) or an edit plus a restart change it; every organisation keeps its own copy.",
        {"nodes-allowlist": enodes, "accounts-allowlist": accounts})

    target = out.resolve()  # renamed into place by its full path; the summary names `out` as given
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # 0700: it holds keys
    except OSError as exc:
        raise path_error(target.parent, exc, "write in") from None
    try:
        _write(staging / "genesis.json", json.dumps(genesis, indent=2) + "\n")
        for node in nodes:
            folder = staging / node.org
            folder.mkdir(mode=0o700)
            # Besu's own key file: "0x" and 64 hex digits on one line, no newline (KeyPairUtil.storeKeyPair)
            _write(folder / "key", "0x" + node.key.private_key.hex(), mode=0o600)
            _write(folder / "static-nodes.json", json.dumps([e for e in enodes if e != node.enode], indent=2) + "\n")
            _write(folder / PERMISSIONS_FILE, permissions)
            _write(folder / "config.toml", toml_text(
                f"Besu node of {node.org} (validator {node.key.address}) on the shipledger QBFT chain {chain_id}.\n"
                f"Start it from this folder: cd {node.org} && besu --config-file=config.toml", node_config(node)))
        _replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "chain_id": chain_id,
        "block_period": block_period,
        "genesis": str(out / "genesis.json"),
        "extra_data": genesis["extraData"],
        "validators": sorted((n.key.address for n in nodes), key=str.lower),
        "nodes": [{"org": n.org, "dir": str(out / n.org), "config": str(out / n.org / "config.toml"),
                   "key": str(out / n.org / "key"), "validator": n.key.address, "enode": n.enode,
                   "rpc_url": f"http://127.0.0.1:{n.rpc_port}", "p2p_port": n.p2p_port} for n in nodes],
        "accounts": accounts,
        "secrets": [str(out / n.org / "key") for n in nodes],
    }


def _replace(staging: Path, out: Path) -> None:
    """Put the finished staging directory at `out`: a rename, so `out` is never half-written. An
    existing `out` (empty, or replaced under --force) is moved aside first and removed after."""
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=staging.parent))
    out.rename(old / "replaced")
    try:
        staging.rename(out)
    except BaseException:
        (old / "replaced").rename(out)  # put the old one back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)

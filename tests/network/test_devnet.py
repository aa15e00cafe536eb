"""`shipledger devnet up` deploys only on the anvil it started, on the port asked, and says where.

The other chain in these tests is the module's `dn` devnet: a real node answering JSON-RPC on a
port, which is what used to receive the suite when `devnet up` was pointed at its port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from shipledger.network import devnet
from shipledger.network.devnet import Anvil, DevnetError, free_port, listens_on, port_is_free, rpc_call
from support import _devnet_up, _stop_devnet, fails, ok, one_line, run


def _block(url: str) -> int:
    return int(rpc_call(url, "eth_blockNumber"), 16)


def test_up_on_a_port_another_node_serves_refuses_and_deploys_nothing(dn, tmp_path):
    block = _block(dn.rpc_url)
    try:
        message = fails(_devnet_up(tmp_path, dn.port), 1, f"port {dn.port}", "already in use")
        one_line(message)
        assert _block(dn.rpc_url) == block  # nothing deployed on the other chain
        assert not (tmp_path / "deployments").exists() and not (tmp_path / ".shipledger" / "devnet" / "state.json").exists()
    finally:
        _stop_devnet(tmp_path)


def test_a_port_in_use_on_every_interface_is_not_free():
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)  # closed: free again (TIME_WAIT aside, as anvil binds with SO_REUSEADDR)


def test_readiness_answered_by_another_node_is_not_trusted(dn, tmp_path, monkeypatch):
    """The race the port check leaves: another node takes the port between our check and anvil's
    bind. Skip the check to get there; the anvil we start must be refused and stopped."""
    monkeypatch.setattr(devnet, "port_is_free", lambda port: True)
    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(devnet.subprocess, "Popen", lambda *a, **kw: started.append(real_popen(*a, **kw)) or started[-1])
    with pytest.raises(DevnetError, match=f"port {dn.port} on 127.0.0.1 is answered by another process"):
        Anvil.start(port=dn.port, log_path=tmp_path / "anvil.log")
    [process] = started
    assert process.poll() is not None  # ours is gone, and dn's node still serves
    assert int(rpc_call(dn.rpc_url, "eth_chainId"), 16) == dn.info["chain_id"]


def test_listens_on_tells_the_listener(dn):
    pid = json.loads((dn.workdir / ".shipledger" / "devnet" / "state.json").read_text())["pid"]
    if listens_on(pid, dn.port) is None:
        pytest.skip("no /proc on this system: only the process check guards the readiness answer")
    assert listens_on(pid, dn.port) is True
    assert listens_on(os.getpid(), dn.port) is False
    assert listens_on(pid, free_port()) is False


def test_up_on_another_port_while_a_devnet_runs_refuses(dn):
    other = free_port()
    block = _block(dn.rpc_url)
    message = fails(dn.run("devnet", "up", "--port", other, "--json"), 1,
                    f"already runs on port {dn.port}", "shipledger devnet down")
    one_line(message)
    assert port_is_free(other)  # nothing was started there
    assert _block(dn.rpc_url) == block
    again = ok(dn.run("devnet", "up", "--port", dn.port, "--json"))  # the same port: reused, and it says so
    assert again == {**dn.info, "reused": True}


def test_deployment_path_is_absolute(dn, tmp_path):
    path = Path(dn.info["deployment"])
    assert dn.info["reused"] is False
    assert path.is_absolute() and path == (dn.workdir / "deployments" / "devnet.json").resolve()
    assert json.loads((dn.workdir / ".shipledger" / "devnet" / "state.json").read_text())["deployment"] == str(path)
    # usable as printed from any other directory
    history = ok(run(["history", "--deployment", path, "--rpc", dn.rpc_url, "--json"], cwd=tmp_path))
    assert "organisation-added" in {e["kind"] for e in history["events"]}  # the demo consortium


def test_an_anvil_override_that_is_not_a_file_is_a_plain_error(tmp_path):
    message = fails(run(["devnet", "up", "--port", free_port(), "--json"], cwd=tmp_path,
                        env={"SHIPLEDGER_ANVIL": str(tmp_path / "nope")}), 1, "SHIPLEDGER_ANVIL=", "not an executable file")
    one_line(message)


def test_port_out_of_range_is_a_usage_error(tmp_path):
    result = run(["devnet", "up", "--port", "70000"], cwd=tmp_path)
    assert result.code == 2 and "not a TCP port" in result.err

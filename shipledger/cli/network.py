"""`shipledger devnet up|down`: the embedded anvil development chain (shipledger/network/devnet.py)."""

from __future__ import annotations

import argparse

from shipledger.cli import EXIT_OK, emit, say
from shipledger.cli.shared import duration


def tcp_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def cmd_devnet_up(args) -> int:
    from shipledger.network.devnet import devnet_up

    say(args, "starting the devnet (anvil), deploying the suite and a demo consortium...")
    state = devnet_up(port=args.port, governance_delay=args.governance_delay)
    public = {k: state[k] for k in ("rpc_url", "deployment", "chain_id", "accounts", "governance", "reused")}
    reused = "the devnet already running" if state["reused"] else "devnet"
    emit(args, public, f"{reused} on {state['rpc_url']} (chain {state['chain_id']}); address book {state['deployment']}\n"
         f"export SHIPLEDGER_RPC_URL={state['rpc_url']} SHIPLEDGER_DEPLOYMENT={state['deployment']}")
    return EXIT_OK


def cmd_devnet_down(args) -> int:
    from shipledger.network.devnet import devnet_down

    stopped = devnet_down()
    emit(args, {"stopped": stopped}, "devnet stopped" if stopped else "no devnet was running")
    return EXIT_OK


def add_commands(parsers) -> None:
    devnet = parsers.group("devnet")
    p = parsers.command("up", cmd_devnet_up, "start anvil, deploy the suite and a demo consortium (reuses the one running on the same port)", devnet)
    p.add_argument("--port", type=tcp_port, default=8545, help="the loopback port anvil listens on (default 8545)")
    p.add_argument("--governance-delay", type=duration, default=60, metavar="DUR",
                   help="how long a weakening governance change waits (default 60s; production suites use 48h)")
    parsers.command("down", cmd_devnet_down, "stop the devnet", devnet)
    from shipledger.cli.besu import add_commands as add_besu_config  # `network besu-config`, its own module
    add_besu_config(parsers)

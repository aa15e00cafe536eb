"""`shipledger devnet up|down`: the embedded anvil development chain (shipledger/network/devnet.py), and
`shipledger network up|status|stop-node|start-node|down`: a consortium chain, one validator per
organisation (shipledger/network/consortium.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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


def engine_name(text: str) -> str:
    """An argparse type: the engines `network up` runs; qbft is refused with why."""
    from shipledger.network.consortium import ENGINES, qbft_refusal

    if text == "qbft":
        raise argparse.ArgumentTypeError(qbft_refusal())
    if text not in ENGINES:
        raise argparse.ArgumentTypeError(f"{text!r} is not an engine: use one of {', '.join(ENGINES)}")
    return text


def count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def block_period(text: str) -> int:
    seconds = duration(text)
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a block period is at least 1s")
    return seconds


def cmd_network_up(args) -> int:
    from shipledger.network.consortium import NetworkPlan, network_up, public_nodes

    plan = NetworkPlan(engine=args.engine, validators=args.validators, block_period=args.block_period,
                       directory=Path(args.dir), governance_delay=args.governance_delay)
    what = f"{plan.validators} geth Clique validators" if plan.engine == "clique" else "anvil"
    say(args, f"starting the network ({what}), deploying suite v2 with {plan.validators} organisations...")
    started = time.monotonic()
    state = network_up(plan)
    public = {k: state[k] for k in ("rpc_url", "deployment", "chain_id", "accounts", "governance")}
    public.update(reused=False, nodes=public_nodes(state))
    lines = [f"  node {n['number']} {n['org'] or ''} {n['rpc_url']} {n['validator'] or ''}".rstrip() for n in state["nodes"]]
    emit(args, public, f"network ({state['engine']}) up in {time.monotonic() - started:.0f}s, chain {state['chain_id']}; "
         f"address book {state['deployment']}\n" + "\n".join(lines) + "\n"
         f"export SHIPLEDGER_RPC_URL={state['rpc_url']} SHIPLEDGER_DEPLOYMENT={state['deployment']}")
    return EXIT_OK


def cmd_network_status(args) -> int:
    from shipledger.network.consortium import network_status

    status = network_status(Path(args.dir))
    lines = []
    for n in status["nodes"]:
        if n.get("error"):
            lines.append(f"  node {n['number']} {n['org'] or '-'}: running but not answering: {n['error']}")
        elif n["running"]:
            lines.append(f"  node {n['number']} {n['org'] or '-'}: head {n['head']} ({n['head_age']}s old) {n['head_hash'][:10]}, "
                         f"{n['peers']} peers, {'syncing' if n['syncing'] else 'in sync'}"
                         + (f", {len(n['signers'])} signers" if n["signers"] is not None else ""))
        else:
            lines.append(f"  node {n['number']} {n['org'] or '-'}: stopped")
    emit(args, status, f"network ({status['engine']}, chain {status['chain_id']}):\n" + "\n".join(lines))
    return EXIT_OK


def cmd_network_stop_node(args) -> int:
    from shipledger.network.consortium import stop_node

    node = stop_node(args.number, Path(args.dir))
    emit(args, {"stopped": args.number, "org": node["org"]}, f"node {args.number} ({node['org']}) stopped; its data is kept")
    return EXIT_OK


def cmd_network_start_node(args) -> int:
    from shipledger.network.consortium import start_node

    node = start_node(args.number, Path(args.dir))
    emit(args, {"started": args.number, "org": node["org"], "rpc_url": node["rpc_url"]},
         f"node {args.number} ({node['org']}) started on {node['rpc_url']}; it catches up from its peers")
    return EXIT_OK


def cmd_network_down(args) -> int:
    from shipledger.network.consortium import network_down

    stopped = network_down(Path(args.dir))
    emit(args, {"stopped": stopped}, "network stopped and its folder removed" if stopped else "no network was there")
    return EXIT_OK


def add_commands(parsers) -> None:
    devnet = parsers.group("devnet")
    p = parsers.command("up", cmd_devnet_up, "start anvil, deploy the suite and a demo consortium (reuses the one running on the same port)", devnet)
    p.add_argument("--port", type=tcp_port, default=8545, help="the loopback port anvil listens on (default 8545)")
    p.add_argument("--governance-delay", type=duration, default=60, metavar="DUR",
                   help="how long a weakening governance change waits (default 60s; production suites use 48h)")
    parsers.command("down", cmd_devnet_down, "stop the devnet", devnet)

    from shipledger.network.consortium import DEFAULT_DIR

    network = parsers.group("network")
    folder = {"default": str(DEFAULT_DIR), "metavar": "D", "help": f"the network's folder of plain files (default {DEFAULT_DIR})"}
    p = parsers.command("up", cmd_network_up, "start one validator per organisation, deploy suite v2 with that consortium, write the address book", network)
    p.add_argument("--engine", type=engine_name, default="clique", help="clique (geth v1.13.15, one process per validator) or anvil (one process)")
    p.add_argument("--validators", type=count, default=4, metavar="N", help="organisations, one validator each (default 4)")
    p.add_argument("--block-period", type=block_period, default=1, metavar="DUR", help="seconds between blocks (default 1s)")
    p.add_argument("--dir", **folder)
    p.add_argument("--governance-delay", type=duration, default=60, metavar="DUR",
                   help="how long a weakening governance change waits (default 60s; production suites use 48h)")
    p = parsers.command("status", cmd_network_status, "head, peers, signers and sync of every node", network)
    p.add_argument("--dir", **folder)
    for name, handler, text in (("stop-node", cmd_network_stop_node, "stop node N (numbered from 1 as in the address book's nodes); its data is kept"),
                                ("start-node", cmd_network_start_node, "start node N again; it catches up from its peers")):
        p = parsers.command(name, handler, text, network)
        p.add_argument("number", type=count, metavar="N")
        p.add_argument("--dir", **folder)
    p = parsers.command("down", cmd_network_down, "stop every node and remove the network's folder and address book", network)
    p.add_argument("--dir", **folder)
    from shipledger.cli.besu import add_commands as add_besu_config  # `network besu-config`, its own module
    add_besu_config(parsers)

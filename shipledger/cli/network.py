"""`shipledger devnet up|down`: the embedded anvil development chain (shipledger/network/devnet.py)."""

from __future__ import annotations

from shipledger.cli import EXIT_OK, emit, say


def cmd_devnet_up(args) -> int:
    from shipledger.network.devnet import devnet_up

    say(args, "starting the devnet (anvil), deploying the suite and a demo consortium...")
    state = devnet_up(port=args.port)
    public = {k: state[k] for k in ("rpc_url", "deployment", "chain_id", "accounts")}
    emit(args, public, f"devnet on {state['rpc_url']} (chain {state['chain_id']}); address book {state['deployment']}\n"
         f"export SHIPLEDGER_RPC_URL={state['rpc_url']} SHIPLEDGER_DEPLOYMENT={state['deployment']}")
    return EXIT_OK


def cmd_devnet_down(args) -> int:
    from shipledger.network.devnet import devnet_down

    stopped = devnet_down()
    emit(args, {"stopped": stopped}, "devnet stopped" if stopped else "no devnet was running")
    return EXIT_OK


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    import argparse

    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535)")
    return int(text)


def add_commands(parsers) -> None:
    devnet = parsers.group("devnet")
    p = parsers.command("up", cmd_devnet_up, "start anvil, deploy the suite and a demo consortium (reuses a running one)", devnet)
    p.add_argument("--port", type=port, default=8545, help="the loopback port anvil listens on (default 8545)")
    parsers.command("down", cmd_devnet_down, "stop the devnet", devnet)

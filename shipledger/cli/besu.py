"""`shipledger network besu-config`: write a Besu QBFT network's files (shipledger/network/besu.py).

Its own module so the `network` group's other commands (shipledger/cli/network.py) and this one
grow apart; network.py calls add_commands here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shipledger.cli import EXIT_OK, emit
from shipledger.cli.shared import address, duration


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def addresses(text: str) -> list[str]:
    """--accounts: comma-separated addresses, each checked as `address` checks one."""
    found = [address(part.strip()) for part in text.split(",") if part.strip()]
    if not found:
        raise argparse.ArgumentTypeError("give at least one address")
    return found


def cmd_besu_config(args) -> int:
    from shipledger.network.besu import besu_config, parse_hosts

    hosts = parse_hosts(args.hosts, args.validators)
    if args.accounts:
        funded, which = args.accounts, "the accounts given"
    else:
        from eth_account import Account

        from shipledger.network.devnet import DEV_ROLES, dev_private_keys

        funded = [Account.from_key(k).address for k in dev_private_keys(len(DEV_ROLES))]
        which = "the dev accounts (the public test mnemonic: for trying it out only; use --accounts for real ones)"
    summary = besu_config(Path(args.out), args.validators, args.chain_id, args.block_period, funded, hosts, args.force)
    lines = [f"wrote a {args.validators}-validator Besu QBFT network (chain {args.chain_id}, {args.block_period} s blocks) to {args.out}:",
             f"  {summary['genesis']}   (funds and allowlists {len(summary['accounts'])} accounts: {which})"]
    for node in summary["nodes"]:
        lines.append(f"  {node['dir']}/   validator {node['validator']}, RPC {node['rpc_url']}, p2p port {node['p2p_port']}")
    lines += ["The key files (orgK/key, mode 0600) are the validators' private keys: secrets. Give each organisation",
              "only its own folder and genesis.json; never commit or share a key.",
              "Start each node from its folder: cd ORG && besu --config-file=config.toml (README: \"Running on Besu\")."]
    emit(args, summary, "\n".join(lines))
    return EXIT_OK


def add_commands(parsers) -> None:
    network = parsers.group("network")
    p = parsers.command("besu-config", cmd_besu_config, "write genesis, node configs, keys and allowlists for a Besu QBFT "
                        "network, one validator per organisation (Besu is not started)", network)
    p.add_argument("--validators", type=positive_int, default=4, metavar="N", help="organisations, one validator each (default 4)")
    p.add_argument("--out", required=True, metavar="DIR", help="the directory to write (new or empty; see --force)")
    p.add_argument("--chain-id", type=positive_int, default=1337, metavar="ID", help="the chain id (default 1337)")
    p.add_argument("--block-period", type=duration, default=1, metavar="DUR", help="seconds between blocks, e.g. 1s or 2 (default 1s)")
    p.add_argument("--hosts", metavar="IP[,IP...]", help="each organisation's node IP address, in order (default 127.0.0.1 for all)")
    p.add_argument("--accounts", type=addresses, metavar="ADDR[,ADDR...]",
                   help="the accounts to fund and allowlist (default: the devnet's dev accounts)")
    p.add_argument("--force", action="store_true", help="replace a DIR that is not empty")

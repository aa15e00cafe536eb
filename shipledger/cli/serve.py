"""`shipledger serve`: the HTTP API, the web app and /metrics (shipledger/server/), run by uvicorn."""

from __future__ import annotations

import json
import logging
import os
import sys

from shipledger.cli.shared import book_path, rpc_url
from shipledger.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:8600"


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r} must be HOST:PORT with a port from 1 to 65535, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message."""

    def format(self, record):
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                           "logger": record.name, "message": record.getMessage()})


def _log_config(json_logs: bool) -> dict:
    formatter = {"()": f"{__name__}.JsonFormatter"} if json_logs else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"main": formatter}, "handlers": {"main": handler},
            "loggers": {name: {"handlers": ["main"], "level": "INFO", "propagate": False}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "shipledger.serve")}}


def cmd_serve(args) -> int:
    from shipledger._internal.book import load_address_book
    from shipledger._internal.freshness import max_block_age as book_max_block_age
    from shipledger.compliance.index import DEFAULT_DB

    host, port = listen_address(args.listen)
    if args.max_lag < 0 or (args.max_block_age or 0) < 0 or args.relay_rate <= 0:
        raise UsageError("--max-lag and --max-block-age must be 0 or more, --relay-rate more than 0")
    key = None
    if args.relayer_key_env:
        key = os.environ.get(args.relayer_key_env, "").strip()
        if not key:
            raise UsageError(f"--relayer-key-env {args.relayer_key_env}: that environment variable holds no key")
        from eth_account import Account

        try:
            Account.from_key(key)
        except (ValueError, TypeError):
            raise UsageError(f"${args.relayer_key_env} does not hold a valid private key") from None
    book = load_address_book(book_path(args))
    from shipledger.server.state import Config, State

    config = Config(rpc_url=rpc_url(args, book), book=book, db=args.db or DEFAULT_DB, max_lag=args.max_lag,
                    max_block_age=book_max_block_age(book) or 0 if args.max_block_age is None else args.max_block_age,
                    relayer_key=key, relay_rate=args.relay_rate)
    State(config).close()  # connect and bind the index now, so a wrong book or node is exit 1 before listening
    import uvicorn

    from shipledger.server.api import create_app

    print(f"shipledger: serving http://{host}:{port}/ (API at /v1, OpenAPI at /v1/openapi.json)"
          + ("; relay on" if key else "; relay off"), file=sys.stderr)
    uvicorn.run(create_app(lambda: State(config)), host=host, port=port, log_config=_log_config(args.json_logs),
                access_log=args.access_log, server_header=False, timeout_graceful_shutdown=5)
    return 0


def add_commands(parsers) -> None:
    p = parsers.command("serve", cmd_serve)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT", help=f"address to listen on (default {DEFAULT_LISTEN})")
    p.add_argument("--db", default=None, metavar="PATH", help="index database the server keeps synced (default .shipledger/index.sqlite)")
    p.add_argument("--relayer-key-env", default=None, metavar="VAR",
                   help="environment variable holding the relayer account's key; without it POST /v1/relay is off")
    p.add_argument("--json-logs", action="store_true", help="log one JSON object per line on stderr")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--max-lag", type=int, default=5, metavar="N", help="/readyz fails while the index trails the chain by more than N blocks (default 5)")
    p.add_argument("--max-block-age", type=float, default=None, metavar="SECONDS",
                   help="a newest block older than this is a stalled chain: /readyz fails and the gate answers 503 "
                        "(default: the address book's max_block_age; none there, as for a devnet that mines only on "
                        "demand: off; 0: off)")
    p.add_argument("--relay-rate", type=float, default=1.0, metavar="PER_SECOND",
                   help="relay requests per second per client, bursts of 10 (default 1)")

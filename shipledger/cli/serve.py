"""`shipledger serve`: the HTTP API, the web app and /metrics (shipledger/server/), run by uvicorn."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

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
    # The admission webhook's decisions are JSON lines of their own, whatever --json-logs says.
    decisions = {"class": "logging.StreamHandler", "formatter": "bare", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["main"], "level": "INFO", "propagate": False}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "shipledger.serve")}
    loggers["shipledger.admission"] = {"handlers": ["decisions"], "level": "INFO", "propagate": False}
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"main": formatter, "bare": {"format": "%(message)s"}},
            "handlers": {"main": handler, "decisions": decisions}, "loggers": loggers}


def _tls_options(args) -> dict:
    """uvicorn's TLS options from --tls-cert and --tls-key, both readable PEM files (checked with the
    ssl module now, so a bad pair is one line before listening); {} for plain HTTP."""
    if not args.tls_cert and not args.tls_key:
        if args.admission:
            raise UsageError("--admission needs --tls-cert FILE and --tls-key FILE: the apiserver calls webhooks over HTTPS only")
        return {}
    if not (args.tls_cert and args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.tls_cert, args.tls_key)
    except ssl.SSLError as exc:  # before OSError, its base class
        raise UsageError(f"--tls-cert {args.tls_cert} and --tls-key {args.tls_key} are not a PEM certificate and its key"
                         f" ({exc.reason or exc})") from None
    except OSError as exc:
        raise UsageError(f"cannot read the TLS certificate or key: {exc.strerror or exc}") from None
    return {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}


def wallet_rpc_url(given: str | None, node_url: str) -> str | None:
    """The URL the web app offers a wallet that does not know the suite's chain (wallet_addEthereumChain):
    --wallet-rpc-url, else the server's own node URL unless it may hold a secret (user info, a path
    or a query: an API key), which the page must not show."""
    from urllib.parse import urlsplit

    if given is not None:
        parts = urlsplit(given)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--wallet-rpc-url {given!r} must be an http(s) URL")
        return given
    parts = urlsplit(node_url)
    if parts.scheme in ("http", "https") and not parts.username and not parts.query and parts.path in ("", "/"):
        return node_url
    return None


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
    observations_token = None
    if args.observations_token_env:
        observations_token = os.environ.get(args.observations_token_env, "").strip()
        if len(observations_token) < 16:
            raise UsageError(f"--observations-token-env {args.observations_token_env}: that variable must hold a token of 16"
                             " characters or more")
    tls = _tls_options(args)
    admission = None
    if args.admission:
        from shipledger.server.admission import AdmissionMap

        admission = AdmissionMap.load(args.admission_map)
    elif args.admission_map:
        raise UsageError("--admission-map goes with --admission")
    book = load_address_book(book_path(args))
    from shipledger.server.state import Config, State

    config = Config(rpc_url=rpc_url(args, book), book=book, db=args.db or DEFAULT_DB, max_lag=args.max_lag,
                    max_block_age=(book_max_block_age(book) or 0) if args.max_block_age is None else args.max_block_age,
                    relayer_key=key, relay_rate=args.relay_rate, admission=admission, observations_token=observations_token,
                    wallet_rpc_url=wallet_rpc_url(args.wallet_rpc_url, rpc_url(args, book)))
    State(config).close()  # connect and bind the index now, so a wrong book or node is exit 1 before listening
    integrations = hooks(args, Path(config.db))
    import uvicorn

    from shipledger.server.api import create_app

    print(f"shipledger: serving {'https' if tls else 'http'}://{host}:{port}/ (API at /v1, OpenAPI at /v1/openapi.json)"
          + ("; relay on" if key else "; relay off") + ("; admission webhook at /admission/v1/validate" if admission else ""),
          file=sys.stderr)
    uvicorn.run(create_app(lambda: State(config), integrations), host=host, port=port, log_config=_log_config(args.json_logs),
                access_log=args.access_log, server_header=False, timeout_graceful_shutdown=5, **tls)
    return 0


def read_secret(env_var: str | None, file: str | None, what: str) -> str | None:
    """A secret from an environment variable or a file (never from argv); None when neither is given."""
    if env_var and file:
        raise UsageError(f"give the {what} by environment variable or by file, not both")
    if env_var:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise UsageError(f"the environment variable {env_var} holds no {what}")
        return value
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the {what} file {file}: {exc.strerror}") from None
        if not value:
            raise UsageError(f"the {what} file {file} is empty")
        return value
    return None


def hooks(args, db: Path) -> list:
    """The CD/CI integrations' routes: Flagger always, the GitHub app with --github-app-id."""
    from shipledger.server import flagger

    deployer_key = read_secret(args.deployer_key_env, args.deployer_key_file, "deployer key")
    if deployer_key is not None:
        from eth_account import Account

        try:
            Account.from_key(deployer_key)
        except (ValueError, TypeError):
            raise UsageError("the deployer key is not a valid private key") from None
    store = db.with_name(db.stem + "-hooks.sqlite")
    added = [lambda app, st: flagger.add_routes(app, st, deployer_key, store)]
    if args.github_app_id is not None:
        from shipledger.server import github

        app_config = github.config_from(args, read_secret(args.github_webhook_secret_env, args.github_webhook_secret_file,
                                                          "GitHub webhook secret"), store)
        added.append(lambda app, st: github.add_routes(app, st, app_config))
    return added


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
    p.add_argument("--wallet-rpc-url", default=None, metavar="URL",
                   help="the node URL the web app asks a wallet to add when it does not know the chain (default: the "
                        "server's node URL, unless it has user info, a path or a query)")
    p.add_argument("--relay-rate", type=float, default=1.0, metavar="PER_SECOND",
                   help="relay requests per second per client, bursts of 10 (default 1)")
    p.add_argument("--deployer-key-env", default=None, metavar="VAR",
                   help="environment variable holding a DEPLOYER's key, for Flagger's pre-/post-rollout hooks (never an approver's)")
    p.add_argument("--deployer-key-file", default=None, metavar="FILE", help="the same key read from a file")
    p.add_argument("--github-app-id", default=None, metavar="ID",
                   help="run the GitHub deployment protection rule app (POST /github/webhook) as this App")
    p.add_argument("--github-app-key", default=None, metavar="FILE", help="the App's private key (PEM) file")
    p.add_argument("--github-webhook-secret-env", default=None, metavar="VAR", help="environment variable holding the webhook secret")
    p.add_argument("--github-webhook-secret-file", default=None, metavar="FILE", help="the webhook secret read from a file")
    p.add_argument("--github-map", default=None, metavar="FILE",
                   help="YAML/JSON mapping GitHub environments to shipledger environments and repositories to services")
    p.add_argument("--github-api-url", default="https://api.github.com", metavar="URL",
                   help="GitHub's REST API (default https://api.github.com; GHES: https://HOST/api/v3)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain); with --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    p.add_argument("--admission", action="store_true",
                   help="answer Kubernetes admission reviews at POST /admission/v1/validate (needs --tls-cert and --tls-key)")
    p.add_argument("--admission-map", metavar="FILE",
                   help="YAML {images: {REPOSITORY: SERVICE}, namespaces: {NAMESPACE: ENVIRONMENT}} for pods without the "
                        "shipledger.io/service and shipledger.io/environment annotations")
    p.add_argument("--observations-token-env", metavar="VAR",
                   help="environment variable holding the bearer token POST /v1/observations needs; without it that endpoint is off")

"""Several JSON-RPC endpoints: one node per organisation on a consortium chain.

Where the list comes from: `--rpc URL[,URL...]`, else SHIPLEDGER_RPC_URL (commas too), else the address
book's `nodes[].rpc_url`, else its `rpc_url`. Reads go to a node in sync: every node's head is asked at
once, and one more than MAX_BEHIND blocks behind the highest is skipped (it would answer "not there
yet" for what the others have). Writes go to the signer's own organisation's node first (the book's
`nodes[].org`), then to any.

Standard library only: the gate uses it on its hot path.
"""

from __future__ import annotations

from shipledger.errors import ConnectionFailed

MAX_BEHIND = 2  # blocks a node may trail the highest head and still serve reads
HEAD_TIMEOUT = 5  # seconds each node has to say its head, unless the caller gives a timeout


def split_urls(text: str) -> list[str]:
    return [u.strip() for u in text.split(",") if u.strip()]


def endpoint_urls(given: str | None, book: dict | None, default: str) -> list[str]:
    """The endpoints to use, in order, each once: `given` (comma-separated) if set, else the book's."""
    book = book or {}
    if given:
        urls = split_urls(given)
    else:
        nodes = book.get("nodes") if isinstance(book.get("nodes"), list) else []
        urls = [n["rpc_url"] for n in nodes if isinstance(n, dict) and isinstance(n.get("rpc_url"), str)]
        if not urls and isinstance(book.get("rpc_url"), str):
            urls = [book["rpc_url"]]
    return list(dict.fromkeys(urls)) or [default]


def heads(urls: list[str], timeout: float) -> dict[str, int | None]:
    """Each node's newest block number, asked of all at once; None for one that did not answer."""
    import threading

    from shipledger._internal.rpc import quick_batch

    found: dict[str, int | None] = dict.fromkeys(urls)

    def ask(url: str) -> None:
        try:
            [number] = quick_batch(url, [("eth_blockNumber", [])], timeout=timeout)
            found[url] = int(number, 16)
        except (ConnectionFailed, ValueError, TypeError):
            pass

    threads = [threading.Thread(target=ask, args=(u,), daemon=True) for u in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1)
    return found


def in_sync(urls: list[str], timeout: float) -> list[str]:
    """The nodes (in the given order) whose head is within MAX_BEHIND blocks of the highest one;
    ConnectionFailed when none answers."""
    if len(urls) == 1:
        return urls
    answered = {u: h for u, h in heads(urls, timeout).items() if h is not None}
    if not answered:
        raise ConnectionFailed(f"cannot reach any JSON-RPC node ({', '.join(urls)})")
    top = max(answered.values())
    return [u for u in urls if u in answered and answered[u] >= top - MAX_BEHIND]


def write_order(urls: list[str], book: dict, organisation: str | None) -> list[str]:
    """urls with the nodes the book says `organisation` runs first."""
    nodes = book.get("nodes") if isinstance(book.get("nodes"), list) else []
    own = {n.get("rpc_url") for n in nodes if isinstance(n, dict) and organisation and n.get("org") == organisation}
    return [u for u in urls if u in own] + [u for u in urls if u not in own]

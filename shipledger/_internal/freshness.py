"""A stalled chain fails closed: the gate's answer counts only while the chain makes blocks.

With too many validators down, QBFT (and Clique) stop sealing, yet every node still answers reads from
its stale head: a gate answered there would be yesterday's answer given as today's. The address book of
a network with a block time says how old the newest block may be (`max_block_age`, seconds); a devnet
that mines only on demand has no such field, and the check is off.

Standard library only: the gate imports this on its hot path.
"""

from __future__ import annotations

import time

from shipledger.errors import AddressBookError, ChainStalled


def max_block_age(book: dict) -> float | None:
    """The book's `max_block_age` in seconds; None when the book has none (the check is off)."""
    value = book.get("max_block_age")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise AddressBookError(f"the address book is malformed: max_block_age {value!r} is not a number of seconds above 0")
    return float(value)


def stall_sentence(age: float, limit: float) -> str:
    return f"the chain has made no block for {age:.0f} s (max_block_age {limit:g} s)"


def check_block_age(timestamp: int | str, limit: float | None, now: float | None = None) -> None:
    """ChainStalled when the newest block (its timestamp: an int or JSON-RPC hex) is older than
    `limit` seconds; nothing when limit is None."""
    if limit is None:
        return
    if isinstance(timestamp, str):
        timestamp = int(timestamp, 16)
    age = (time.time() if now is None else now) - timestamp
    if age > limit:
        raise ChainStalled(stall_sentence(age, limit))

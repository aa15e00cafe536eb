"""The journal of sent transactions: per key and chain, the signed transactions not yet seen mined.

A retried register or approve checks the ledger first, reading "pending" so that its own earlier
attempt still in the node's pool counts. On Besu "pending" means latest, and no node sees another
node's pool, so that check misses an attempt that is still on its way. The journal does not: the
same call (same contract, same data) sent again by this user with this key finds its earlier signed
transaction here, and the retry hands the node that same transaction (one hash: it is mined once at
most) instead of signing a new one. An entry goes when its receipt is seen, or when another
transaction has taken its nonce (it can then never be mined).

One JSON object per line in state_home()/journal/<chain>-<address>.jsonl, read and rewritten while
the key's lock (key_lock) is held. Without a writable state directory there is no journal, and the
"pending" check alone guards retries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_utils import keccak


def call_key(to: str | None, data) -> str:
    """What identifies a call: its contract and its data."""
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    return "0x" + keccak((to or "").lower().encode() + b"\0" + raw).hex()


class Journal:
    def __init__(self, directory: Path, chain_id: int, address: str):
        self.path = directory / "journal" / f"{chain_id}-{address.lower()}.jsonl"

    def _entries(self) -> list[dict]:
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: it holds nothing to resend
            if isinstance(entry, dict) and {"key", "hash", "raw", "nonce"} <= set(entry):
                entries.append(entry)
        return entries

    def _write(self, entries: list[dict]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)  # never a half-written journal
        except OSError:
            pass  # no journal: the "pending" check alone guards retries

    def find(self, key: str) -> dict | None:
        """The newest unmined transaction of this call, if one was sent."""
        found = [e for e in self._entries() if e["key"] == key]
        return found[-1] if found else None

    def add(self, key: str, tx_hash: str, raw: bytes, nonce: int) -> None:
        self._write([*self._entries(), {"key": key, "hash": tx_hash, "raw": "0x" + raw.hex(), "nonce": nonce}])

    def forget(self, tx_hash: str) -> None:
        entries = self._entries()
        kept = [e for e in entries if e["hash"] != tx_hash]
        if len(kept) != len(entries):
            self._write(kept)

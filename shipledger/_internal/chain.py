"""web3 plumbing: a connection, local signing, nonces, gas, receipts and revert decoding."""

from __future__ import annotations

import os
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock, the send retry alone keeps nonces right
    fcntl = None

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound

from shipledger._internal.endpoints import split_urls
from shipledger._internal.journal import Journal, call_key
from shipledger._internal.revert import decode_revert, reverted_because
from shipledger.errors import (
    AddressBookError,
    ConnectionFailed,
    ShipledgerError,
    TransactionTimeout,
    UnknownRevert,
    revert_error,
)
from shipledger.models import TxReceipt

SEND_ATTEMPTS = 20  # fresh nonces tried while other senders (other machines) keep taking ours
RECEIPT_POLL = 0.1  # seconds between receipt polls
SUPERSEDED_AFTER = 1.0  # seconds without a receipt before checking whether another transaction took our nonce
GAS_MARGIN = 1.25  # estimates are exact for the state they ran on; leave room for state changes
RPC_TIMEOUT = 15  # seconds per JSON-RPC request
HEAD_CATCH_UP = 10.0  # seconds a receipt waits for the head to reach its block (two blocks of a 5 s chain)


def connect(rpc_url: str | list[str], timeout: float | None = None) -> Web3:
    """A web3 connection. With a timeout, no request waits longer and none is retried (web3 retries
    reads up to 5 times, which would make a hung node cost five timeouts). Several URLs (a list, or
    commas): a FailoverProvider over them, each request waiting at most the timeout (default
    RPC_TIMEOUT), not retried on the same node but on the next.

    PoA headers (QBFT, IBFT, Clique) carry more than the 32 bytes of extraData web3 checks for, and it
    raises ExtraDataLengthError on every block it reads: its PoA middleware moves the extra bytes
    aside (to `proofOfAuthorityData`) before the check. On other chains it changes nothing."""
    urls = (split_urls(rpc_url) if isinstance(rpc_url, str) else list(rpc_url)) or [str(rpc_url)]
    if len(urls) > 1:
        from shipledger._internal.failover import FailoverProvider

        provider = FailoverProvider(urls, timeout or RPC_TIMEOUT)
    elif timeout is None:
        provider = Web3.HTTPProvider(urls[0], request_kwargs={"timeout": RPC_TIMEOUT})
    else:
        provider = Web3.HTTPProvider(urls[0], request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def raise_decoded(exc: Exception):
    """Turn a web3 revert or connection failure into the SDK's own error."""
    if isinstance(exc, (ContractCustomError, ContractLogicError)):
        data = exc.data if isinstance(exc.data, str) else None
        decoded = decode_revert(data)
        if decoded:
            raise revert_error(*decoded) from None
        raise UnknownRevert(f"the transaction reverted: {exc}") from None
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        raise ConnectionFailed(f"cannot reach the JSON-RPC node: {exc.__class__.__name__}") from None
    raise exc


def _is_known(exc: Exception) -> bool:
    """The node already holds this very transaction (geth/GoQuorum 'already known', Besu 'Known
    transaction', anvil and OpenEthereum 'already imported'): a send retried after a timeout, or handed
    to another node. Its hash is ours."""
    text = str(exc).lower()
    return any(s in text for s in ("already known", "known transaction", "already_known", "already imported"))


def _is_nonce_ahead(exc: Exception) -> bool:
    """The node refused the nonce as too far ahead (geth 'nonce too high', Besu 'Nonce too distant' /
    NONCE_TOO_HIGH): a transaction of ours before it was dropped, so our own counter runs ahead."""
    text = str(exc).lower()
    return any(s in text for s in ("nonce too high", "nonce too distant", "nonce_too_high", "nonce_too_distant"))


def _is_taken_nonce(exc: Exception) -> bool:
    """The node refused the transaction because another one holds its nonce: already mined ('nonce too
    low', Besu 'NONCE_TOO_LOW') or waiting in the pool ('replacement transaction underpriced', Besu
    'REPLACEMENT_UNDERPRICED')."""
    text = str(exc).lower()
    return any(s in text for s in ("nonce too low", "nonce_too_low", "replacement transaction underpriced",
                                   "replacement_underpriced"))


FEES_FOR_BLOCKS = 20  # blocks after which fees read from the chain are read again
# The node refused a transaction for its price, not its content: geth/GoQuorum "transaction underpriced",
# "max fee per gas less than block base fee", "fee cap less than block base fee"; GoQuorum QBFT "Gas price
# not 0"; Besu "Gas price below configured minimum gas price", GAS_PRICE_TOO_LOW,
# GAS_PRICE_BELOW_CURRENT_BASE_FEE. ("replacement transaction underpriced" is a taken nonce, not this.)
_PRICE_REFUSALS = ("transaction underpriced", "less than block base fee", "fee cap less than", "gas price not 0",
                   "below configured minimum gas price", "gas_price_too_low", "gas_price_below_current_base_fee",
                   "gas price below minimum", "below base fee")


def is_price_refusal(exc: Exception) -> bool:
    text = str(exc).lower()
    return "replacement transaction underpriced" not in text and any(s in text for s in _PRICE_REFUSALS)


def read_fees(w3: Web3, block, mode: str | None = None) -> dict:
    """The fee fields for a transaction now, in the chain's mode or the one the address book names
    (`"fees": "legacy"|"eip1559"`). Legacy: the node's gasPrice, which may be 0 (QBFT requires 0;
    Besu answers its min-gas-price). EIP-1559: twice the base fee plus the node's suggested tip, so a
    few fuller blocks do not price the transaction out."""
    base_fee = block.get("baseFeePerGas")
    if mode is None:
        mode = "legacy" if base_fee is None else "eip1559"  # no base fee: a pre-London chain, e.g. QBFT
    if mode == "legacy":
        return {"gasPrice": w3.eth.gas_price}
    if base_fee is None:
        raise AddressBookError("the address book says fees are eip1559, but the chain's blocks carry no base fee: "
                               'use "fees": "legacy" or leave it out')
    tip = w3.eth.max_priority_fee  # the node's own suggestion: Besu's with zeroBaseFee is its minimum
    return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}


def state_home() -> Path:
    """The per-user state directory: $XDG_STATE_HOME/shipledger, by default ~/.local/state/shipledger."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "shipledger"


@contextmanager
def key_lock(chain_id: int, address: str):
    """Hold the per-user lock of one key on one chain (an flock on a file in state_home()/nonces).

    Every process of this user that sends with the key takes it from reading the nonce until the node
    has accepted the transaction, so pipelines sharing a key on one machine never race for a nonce.
    Without a writable state directory the sender goes on unlocked: the retry in send_data covers it.
    """
    fd = None
    if fcntl is not None:
        try:
            directory = state_home() / "nonces"
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / f"{chain_id}-{address.lower()}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def call(fn, block: str | int = "latest", **tx):
    """A read-only contract call with decoded errors."""
    try:
        return fn.call(tx or None, block_identifier=block)
    except Exception as exc:  # noqa: BLE001 - re-raised as a typed error
        try:
            raise_decoded(exc)
        except UnknownRevert:
            # Our reads never revert without one of our errors; an undecodable one means the
            # address is not the contract the book says it is (an operational error, not a denial).
            raise AddressBookError(
                f"reading {fn.fn_name} from {fn.address} reverted without a known error: "
                "does the address book point at the right contract?"
            ) from None


class TxSender:
    """Signs locally and sends; safe to share between threads and processes using one key.

    Each send takes the key's lock (key_lock: threads of this process and other processes of this user
    wait their turn), reads the node's pending count and sends; the lock is released once the node has
    accepted the transaction, not when it is mined. A sender elsewhere (another machine) can still take
    the nonce first: the node then refuses ours outright and we retry with a fresh one, or, when both
    reached a pool before either was mined, the other is mined and ours is dropped; wait() sees the
    nonce used by a transaction that is not ours and sends ours again with a fresh one.
    """

    def __init__(self, w3: Web3, account: LocalAccount, chain_id: int, receipt_timeout: float = 120,
                 fee_mode: str | None = None):
        self.w3 = w3
        self.account = account
        self.chain_id = chain_id
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self.fee_mode = fee_mode
        self._journal = Journal(state_home(), chain_id, account.address)
        self._fees: dict | None = None
        self._fees_block = 0  # the block the fees were read at
        self._seen_block = 0  # the newest block a receipt has shown us
        self._sent: dict[str, tuple] = {}  # tx hash -> (to, data, gas, nonce, raw), to send again if superseded or dropped

    @property
    def address(self) -> str:
        return self.account.address

    def _fresh_nonce(self) -> int:
        """The next nonce; call with the key held. The node's pending count sees other processes'
        sends; our own counter covers a node whose pending count lags behind what it accepted."""
        pending = self.w3.eth.get_transaction_count(self.address, "pending")
        return max(pending, self._next_nonce or 0)

    def next_nonce(self) -> int:
        """The nonce the next transaction will use (another sender of this key may still take it)."""
        with self._lock:
            return self._fresh_nonce()

    def saw_block(self, number: int) -> None:
        """A block the caller has seen mined (a receipt's): fees read FEES_FOR_BLOCKS before it are stale."""
        self._seen_block = max(self._seen_block, number)

    def _fee_fields(self) -> dict:
        """The fee fields of the next transaction: read from the chain on first use, again once they
        are FEES_FOR_BLOCKS blocks old, and again after a refusal for price (_send drops them)."""
        if self._fees is None or self._seen_block - self._fees_block > FEES_FOR_BLOCKS:
            block = self.w3.eth.get_block("latest")
            self._fees, self._fees_block = read_fees(self.w3, block, self.fee_mode), block["number"]
            self._seen_block = max(self._seen_block, block["number"])
        return self._fees

    def estimate(self, fn) -> int:
        """The gas limit to send fn with: the node's estimate plus GAS_MARGIN, errors decoded."""
        try:
            return int(fn.estimate_gas({"from": self.address}) * GAS_MARGIN)
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)

    def send(self, fn, gas: int | None = None) -> str:
        """Estimate, sign and send; return the transaction hash without waiting."""
        if gas is None:
            gas = self.estimate(fn)
        try:
            tx = fn.build_transaction({"from": self.address, "gas": gas, "nonce": 0, **self._fee_fields()})
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        return self._send_again_if_superseded(tx.get("to"), tx["data"], tx["gas"])  # no "to": a contract creation

    def _send_again_if_superseded(self, to: str | None, data, gas: int) -> str:
        """send_data, remembering the transaction for wait() to send again if another takes its nonce,
        and in the journal, so that a retry of the same call (another process) sends it again rather than
        a new one. A journalled transaction of the same call still unmined is what is sent."""
        key = call_key(to, data)
        earlier = self._resend_journalled(key)
        if earlier is not None:
            tx_hash, nonce, raw = earlier
        else:
            tx_hash, nonce, raw = self._send(to, data, gas)
            with key_lock(self.chain_id, self.address):
                self._journal.add(key, tx_hash, raw, nonce)
        self._sent[tx_hash] = (to, data, gas, nonce, raw)
        return tx_hash

    def _resend_journalled(self, key: str) -> tuple[str, int, bytes] | None:
        """The journal's unmined transaction of this call, handed to the node again (it may not have
        it: another node's pool, a node restarted); None when there is none or it can never be mined."""
        with self._lock, key_lock(self.chain_id, self.address):
            entry = self._journal.find(key)
            if entry is None:
                return None
            raw = bytes.fromhex(entry["raw"].removeprefix("0x"))
            if self._receipt(entry["hash"]) is not None:
                # mined, and the caller's read of the ledger still asks for a new one (a vote withdrawn
                # since, say): this entry is history, not a send in flight
                self._journal.forget(entry["hash"])
                return None
            if not self._known(entry["hash"]):
                try:
                    self.w3.eth.send_raw_transaction(raw)
                except Exception as exc:  # noqa: BLE001
                    if _is_taken_nonce(exc) and not self._known(entry["hash"]):
                        self._journal.forget(entry["hash"])  # another transaction has its nonce: never mined
                        return None
                    if not _is_known(exc):
                        raise_decoded(exc)
            return entry["hash"], entry["nonce"], raw

    def send_data(self, to: str | None, data: bytes | str, gas: int, on_signed=None) -> str:
        """Sign and send a call whose data is already encoded (bulk paths skip web3's slow encoder).
        on_signed(tx_hash) runs before each send: a caller interrupted during the send can still look
        the transaction up, since the node may have it."""
        return self._send(to, data, gas, on_signed)[0]

    def _send(self, to: str | None, data: bytes | str, gas: int, on_signed=None) -> tuple[str, int, bytes]:
        """send_data's work: (the transaction hash, its nonce, the signed transaction)."""
        tx = {"data": data, "gas": gas, "value": 0, "chainId": self.chain_id}
        if to is not None:
            tx["to"] = to
        repriced = False
        for attempt in range(1, SEND_ATTEMPTS + 1):
            with self._lock, key_lock(self.chain_id, self.address):
                tx_hash = None
                try:
                    for field in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
                        tx.pop(field, None)
                    tx.update(self._fee_fields())
                    tx["nonce"] = self._fresh_nonce()
                    signed = self.account.sign_transaction(tx)
                    tx_hash = "0x" + bytes(signed.hash).hex()
                    if on_signed is not None:
                        on_signed(tx_hash)
                    try:
                        self.w3.eth.send_raw_transaction(signed.raw_transaction)
                    except Exception as exc:  # noqa: BLE001
                        if not _is_known(exc):  # known: the node has this very transaction, sent
                            raise
                    self._next_nonce = tx["nonce"] + 1
                    return tx_hash, tx["nonce"], bytes(signed.raw_transaction)
                except Exception as exc:  # noqa: BLE001
                    self._next_nonce = None  # re-sync with the node's count on the next attempt
                    # Only a refusal for the nonce or the price is retried: the node did not take the
                    # transaction, so sending it again cannot record it twice. Anything else (a
                    # timeout among them: the node may have it) is raised.
                    if _is_nonce_ahead(exc):
                        continue  # our counter ran ahead of a dropped transaction: the node's count now
                    if is_price_refusal(exc) and not repriced:
                        self._fees, repriced = None, True  # the chain's fees moved: read them again, once
                        continue
                    if not _is_taken_nonce(exc):
                        raise_decoded(exc)
                    if tx_hash and self._known(tx_hash):  # the nonce is taken by this very transaction: a retried send
                        self._next_nonce = tx["nonce"] + 1
                        return tx_hash, tx["nonce"], bytes(signed.raw_transaction)
            time.sleep(random.uniform(0, 0.05 * attempt))  # let the other sender through
        raise ShipledgerError(
            f"the node refused {SEND_ATTEMPTS} fresh nonces for {self.address}: another sender keeps "
            "using this key; try again"
        )

    def _known(self, tx_hash: str) -> bool:
        """Whether the node has this transaction, mined or pending."""
        try:
            self.w3.eth.get_transaction(tx_hash)
            return True
        except TransactionNotFound:
            return False
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)

    def _receipt(self, tx_hash: str):
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)

    def _superseded(self, tx_hash: str) -> bool:
        """Whether another transaction of this key was mined with our transaction's nonce, so ours can
        never be. The count is read before the receipt: a count past our nonce and then no receipt
        means ours was not the one mined (short of a reorganisation, which QBFT does not have)."""
        sent = self._sent.get(tx_hash)
        if sent is None:
            return False
        try:
            mined = self.w3.eth.get_transaction_count(self.address, "latest")
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        return mined > sent[3] and self._receipt(tx_hash) is None

    def _send_again_if_dropped(self, tx_hash: str) -> None:
        """If the node no longer knows our transaction (evicted from its pool, or held by a node that went
        away), hand it the same signed transaction again: the same hash, so it can be mined once at most."""
        sent = self._sent.get(tx_hash)
        if sent is None or self._known(tx_hash):
            return
        try:
            self.w3.eth.send_raw_transaction(sent[4])
        except Exception as exc:  # noqa: BLE001
            if not (_is_known(exc) or _is_taken_nonce(exc)):  # it has it, or it was mined meanwhile
                raise_decoded(exc)

    def wait(self, tx_hash: str, fn=None) -> TxReceipt:
        """Wait for the receipt; a reverted transaction raises its decoded error. If another sender's
        transaction took the nonce and ours was dropped, ours is sent again with a fresh nonce (it was
        never recorded, so it cannot be recorded twice) and the receipt is that of the new one. If the
        node lost ours, it gets the same signed transaction again. No receipt in receipt_timeout: the
        next send reads the node's count again rather than our counter (ours may never be mined)."""
        sent_at = next_look = time.monotonic()
        while (receipt := self._receipt(tx_hash)) is None:
            waited = time.monotonic() - sent_at
            if waited > SUPERSEDED_AFTER and self._superseded(tx_hash):
                to, data, gas, *_ = self._sent.pop(tx_hash)
                with key_lock(self.chain_id, self.address):
                    self._journal.forget(tx_hash)  # never mined: its nonce is another's
                tx_hash, sent_at = self._send_again_if_superseded(to, data, gas), time.monotonic()
                continue
            if waited > SUPERSEDED_AFTER and time.monotonic() >= next_look:
                self._send_again_if_dropped(tx_hash)
                next_look = time.monotonic() + SUPERSEDED_AFTER
            if waited > self.receipt_timeout:
                with self._lock:
                    self._next_nonce = None
                raise TransactionTimeout(
                    f"no receipt for {tx_hash} after {self.receipt_timeout:.0f}s; it may still be mined"
                )
            time.sleep(RECEIPT_POLL)
        self._sent.pop(tx_hash, None)
        with key_lock(self.chain_id, self.address):
            self._journal.forget(tx_hash)
        self.saw_block(receipt.blockNumber)
        self._head_reaches(receipt.blockNumber)
        if receipt.status != 1:
            where = f"transaction {tx_hash} reverted in block {receipt.blockNumber}"
            if fn is None and not receipt.get("revertReason"):
                raise ShipledgerError(where)
            raise reverted_because(receipt, where, lambda block: self._replay(fn, block),
                                   lambda: self.w3.eth.get_block_transaction_count(receipt.blockNumber))
        return TxReceipt(tx_hash=tx_hash, block_number=receipt.blockNumber, gas_used=receipt.gasUsed)

    def _head_reaches(self, number: int) -> None:
        """Wait (at most HEAD_CATCH_UP) until the node's newest block is `number`, so the caller's next
        call or estimate at "latest" sees this transaction. geth answers a receipt a moment before its
        block becomes the head: a probe on the consortium saw 5 of 40 receipts first, and the demo's next
        estimate ran on the block before (UnknownDeployment for the deployment just started)."""
        deadline = time.monotonic() + HEAD_CATCH_UP
        while self.w3.eth.block_number < number and time.monotonic() < deadline:
            time.sleep(RECEIPT_POLL)

    def _replay(self, fn, block: int) -> ShipledgerError | None:
        """The decoded error of fn called at `block`, None if the call succeeds."""
        try:
            fn.call({"from": self.address}, block_identifier=block)
        except Exception as exc:  # noqa: BLE001
            try:
                raise_decoded(exc)
            except ShipledgerError as error:
                return error
        return None

    def transact(self, fn, gas: int | None = None) -> tuple[TxReceipt, object]:
        """Send, wait, and return (our receipt, web3's receipt for event decoding)."""
        tx_hash = self.send(fn, gas)
        ours = self.wait(tx_hash, fn)  # its hash differs from tx_hash if ours was sent again
        return ours, self.w3.eth.get_transaction_receipt(ours.tx_hash)


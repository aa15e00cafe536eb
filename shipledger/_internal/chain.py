"""web3 plumbing: a connection, local signing, nonces, gas, receipts and revert decoding."""

from __future__ import annotations

import threading

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted

from shipledger._internal.revert import decode_revert
from shipledger.errors import (
    AddressBookError,
    ConnectionFailed,
    ShipledgerError,
    TransactionTimeout,
    UnknownRevert,
    revert_error,
)
from shipledger.models import TxReceipt

GAS_MARGIN = 1.25  # estimates are exact for the state they ran on; leave room for state changes
RPC_TIMEOUT = 15  # seconds per JSON-RPC request


def connect(rpc_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": RPC_TIMEOUT}))


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


def _is_stale_nonce(exc: Exception) -> bool:
    """The node's answer to a nonce already used (geth and anvil: 'nonce too low'; Besu: 'NONCE_TOO_LOW')."""
    text = str(exc).lower()
    return "nonce too low" in text or "nonce_too_low" in text


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
    """Signs locally and sends; safe to share between threads using one key.

    Nonces come from a local counter seeded from the node's pending count, so concurrent sends
    from one process never reuse a nonce; after a failed send the counter is re-read.
    """

    def __init__(self, w3: Web3, account: LocalAccount, chain_id: int, receipt_timeout: float = 120):
        self.w3 = w3
        self.account = account
        self.chain_id = chain_id
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._fees: dict | None = None

    @property
    def address(self) -> str:
        return self.account.address

    def _take_nonce(self) -> int:
        with self._lock:
            if self._next_nonce is None:
                self._next_nonce = self.w3.eth.get_transaction_count(self.address, "pending")
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    def _forget_nonce(self) -> None:
        with self._lock:
            self._next_nonce = None

    def _fee_fields(self) -> dict:
        if self._fees is None:
            base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
            if base_fee is None:  # pre-London chains, e.g. a Besu network with free gas
                self._fees = {"gasPrice": self.w3.eth.gas_price}
            else:
                tip = 1_000_000_000 if base_fee else 0
                self._fees = {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}
        return self._fees

    def send(self, fn, gas: int | None = None) -> str:
        """Estimate, sign and send; return the transaction hash without waiting."""
        try:
            if gas is None:
                gas = int(fn.estimate_gas({"from": self.address}) * GAS_MARGIN)
            tx = fn.build_transaction({"from": self.address, "gas": gas, "nonce": 0, **self._fee_fields()})
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        return self.send_data(tx.get("to"), tx["data"], tx["gas"])  # no "to": a contract creation

    def send_data(self, to: str | None, data: bytes | str, gas: int) -> str:
        """Sign and send a call whose data is already encoded (bulk paths skip web3's slow encoder)."""
        tx = {"data": data, "gas": gas, "value": 0, "chainId": self.chain_id, **self._fee_fields()}
        if to is not None:
            tx["to"] = to
        for attempt in (1, 2):
            tx["nonce"] = self._take_nonce()
            signed = self.account.sign_transaction(tx)
            try:
                return "0x" + self.w3.eth.send_raw_transaction(signed.raw_transaction).hex().removeprefix("0x")
            except Exception as exc:  # noqa: BLE001
                self._forget_nonce()
                # Another process sending with the same key has used our next nonce: the node refused
                # the transaction outright, so sending it again with a fresh nonce cannot double it.
                if attempt == 1 and _is_stale_nonce(exc):
                    continue
                raise_decoded(exc)

    def wait(self, tx_hash: str, fn=None) -> TxReceipt:
        """Wait for the receipt; a reverted transaction raises its decoded error."""
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout, poll_latency=0.1)
        except TimeExhausted:
            raise TransactionTimeout(
                f"no receipt for {tx_hash} after {self.receipt_timeout:.0f}s; it may still be mined"
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise_decoded(exc)
        if receipt.status != 1:
            # Replay to learn why: on the state before the block, then at the block itself, whose timestamp
            # is the one the transaction saw (a signature valid when sent may have expired when mined).
            for block in ((receipt.blockNumber - 1, receipt.blockNumber) if fn is not None else ()):
                try:
                    fn.call({"from": self.address}, block_identifier=block)
                except Exception as exc:  # noqa: BLE001
                    raise_decoded(exc)
            raise ShipledgerError(f"transaction {tx_hash} reverted in block {receipt.blockNumber}")
        return TxReceipt(tx_hash=tx_hash, block_number=receipt.blockNumber, gas_used=receipt.gasUsed)

    def transact(self, fn, gas: int | None = None) -> tuple[TxReceipt, object]:
        """Send, wait, and return (our receipt, web3's receipt for event decoding)."""
        tx_hash = self.send(fn, gas)
        ours = self.wait(tx_hash, fn)
        return ours, self.w3.eth.get_transaction_receipt(tx_hash)


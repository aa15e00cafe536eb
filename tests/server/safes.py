"""Safe 1.4.1's own contracts (the bytecode npm `@safe-global/safe-contracts` ships) on the devnet, for
the tests of a Safe (ERC-1271) approver: the singleton, proxy factory and CompatibilityFallbackHandler
deployed once per module, Safes of any owners and threshold made from them, and the owners'
combined signature as Safe's checkSignatures wants it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

SAFE = Path(__file__).resolve().parents[2] / "node_modules" / "@safe-global" / "safe-contracts" / "build" / "artifacts" / "contracts"
ZERO = "0x" + "00" * 20


def artifact(path: str) -> dict:
    return json.loads((SAFE / path).read_text())


class Sender:
    """Transactions from one devnet key, signed here."""

    def __init__(self, w3: Web3, key: str):
        self.w3, self.account = w3, Account.from_key(key)

    def send(self, tx: dict) -> dict:
        tx = {**tx, "from": self.account.address, "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
              "chainId": self.w3.eth.chain_id}
        tx.setdefault("gas", int(self.w3.eth.estimate_gas(tx) * 1.2))
        if "maxFeePerGas" not in tx:
            tx["gasPrice"] = self.w3.eth.gas_price
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction), timeout=60)
        assert receipt.status == 1, receipt
        return receipt

    def deploy(self, path: str):
        data = artifact(path)
        receipt = self.send({"data": data["bytecode"]})
        return self.w3.eth.contract(address=receipt.contractAddress, abi=data["abi"])


def safe_factory(w3: Web3, deployer_key: str):
    """make(owner_keys, threshold) -> (safe, as_handler): a new Safe 1.4.1 of those owners with Safe's
    fallback handler; as_handler is the same address with the handler's ABI (getMessageHashForSafe,
    isValidSignature), which the Safe answers through its fallback."""
    if not SAFE.is_dir():
        pytest.skip("node_modules has no @safe-global/safe-contracts (npm ci installs it)")
    deployer = Sender(w3, deployer_key)
    singleton = deployer.deploy("Safe.sol/Safe.json")
    factory = deployer.deploy("proxies/SafeProxyFactory.sol/SafeProxyFactory.json")
    handler = deployer.deploy("handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json")

    def make(owner_keys: list[str], threshold: int):
        owners = [Account.from_key(k).address for k in owner_keys]
        setup = singleton.encode_abi("setup", [owners, threshold, ZERO, b"", handler.address, ZERO, 0, ZERO])
        receipt = deployer.send(factory.functions.createProxyWithNonce(singleton.address, setup, secrets.randbits(64))
                                .build_transaction({"from": deployer.account.address, "gas": 800_000}))
        [created] = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)  # the Safe's own logs too
        safe = w3.eth.contract(address=created["args"]["proxy"], abi=singleton.abi)
        assert safe.functions.getOwners().call() == owners and safe.functions.getThreshold().call() == threshold
        return safe, w3.eth.contract(address=safe.address, abi=handler.abi)

    return make


def combined_signature(safe_hash: bytes, owner_keys: list[str]) -> str:
    """The owners' ECDSA signatures over the Safe message hash (v 27/28: signed over the hash itself),
    joined in ascending order of owner address, as Safe's checkSignatures reads them."""
    signers = sorted((Account.from_key(k) for k in owner_keys), key=lambda a: int(a.address, 16))
    return "0x" + "".join(bytes(a.unsafe_sign_hash(safe_hash).signature).hex() for a in signers)

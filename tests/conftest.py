"""Shared fixtures: one real anvil process per session, the suite deployed once, and an
evm_snapshot / evm_revert around every test so tests stay independent and fast."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from shipledger import Ledger
from shipledger._internal import artifacts
from shipledger.network.devnet import Anvil, dev_private_keys, seed_consortium
from shipledger._internal.revert import decode_revert
from support import dn  # noqa: F401 - the per-module CLI devnet fixture, for every test module

ROLE_NAMES = ("REGISTRAR_ROLE", "APPROVER_ROLE", "DEPLOYER_ROLE", "RESPONDER_ROLE")


@dataclass(frozen=True)
class Actors:
    """Dev accounts by part. approver1..3 sit in organisations 1..3; approver4 shares org 1."""

    admin: str
    registrar: str
    deployer: str
    responder: str
    approver1: str
    approver2: str
    approver3: str
    approver4: str
    outsider: str
    keys: dict  # address -> private key (hex)

    def key(self, address: str) -> str:
        return self.keys[address]


@dataclass
class Suite:
    w3: Web3
    registry: object  # web3 Contract
    ledger: object
    actors: Actors

    def transact(self, fn, sender: str):
        """Send fn from an (anvil-unlocked) dev account; return the receipt, asserting success."""
        # Legacy gas price: the test chain runs Berlin rules, which have no EIP-1559 fees.
        tx_hash = fn.transact({"from": sender, "gasPrice": self.w3.eth.gas_price})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt.status == 1, f"transaction reverted: {tx_hash.hex()}"
        return receipt

    def revert_of(self, fn, sender: str) -> tuple[str, dict]:
        """The decoded custom error fn reverts with when sent by sender (asserts it reverts)."""
        tx = fn.build_transaction({"from": sender, "gas": 10_000_000, "nonce": 0, "gasPrice": 0})
        tx.pop("nonce")
        try:
            self.w3.eth.call(tx)
        except (ContractCustomError, ContractLogicError) as exc:
            data = exc.data if isinstance(exc.data, str) else getattr(exc, "message", None)
            decoded = decode_revert(data)
            assert decoded is not None, f"revert data not a known custom error: {exc!r}"
            return decoded
        raise AssertionError("call did not revert")

    def events(self, receipt, contract, name: str) -> list[dict]:
        """Decoded arguments of every `name` event the receipt holds from contract."""
        return [dict(e["args"]) for e in getattr(contract.events, name)().process_receipt(receipt)]


def deployed_contracts(w3: Web3, book: dict) -> dict:
    """web3 contracts of the suite an address book names."""
    return {name: w3.eth.contract(address=entry["address"], abi=artifacts.load(name)["abi"])
            for name, entry in book["contracts"].items()}


@pytest.fixture(scope="session")
def anvil():
    # Berlin rules, as GoQuorum's QBFT and older Besu run them: an opcode from a later fork in the
    # committed bytecode fails here (tests/packaging/test_berlin.py checks the compiler settings).
    node = Anvil.start(extra_args=("--hardfork", "berlin"))
    yield node
    node.stop()


@pytest.fixture(scope="session")
def w3(anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil.url))


@pytest.fixture(scope="session")
def actors() -> Actors:
    keys = dev_private_keys(10)
    addresses = [Account.from_key(k).address for k in keys]
    names = ["admin", "registrar", "deployer", "responder", "approver1", "approver2", "approver3", "approver4", "outsider"]
    return Actors(**dict(zip(names, addresses)), keys=dict(zip(addresses, keys)))


@pytest.fixture(scope="session")
def suite_session(anvil, w3, actors) -> Suite:
    """The suite deployed once: three organisations, approvers 1..3 one per org, approver4 in org 1."""
    deployed = Ledger.deploy_suite(anvil.url, Account.from_key(actors.key(actors.admin)))  # the one deployment path
    contracts = deployed_contracts(w3, deployed.book)
    registry, ledger = contracts["ReleaseRegistry"], contracts["DeploymentLedger"]
    suite = Suite(w3=w3, registry=registry, ledger=ledger, actors=actors)
    seed_consortium(deployed, [
        (actors.approver1, "acme", ("APPROVER",)), (actors.approver2, "globex", ("APPROVER",)),
        (actors.approver3, "initech", ("APPROVER",)), (actors.approver4, "acme", ("APPROVER",)),
        (actors.registrar, None, ("REGISTRAR",)), (actors.deployer, None, ("DEPLOYER",)),
        (actors.responder, None, ("RESPONDER",)),
    ])
    return suite


@pytest.fixture
def suite(suite_session, w3) -> Suite:
    """The deployed suite, reverted to its freshly set-up state after the test."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield suite_session
    w3.provider.make_request("evm_revert", [snapshot])

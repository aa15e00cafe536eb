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
from shipledger.models import Bootstrap
from shipledger.network.devnet import Anvil, dev_private_keys
from shipledger._internal.revert import decode_revert
from support import dn  # noqa: F401 - the per-module CLI devnet fixture, for every test module

ROLE_NAMES = ("REGISTRAR_ROLE", "APPROVER_ROLE", "DEPLOYER_ROLE", "RESPONDER_ROLE", "ATTESTOR_ROLE")
GOVERNANCE_DELAY = 60  # seconds, as on the devnet


@dataclass(frozen=True)
class Actors:
    """Dev accounts by part. approver1..3 sit in organisations 1..3 (acme, globex, initech) and
    approver4 in 1; steward1..3 steward them. registrar (REGISTRAR and ATTESTOR everywhere) and deployer
    are members of acme, responder of globex. admin deployed the suite and holds nothing."""

    admin: str
    registrar: str
    deployer: str
    responder: str
    approver1: str
    approver2: str
    approver3: str
    approver4: str
    outsider: str
    steward1: str
    steward2: str
    steward3: str
    keys: dict  # address -> private key (hex)

    def key(self, address: str) -> str:
        return self.keys[address]


@dataclass
class Suite:
    w3: Web3
    registry: object  # web3 Contract
    ledger: object
    actors: Actors
    governance: object = None

    def govern(self, fn) -> dict:
        """Pass a registry or governance call through governance as the consortium would: steward1
        proposes, steward2 approves (K = 2), and a weakening change waits out the delay and executes.
        Returns the proposal's getProposal struct as a dict."""
        contract = fn.address
        data = fn._encode_transaction_data()
        receipt = self.transact(self.governance.functions.propose(contract, data), self.actors.steward1)
        proposal_id = self.events(receipt, self.governance, "ProposalCreated")[0]["id"]
        self.transact(self.governance.functions.approveProposal(proposal_id), self.actors.steward2)
        proposal = self.governance.functions.getProposal(proposal_id).call()
        if proposal[1] == 2:  # Scheduled: a weakening change waits for its delay
            self.w3.provider.make_request("evm_increaseTime", [GOVERNANCE_DELAY])
            self.w3.provider.make_request("evm_mine", [])
            self.transact(self.governance.functions.executeProposal(proposal_id), self.actors.outsider)
        proposal = self.governance.functions.getProposal(proposal_id).call()
        assert proposal[1] == 3, f"proposal {proposal_id} did not execute: state {proposal[1]}"
        return {"id": proposal_id, "weakening": proposal[2]}

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
    names = ["admin", "registrar", "deployer", "responder", "approver1", "approver2", "approver3", "approver4", "outsider",
             "steward1", "steward2", "steward3"]
    keys = dev_private_keys(len(names))
    addresses = [Account.from_key(k).address for k in keys]
    return Actors(**dict(zip(names, addresses)), keys=dict(zip(addresses, keys)))


@pytest.fixture(scope="session")
def suite_session(anvil, w3, actors) -> Suite:
    """The suite deployed once with the bootstrap consortium of Actors; no policies."""
    a = actors
    bootstrap = Bootstrap(
        organisations=(("acme", a.steward1), ("globex", a.steward2), ("initech", a.steward3)),
        members=((a.approver1, "acme", True), (a.approver2, "globex", True), (a.approver3, "initech", True),
                 (a.approver4, "acme", True), (a.registrar, "acme", False), (a.deployer, "acme", False),
                 (a.responder, "globex", False)),
        roles=(("REGISTRAR", "", a.registrar), ("ATTESTOR", "", a.registrar), ("DEPLOYER", "", a.deployer),
               ("RESPONDER", "", a.responder)),
        organisations_needed=2,
        delay=GOVERNANCE_DELAY,
    )
    deployed = Ledger.deploy_suite(anvil.url, Account.from_key(a.key(a.admin)), bootstrap)  # the one deployment path
    contracts = deployed_contracts(w3, deployed.book)
    return Suite(w3=w3, registry=contracts["ReleaseRegistry"], ledger=contracts["DeploymentLedger"], actors=a,
                 governance=contracts["Governance"])


@pytest.fixture
def suite(suite_session, w3) -> Suite:
    """The deployed suite, reverted to its freshly set-up state after the test."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield suite_session
    w3.provider.make_request("evm_revert", [snapshot])

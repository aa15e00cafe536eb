"""shipledger: an append-only, multi-party ledger for software releases on a permissioned EVM chain."""

from shipledger.errors import (
    AddressBookError,
    ConnectionFailed,
    ContractRevert,
    Denied,
    InvalidInput,
    PathError,
    ShipledgerError,
    TransactionTimeout,
    UsageError,
)
from shipledger.models import (
    Artifact,
    ArtifactSpec,
    Deployment,
    GateResult,
    HistoryEvent,
    Incident,
    Policy,
    SignedApproval,
    TargetState,
    TxReceipt,
    Vote,
)

__all__ = [
    "AddressBookError", "Artifact", "ArtifactSpec", "ConnectionFailed", "ContractRevert", "Denied",
    "Deployment", "GateResult", "HistoryEvent", "Incident", "InvalidInput", "Ledger", "PathError", "Policy",
    "ShipledgerError", "SignedApproval", "TargetState", "TransactionTimeout", "TxReceipt", "UsageError",
    "Vote", "sign_approval",
]


def __getattr__(name: str):
    # The client pulls in web3 (slow to import); load it on first use so `shipledger gate` stays fast.
    if name in ("Ledger", "sign_approval"):
        from shipledger import client

        return getattr(client, name)
    raise AttributeError(f"module 'shipledger' has no attribute {name!r}")

"""shipledger: an append-only, multi-party ledger for software releases on a permissioned EVM chain.

The SDK users import: `Ledger` (client.py), the types it returns (models.py) and its errors
(errors.py). Types and the client load on first use, so `shipledger gate` starts fast.
"""

from shipledger.errors import (
    AddressBookError,
    ChainStalled,
    ConnectionFailed,
    ContractRevert,
    Denied,
    InvalidInput,
    PathError,
    ShipledgerError,
    TransactionTimeout,
    UsageError,
)

_MODELS = ("Artifact", "ArtifactSpec", "BatchResult", "Deployment", "GateResult", "HistoryEvent", "Incident", "Policy",
           "SignedApproval", "TargetState", "TxReceipt", "Vote")
_CLIENT = ("Ledger", "sign_approval")

__all__ = [
    "AddressBookError", "Artifact", "ArtifactSpec", "BatchResult", "ChainStalled", "ConnectionFailed", "ContractRevert", "Denied",
    "Deployment", "GateResult", "HistoryEvent", "Incident", "InvalidInput", "Ledger", "PathError", "Policy",
    "ShipledgerError", "SignedApproval", "TargetState", "TransactionTimeout", "TxReceipt", "UsageError",
    "Vote", "sign_approval",
]


def __getattr__(name: str):
    # models needs dataclasses (and so inspect, ~13 ms); the client pulls in web3 (over half a
    # second). Both load on first use.
    if name in _MODELS:
        from shipledger import models

        return getattr(models, name)
    if name in _CLIENT:
        from shipledger import client

        return getattr(client, name)
    raise AttributeError(f"module 'shipledger' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""The address book: which chain and which addresses the suite lives at (written by `suite deploy`).

Apart from the client so that commands reading only the index can check it without importing web3.
"""

from __future__ import annotations

import json
from pathlib import Path

from shipledger._internal import artifacts
from shipledger._internal.abi import checksum_address
from shipledger._internal.freshness import max_block_age
from shipledger.errors import AddressBookError

FEE_MODES = ("legacy", "eip1559")  # the book's optional "fees": how transactions are priced (default: as the chain's blocks say)


def load_address_book(deployment: str | Path | dict) -> dict:
    """Read and check the shape of an address book written by `suite deploy`."""
    if isinstance(deployment, dict):
        book = deployment
    else:
        path = Path(deployment)
        try:
            book = json.loads(path.read_text())
        except FileNotFoundError:
            raise AddressBookError(f"address book {path} does not exist; deploy the suite or pass --deployment") from None
        except UnicodeDecodeError:
            raise AddressBookError(f"address book {path} is not readable JSON: it is not UTF-8 text") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise AddressBookError(f"address book {path} is not readable JSON: {exc}") from None
    where = f"address book {deployment}" if not isinstance(deployment, dict) else "the address book"
    if not isinstance(book, dict):
        raise AddressBookError(f"{where} is malformed: expected a JSON object, found {type(book).__name__}")
    chain_id = book.get("chain_id")
    if isinstance(chain_id, bool) or not isinstance(chain_id, (int, str)) or not str(chain_id).strip().isdigit():
        raise AddressBookError(f"{where} is malformed: chain_id {'is missing' if chain_id is None else f'{chain_id!r} is not a number'}")
    contracts = book.get("contracts")
    for name in artifacts.SUITE:
        entry = contracts.get(name) if isinstance(contracts, dict) else None
        address = entry.get("address") if isinstance(entry, dict) else None
        try:
            checksum_address(address)
        except (TypeError, ValueError):
            problem = "is missing" if address is None else f"{address!r} is not an address"
            raise AddressBookError(f"{where} is malformed: contracts.{name}.address {problem}") from None
    max_block_age(book)  # a bad value is refused here, not first at the gate
    if book.get("fees") not in (None, *FEE_MODES):
        raise AddressBookError(f'{where} is malformed: fees {book["fees"]!r} is not "legacy" or "eip1559"')
    return book

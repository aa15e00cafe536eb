"""The address book: which chain and which addresses the suite lives at (written by `suite deploy`).

Apart from the client so that commands reading only the index can check it without importing web3.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_utils import to_checksum_address

from shipledger._internal import artifacts
from shipledger.errors import AddressBookError


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
    try:
        int(book["chain_id"])
        for name in artifacts.SUITE:
            to_checksum_address(book["contracts"][name]["address"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AddressBookError(f"address book is malformed (missing or bad {exc})") from None
    return book

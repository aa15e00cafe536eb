"""What a QBFT chain is made of, the same for Besu and GoQuorum: node keys, the genesis extraData
that names the validators, and the genesis block itself.

Besu and GoQuorum run the same QBFT and agree on the genesis block, so one function writes the
extraData for both (qbft_extra_data) and one the genesis (qbft_genesis); only a few keys of the
genesis `config` differ by engine. shipledger/network/besu.py writes Besu's node files around it.

Sources (Besu cannot run here; these are the published formats the tests check against):
- extraData and the QBFT genesis: https://besu.hyperledger.org/private-networks/how-to/configure/consensus/qbft
  ("Genesis file", "Extra data": RLP([32 bytes Vanity, List<Validators>, No Vote, Round=Int(0), 0 Seals]))
- GoQuorum's QBFT config keys: quorum params/config.go `QBFTConfig` (epochlength, blockperiodseconds,
  requesttimeoutseconds, policy, ceil2Nby3Block) and ChainConfig's `isQuorum`, `txnSizeLimit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# "The properties with specific values in the QBFT genesis files": difficulty 0x1 and this mixHash,
# which identifies an Istanbul-family (IBFT/QBFT) block ("ctical byzantine fault tolerance").
ISTANBUL_MIX_HASH = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
ZERO_HASH = "0x" + "00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
VANITY = bytes(32)

# The suite is compiled for Berlin (DESIGN.md), so the chain runs every fork up to Berlin from block 0
# and none after it: GoQuorum has no EIP-1559, and geth-family clients refuse a fork enabled while an
# earlier one is not, so each is listed (Besu alone would take berlinBlock by itself).
BERLIN_FORKS = ("homesteadBlock", "eip150Block", "eip155Block", "eip158Block", "byzantiumBlock",
                "constantinopleBlock", "petersburgBlock", "istanbulBlock", "muirGlacierBlock", "berlinBlock")
EPOCH_LENGTH = 30_000  # blocks after which pending validator votes are reset: Besu's documented value
# 100 M gas a block: at the batch path's ~50,000 gas an artifact (shipledger/_internal/batch.py ITEM_GAS)
# that is ~2,000 registrations a block, above the 500/s the consortium needs at 1 s blocks.
GAS_LIMIT = 100_000_000
DEV_BALANCE = 10_000 * 10**18  # what anvil gives each dev account; gas is free here, so it only has to be there
GOQUORUM_TXN_SIZE_LIMIT = 128  # KB; GoQuorum's default 64 refuses the batch path's 96 KB transactions


def qbft_extra_data(validators: list[str]) -> str:
    """The genesis extraData naming `validators` (hex addresses), in the order given: RLP of [32-byte
    vanity, [validators], no vote, round 0, no seals], as Besu documents it and GoQuorum's QBFTExtra
    encodes it (a nil vote is an empty list, round 0 the empty string). Callers sort the validators:
    Besu's docs ask for ascending order."""
    import rlp

    addresses = [bytes.fromhex(a.removeprefix("0x")) for a in validators]
    if any(len(a) != 20 for a in addresses):
        raise ValueError("a validator address is 20 bytes")
    return "0x" + rlp.encode([VANITY, addresses, [], 0, []]).hex()


def round_timeout(block_period: int) -> int:
    """requesttimeoutseconds: Besu's tuning guide starts from twice the block period; at least 4 s so
    that a loaded machine's slow round does not turn into a round change at 1 s blocks."""
    return max(2 * block_period, 4)


def qbft_genesis(engine: str, validators: list[str], chain_id: int, block_period: int, funded: list[str]) -> dict:
    """The genesis of a QBFT chain whose validators (addresses) are named in the extraData, with
    `funded` (addresses) given DEV_BALANCE each, for engine "besu" or "goquorum". The block itself,
    the forks and the validators are the same for both; the engines differ in a few config keys."""
    validators = sorted(validators, key=str.lower)  # ascending, as Besu's docs ask
    qbft = {"blockperiodseconds": block_period, "epochlength": EPOCH_LENGTH, "requesttimeoutseconds": round_timeout(block_period)}
    config: dict = {"chainId": chain_id, **{fork: 0 for fork in BERLIN_FORKS}}
    if engine == "besu":
        # A free-gas network (min-gas-price=0 on every node); zeroBaseFee keeps it free if a later
        # London transition brings a base fee.
        config.update(qbft=qbft, zeroBaseFee=True)
    elif engine == "goquorum":
        config.update(qbft={**qbft, "policy": 0, "ceil2Nby3Block": 0}, isQuorum=True, txnSizeLimit=GOQUORUM_TXN_SIZE_LIMIT)
    else:
        raise ValueError(f"unknown QBFT engine {engine!r}: besu or goquorum")
    return {
        "config": config,
        "nonce": "0x0",
        "timestamp": "0x0",
        "extraData": qbft_extra_data(validators),
        "gasLimit": hex(GAS_LIMIT),
        "difficulty": "0x1",
        "mixHash": ISTANBUL_MIX_HASH,
        "coinbase": ZERO_ADDRESS,
        "alloc": {address.lower().removeprefix("0x"): {"balance": hex(DEV_BALANCE)} for address in funded},
        "number": "0x0",
        "gasUsed": "0x0",
        "parentHash": ZERO_HASH,
    }


@dataclass(frozen=True)
class NodeKey:
    """A node's secp256k1 key: its public key is the node id in its enode URL, and the address of that
    key is its validator address."""

    private_key: bytes

    @classmethod
    def generate(cls) -> "NodeKey":
        from eth_keys import keys

        while True:  # a random 32 bytes is a valid key unless it is 0 or not below the curve order
            candidate = os.urandom(32)
            try:
                keys.PrivateKey(candidate)
            except Exception:  # noqa: BLE001 - eth_keys' ValidationError: draw again
                continue
            return cls(candidate)

    @property
    def _key(self):
        from eth_keys import keys

        return keys.PrivateKey(self.private_key)

    @property
    def node_id(self) -> str:
        """The 64-byte uncompressed public key (no 04 prefix) as 128 hex digits: the enode's user part."""
        return self._key.public_key.to_bytes().hex()

    @property
    def address(self) -> str:
        return self._key.public_key.to_checksum_address()

    def enode(self, host: str, port: int) -> str:
        return f"enode://{self.node_id}@{host}:{port}"

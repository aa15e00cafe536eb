"""`shipledger network besu-config` against Besu's published formats (Besu cannot run here).

The documented vectors come from Besu's QBFT page,
https://besu.hyperledger.org/private-networks/how-to/configure/consensus/qbft ("Genesis file" and
"Generate extra data", the output of `besu rlp encode --type=QBFT_EXTRA_DATA`), and the key-to-address
pairs from Besu's tutorials' well-known test accounts.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest
import rlp
from eth_account import Account
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from shipledger.network import besu
from shipledger.network.qbft import ISTANBUL_MIX_HASH, NodeKey, qbft_extra_data, qbft_genesis
from support import fails, ok, one_line, run

# "Generate extra data": toEncode.json (in that order) and what `besu rlp encode` printed for it.
DOCUMENTED_ENCODE = (
    ["0x4592c8e45706cc08b8f44b11e43cba0cfc5892cb", "0x06e23768a0f59cf365e18c2e0c89e151bcdedc70",
     "0xc5327f96ee02d7bcbc1bf1236b8c15148971e1de", "0xab5e7f4061c605820d3744227eed91ff8e2c8908"],
    "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f854944592c8e45706cc08b8f44b11e43cba0cfc5892cb"
    "9406e23768a0f59cf365e18c2e0c89e151bcdedc7094c5327f96ee02d7bcbc1bf1236b8c15148971e1de94ab5e7f4061c605820d3744227eed91ff8e2c8908c080c0",
)
# "Genesis file", block header validator selection: the example genesis's extraData.
DOCUMENTED_GENESIS = (
    ["0x64a702e6263b7297a96638cac6ae65e6541f4169", "0x3923390ad55e90c237593b3b0e401f3b08a03185",
     "0xaefdb9a738c9f433e5b6b212a6d62f6370c2f692", "0xc7eeb9a4e00ce683cf93039b212648e01c6c6b78"],
    "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f8549464a702e6263b7297a96638cac6ae65e6541f4169"
    "943923390ad55e90c237593b3b0e401f3b08a0318594aefdb9a738c9f433e5b6b212a6d62f6370c2f69294c7eeb9a4e00ce683cf93039b212648e01c6c6b78c080c0",
)
# Besu's tutorials fund these test accounts and print their private keys beside them.
DOCUMENTED_KEYS = {
    "8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63": "0xfe3b557e8fb62b89f4916b721be55ceb828dbd73",
    "c87509a1c067bbde78beb793e6fa76530b6382a4c0241e5e4a9ec0a0f44dc0d3": "0x627306090abab3a6e1400e9345bc60c78a8bef57",
    "ae6ae8e5ccbfb04590405997ee2d52d2b330726137b875053c36d94e974d162f": "0xf17f52151ebef6c7334fad080c5704d77216b732",
}
# Every field of the documented QBFT genesis (block header validator selection), and the two whose values
# the page fixes ("The properties with specific values in the QBFT genesis files").
DOCUMENTED_GENESIS_FIELDS = {"config", "nonce", "timestamp", "extraData", "gasLimit", "difficulty", "mixHash", "coinbase",
                             "alloc", "number", "gasUsed", "parentHash"}
DOCUMENTED_QBFT_FIELDS = {"epochlength", "blockperiodseconds", "requesttimeoutseconds"}


def decode_extra_data(extra_data: str) -> tuple[bytes, list[str], list, bytes, list]:
    vanity, validators, vote, round_, seals = rlp.decode(bytes.fromhex(extra_data.removeprefix("0x")))
    return vanity, ["0x" + v.hex() for v in validators], vote, round_, seals


@pytest.mark.parametrize("validators, documented", [DOCUMENTED_ENCODE, DOCUMENTED_GENESIS], ids=["rlp-encode", "genesis"])
def test_extra_data_matches_besus_documented_examples_byte_for_byte(validators, documented):
    assert qbft_extra_data(validators) == documented
    assert decode_extra_data(documented) == (bytes(32), validators, [], b"", [])


def test_node_key_gives_the_documented_address_and_an_enode_of_its_public_key():
    for private_key, address in DOCUMENTED_KEYS.items():
        key = NodeKey(bytes.fromhex(private_key))
        assert key.address.lower() == address
        assert to_checksum_address("0x" + keccak(bytes.fromhex(key.node_id))[12:].hex()).lower() == address
        assert key.enode("10.0.0.7", 30303) == f"enode://{key.node_id}@10.0.0.7:30303"


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> tuple[Path, dict]:
    """One generated 4-organisation network, as the CLI writes it."""
    workdir = tmp_path_factory.mktemp("besu")
    summary = ok(run(["network", "besu-config", "--validators", "4", "--out", "net", "--chain-id", "4242",
                      "--block-period", "2s", "--json"], cwd=workdir))
    return workdir / "net", summary


def test_every_file_parses_and_the_layout_is_as_documented(network):
    out, summary = network
    assert sorted(p.name for p in out.iterdir()) == ["genesis.json", "org1", "org2", "org3", "org4"]
    json.loads((out / "genesis.json").read_text())
    for k in range(1, 5):
        folder = out / f"org{k}"
        assert sorted(p.name for p in folder.iterdir()) == ["config.toml", "key", "permissions_config.toml", "static-nodes.json"]
        config = tomllib.loads((folder / "config.toml").read_text())
        permissions = tomllib.loads((folder / "permissions_config.toml").read_text())
        static = json.loads((folder / "static-nodes.json").read_text())
        assert isinstance(static, list) and set(permissions) == {"nodes-allowlist", "accounts-allowlist"}
        # every path in the config is one that exists (or, data-path, that Besu makes) from the node's folder
        for option in ("genesis-file", "node-private-key-file", "static-nodes-file", "permissions-nodes-config-file",
                       "permissions-accounts-config-file"):
            assert (folder / config[option]).is_file(), option
        assert config["data-path"] == "data"
    assert [n["org"] for n in summary["nodes"]] == ["org1", "org2", "org3", "org4"]


def test_genesis_carries_every_field_of_besus_qbft_genesis(network):
    out, summary = network
    genesis = json.loads((out / "genesis.json").read_text())
    assert DOCUMENTED_GENESIS_FIELDS <= set(genesis)
    config = genesis["config"]
    assert config["chainId"] == 4242 and config["zeroBaseFee"] is True
    assert set(config["qbft"]) == DOCUMENTED_QBFT_FIELDS
    assert config["qbft"]["blockperiodseconds"] == 2 and config["qbft"]["requesttimeoutseconds"] >= 4
    assert genesis["difficulty"] == "0x1" and genesis["mixHash"] == ISTANBUL_MIX_HASH
    # Berlin and every fork before it from block 0, nothing after (the suite is Berlin bytecode)
    forks = [k for k in config if k.endswith("Block")]
    assert forks[-1] == "berlinBlock" and all(config[k] == 0 for k in forks) and "londonBlock" not in config
    assert len(forks) == 10
    # the dev accounts are funded, and nobody else
    dev = {Account.from_key(k).address.lower().removeprefix("0x") for k in _dev_keys()}
    assert set(genesis["alloc"]) == dev and all(int(v["balance"], 16) > 0 for v in genesis["alloc"].values())
    assert int(genesis["gasLimit"], 16) >= 30_000_000


def _dev_keys():
    from shipledger.network.devnet import DEV_ROLES, dev_private_keys

    return dev_private_keys(len(DEV_ROLES))


def test_extra_data_decodes_back_to_exactly_the_validators_of_the_keys(network):
    out, summary = network
    genesis = json.loads((out / "genesis.json").read_text())
    vanity, validators, vote, round_, seals = decode_extra_data(genesis["extraData"])
    from_keys = [Account.from_key((out / f"org{k}" / "key").read_text()).address.lower() for k in range(1, 5)]
    assert validators == sorted(from_keys)  # ascending, as Besu's docs ask
    assert (vanity, vote, round_, seals) == (bytes(32), [], b"", [])
    assert [v.lower() for v in summary["validators"]] == validators and genesis["extraData"] == summary["extra_data"]


def test_keys_are_besu_key_files_0600_and_the_enodes_are_theirs(network):
    out, summary = network
    enodes = [n["enode"] for n in summary["nodes"]]
    for k, node in enumerate(summary["nodes"], start=1):
        folder = out / f"org{k}"
        text = (folder / "key").read_text()
        assert text.startswith("0x") and len(text) == 66 and "\n" not in text  # Besu's format: one line, no newline
        assert stat.S_IMODE(os.stat(folder / "key").st_mode) == 0o600
        public = keys.PrivateKey(bytes.fromhex(text[2:])).public_key
        assert node["enode"] == f"enode://{public.to_bytes().hex()}@127.0.0.1:{30302 + k}"
        assert node["validator"] == public.to_checksum_address()
        assert json.loads((folder / "static-nodes.json").read_text()) == [e for e in enodes if e != node["enode"]]
        permissions = tomllib.loads((folder / "permissions_config.toml").read_text())
        assert permissions["nodes-allowlist"] == enodes
        genesis = json.loads((out / "genesis.json").read_text())
        assert sorted(permissions["accounts-allowlist"]) == sorted("0x" + a for a in genesis["alloc"])
    assert summary["secrets"] == [str(Path("net") / f"org{k}" / "key") for k in range(1, 5)]


def test_node_config_sets_what_the_sdk_relies_on(network):
    out, _ = network
    ports = set()
    for k in range(1, 5):
        config = tomllib.loads((out / f"org{k}" / "config.toml").read_text())
        assert config["min-gas-price"] == 0 and config["revert-reason-enabled"] is True
        assert config["rpc-http-enabled"] is True and {"ETH", "NET", "WEB3", "QBFT"} <= set(config["rpc-http-api"])
        assert not {"ADMIN", "PERM", "DEBUG"} & set(config["rpc-http-api"])  # they change the node: not over HTTP
        assert config["rpc-http-max-batch-size"] == 1024 and config["rpc-max-logs-range"] == 5000
        assert config["permissions-nodes-config-file-enabled"] is True and config["permissions-accounts-config-file-enabled"] is True
        assert config["discovery-enabled"] is False
        ports |= {config["p2p-port"], config["rpc-http-port"]}
    assert len(ports) == 8  # the four nodes can run side by side on one host


def test_goquorum_genesis_of_the_same_validators_has_the_same_block_and_extra_data():
    validators = [NodeKey.generate().address for _ in range(4)]
    funded = [Account.create().address]
    on_besu = qbft_genesis("besu", validators, 1337, 1, funded)
    on_goquorum = qbft_genesis("goquorum", list(reversed(validators)), 1337, 1, funded)
    assert on_besu["extraData"] == on_goquorum["extraData"]
    assert decode_extra_data(on_besu["extraData"])[1] == sorted(v.lower() for v in validators)
    assert {k: v for k, v in on_besu.items() if k != "config"} == {k: v for k, v in on_goquorum.items() if k != "config"}
    assert on_goquorum["config"]["isQuorum"] is True and on_goquorum["config"]["txnSizeLimit"] == 128
    assert DOCUMENTED_QBFT_FIELDS <= set(on_goquorum["config"]["qbft"])


def test_a_directory_with_something_in_it_is_refused_and_left_alone(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "mine.txt").write_text("keep me")
    message = fails(run(["network", "besu-config", "--out", "net"], cwd=tmp_path), 2, "net", "not empty", "--force")
    one_line(message)
    assert [p.name for p in (tmp_path / "net").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]  # no staging directory left behind


def test_the_current_directory_is_refused_even_with_force(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    for out in (".", str(tmp_path)):
        one_line(fails(run(["network", "besu-config", "--out", out, "--force"], cwd=tmp_path), 2, "current directory"))
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_force_replaces_it_and_an_empty_directory_is_used(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "old.txt").write_text("old")
    ok(run(["network", "besu-config", "--validators", "1", "--out", "net", "--force", "--json"], cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == ["genesis.json", "org1"]
    (tmp_path / "empty").mkdir()
    ok(run(["network", "besu-config", "--validators", "1", "--out", "empty", "--json"], cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "net"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "forced"])
def test_a_failure_halfway_writes_nothing_and_keeps_what_was_there(tmp_path, monkeypatch, existing):
    out = tmp_path / "net"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("old")
    real_write, calls = besu._write, []

    def failing_write(path, text, mode=0o644):
        calls.append(path)
        if len(calls) == 6:  # genesis and org1's four files are written; org2's key is not
            raise OSError(28, "No space left on device", str(path))
        real_write(path, text, mode)

    monkeypatch.setattr(besu, "_write", failing_write)
    with pytest.raises(OSError):
        besu.besu_config(out, 4, 1337, 1, [Account.create().address], force=existing)
    assert len(calls) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == (["net"] if existing else [])
    if existing:
        assert [p.name for p in out.iterdir()] == ["old.txt"]


@pytest.mark.parametrize("args, needle", [
    (["--validators", "0"], "--validators"),
    (["--validators", "65"], "between 1 and 64"),
    (["--block-period", "0"], "at least 1"),
    (["--block-period", "1.5s"], "whole seconds"),
    (["--chain-id", "x"], "--chain-id"),
    (["--validators", "2", "--hosts", "10.0.0.1,10.0.0.2,10.0.0.3"], "one IP address per organisation"),
    (["--hosts", "node1.example.com"], "not an IP address"),
    (["--accounts", "0x123"], "--accounts"),
], ids=["no-validators", "too-many", "zero-period", "fractional-period", "bad-chain-id", "host-count", "host-name", "bad-account"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    for as_json in (False, True):
        result = run(["network", "besu-config", "--out", "net", *args, *(["--json"] if as_json else [])], cwd=tmp_path)
        message = fails(result, 2, needle)
        # argparse's refusals print the usage first, as every command's do; the complaint is one line
        one_line(message.split("\n")[-1] if message.startswith("usage:") else message)
    assert list(tmp_path.iterdir()) == []


def test_hosts_and_accounts_given_are_what_is_written(tmp_path):
    account = Account.create().address
    summary = ok(run(["network", "besu-config", "--validators", "2", "--out", "net", "--hosts", "10.0.0.1,10.0.0.2",
                      "--accounts", account, "--json"], cwd=tmp_path))
    assert [n["enode"].rsplit("@", 1)[1] for n in summary["nodes"]] == ["10.0.0.1:30303", "10.0.0.2:30304"]
    genesis = json.loads((tmp_path / "net" / "genesis.json").read_text())
    assert list(genesis["alloc"]) == [account.lower()[2:]] and summary["accounts"] == [account.lower()]
    config = tomllib.loads((tmp_path / "net" / "org2" / "config.toml").read_text())
    assert config["p2p-host"] == "10.0.0.2"


def test_the_text_output_says_the_keys_are_secrets(tmp_path):
    result = run(["network", "besu-config", "--validators", "1", "--out", "net"], cwd=tmp_path)
    assert result.code == 0 and result.out == ""
    assert "secrets" in result.err and "0600" in result.err and "besu --config-file=config.toml" in result.err

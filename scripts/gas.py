#!/usr/bin/env python3
"""Gas report: the gas each ledger operation uses, measured on a throwaway anvil.

    python scripts/gas.py

Starts its own anvil, deploys ReleaseRegistry + DeploymentLedger from the committed artifacts, walks one
realistic release story (register, approve, roll out, roll back, incident) and prints one line per
operation, `<operation> <gas used>` (the transaction's gasUsed, so the 21000 base cost and calldata are
included), then how the figures compare to the targets. Gas is deterministic for given inputs and
contract bytes, so this is a report, not a timing.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402

from shipledger import Ledger  # noqa: E402
from shipledger._internal import artifacts  # noqa: E402
from shipledger.network.devnet import Anvil, dev_private_keys, seed_consortium  # noqa: E402

SERVICE = "payments-api"
STAGING, PROD = "staging", "prod"
APPROVE, REJECT = 1, 2  # Decision
PASS = 1  # Verdict

# operation -> upper bound (inclusive) the design aims for
TARGETS = {
    "register": 90_000,
    "approve": 65_000,
    "deploy_start": 120_000,
    "register_batch_per_item": 55_000,
}


class Suite:
    """The deployed contracts and the dev accounts, each in its part (as tests/conftest.py sets up)."""

    def __init__(self, w3: Web3):
        self.w3 = w3
        keys = dev_private_keys(10)
        self.keys = {Account.from_key(k).address: k for k in keys}
        addresses = list(self.keys)
        (self.admin, self.registrar, self.deployer, self.responder,
         self.approver1, self.approver2, self.approver3, self.approver4, self.outsider) = addresses[:9]
        deployed = Ledger.deploy_suite(w3.provider.endpoint_uri, Account.from_key(self.keys[self.admin]))  # the one deployment path
        self.registry, self.ledger = (
            w3.eth.contract(address=deployed.book["contracts"][name]["address"], abi=artifacts.load(name)["abi"])
            for name in ("ReleaseRegistry", "DeploymentLedger"))
        seed_consortium(deployed, [
            (self.approver1, "acme", ("APPROVER",)), (self.approver2, "globex", ("APPROVER",)),
            (self.approver3, "initech", ("APPROVER",)), (self.approver4, "acme", ("APPROVER",)),
            (self.registrar, None, ("REGISTRAR",)), (self.deployer, None, ("DEPLOYER",)),
            (self.responder, None, ("RESPONDER",)),
        ])

    def _wait(self, tx_hash):
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
        if receipt.status != 1:
            raise SystemExit(f"gas: transaction {tx_hash.hex()} reverted")
        return receipt

    def send(self, fn, sender: str):
        return self._wait(fn.transact({"from": sender}))

    def gas(self, fn, sender: str) -> int:
        return self.send(fn, sender).gasUsed


def artifact_input(version: str, service: str = SERVICE) -> tuple:
    """A realistic ArtifactInput: sha256 digest, git SHA-1 left-aligned, provenance and SBOM digests."""
    digest = hashlib.sha256(f"{service}:{version}".encode()).digest()
    commit = hashlib.sha1(f"commit {version}".encode()).digest() + b"\x00" * 12
    return (
        digest,
        service,
        version,
        commit,
        1_735_689_600,
        hashlib.sha256(b"provenance" + digest).digest(),
        hashlib.sha256(b"sbom" + digest).digest(),
        f"oci://registry.example/{service}@sha256:{digest.hex()}",
    )


def measure(suite: Suite) -> dict[str, int]:
    reg, led = suite.registry.functions, suite.ledger.functions
    s = suite
    gas: dict[str, int] = {}

    def policy(env: str, prior: str = "") -> None:
        # 2 approvals from 2 organisations, approvals valid 7 days, freeze on sev 1-2 incidents
        s.send(reg.setPolicy(SERVICE, env, (2, 2, 7 * 24 * 3600, 0, 2, prior)), s.admin)

    def release(version: str) -> bytes:
        item = artifact_input(version)
        s.send(reg.register(item), s.registrar)
        return item[0]

    def approve(digest: bytes, env: str, *approvers: str) -> list[int]:
        return [s.gas(reg.approve(digest, SERVICE, env, "lgtm, canary green"), a) for a in approvers]

    def started_id(receipt) -> int:
        return suite.ledger.events.DeploymentStarted().process_receipt(receipt)[0]["args"]["id"]

    policy(STAGING)
    policy(PROD, prior=STAGING)

    # The live release in staging, 1.4.1: deploy_start_first is a start on a target with nothing live.
    v141 = release("1.4.1")
    approve(v141, STAGING, s.approver1, s.approver2)
    receipt = s.send(led.start(v141, SERVICE, STAGING, 100), s.deployer)
    gas["deploy_start_first"] = receipt.gasUsed
    live_id = started_id(receipt)
    s.send(led.complete(live_id), s.deployer)

    # 1.4.2: register, the two approvals, a canary rollout that replaces 1.4.1.
    gas["register"] = s.gas(reg.register(artifact_input("1.4.2")), s.registrar)
    v142 = artifact_input("1.4.2")[0]
    gas["approve_first"], gas["approve"] = approve(v142, STAGING, s.approver1, s.approver2)
    receipt = s.send(led.start(v142, SERVICE, STAGING, 10), s.deployer)
    gas["deploy_start"] = receipt.gasUsed  # typical: the target already has a live deployment
    new_id = started_id(receipt)
    gas["deploy_promote"] = s.gas(led.promote(new_id, 50), s.deployer)
    report = hashlib.sha256(b"canary report 1.4.2").digest()
    gas["record_analysis"] = s.gas(
        led.recordAnalysis(new_id, 9_420, PASS, report, "s3://canary-reports/payments-api/1.4.2.json", "kayenta"),
        s.deployer,
    )
    s.send(led.promote(new_id, 100), s.deployer)
    gas["deploy_complete"] = s.gas(led.complete(new_id), s.deployer)  # replaces the live 1.4.1

    # prod requires staging first: a start that also checks the prior environment.
    approve(v142, PROD, s.approver1, s.approver3)
    receipt = s.send(led.start(v142, SERVICE, PROD, 5), s.deployer)
    gas["deploy_start_with_prior"] = receipt.gasUsed
    gas["rollback_in_progress"] = s.gas(led.rollback(started_id(receipt), "abort: error budget burn"), s.deployer)

    # Incident on staging, live 1.4.2 rolled back to 1.4.1, incident walked to resolved.
    incident = (SERVICE, STAGING, 2, [new_id], "5xx rate above 2% on /v1/charges",
                hashlib.sha256(b"incident 1").digest(), "https://status.example/incidents/1")
    receipt = s.send(led.openIncident(incident), s.responder)
    gas["incident_open"] = receipt.gasUsed
    incident_id = suite.ledger.events.IncidentOpened().process_receipt(receipt)[0]["args"]["id"]
    gas["incident_acknowledge"] = s.gas(led.acknowledge(incident_id), s.responder)
    gas["rollback"] = s.gas(led.rollback(new_id, "incident 1: 5xx spike"), s.deployer)  # live -> previous
    gas["incident_mitigate"] = s.gas(led.mitigate(incident_id, new_id), s.responder)
    gas["incident_resolve"] = s.gas(
        led.resolve(incident_id, hashlib.sha256(b"postmortem 1").digest(), "https://wiki.example/pm/1"),
        s.responder,
    )

    # 1.4.3: a rejection (after one approval, so the vote word is already written) and its withdrawal,
    # then a rollout that fails.
    v143 = release("1.4.3")
    approve(v143, STAGING, s.approver1)
    gas["reject"] = s.gas(reg.reject(v143, SERVICE, STAGING, "breaks idempotency keys"), s.approver2)
    gas["withdraw"] = s.gas(reg.withdraw(v143, SERVICE, STAGING), s.approver2)
    approve(v143, STAGING, s.approver2)
    receipt = s.send(led.start(v143, SERVICE, STAGING, 10), s.deployer)
    gas["deploy_fail"] = s.gas(led.fail(started_id(receipt), "canary verdict: fail"), s.deployer)

    # 1.4.4: three approvals signed offline (EIP-712), submitted in one voteBySig by a pipeline account.
    v144 = release("1.4.4")
    deadline = 4_102_444_800  # fixed (2100-01-01) so the calldata, hence the gas, never varies
    votes = []
    for nonce, signer in enumerate((s.approver1, s.approver2, s.approver3), start=1000):
        digest = reg.voteHash(v144, SERVICE, PROD, APPROVE, nonce, deadline).call()
        signature = Account.unsafe_sign_hash(digest, s.keys[signer]).signature
        votes.append((signer, v144, SERVICE, PROD, APPROVE, nonce, deadline, bytes(signature)))
    gas["approve_by_sig_per_signature"] = s.gas(reg.voteBySig(votes), s.outsider) // len(votes)

    # One registerBatch of 100 artifacts. Per item = the whole transaction's gasUsed / 100, base cost
    # included (the conservative figure; subtracting the 21000 first would lower it by 210).
    batch = [artifact_input(f"2.0.{i}") for i in range(100)]
    gas["register_batch_per_item"] = s.gas(reg.registerBatch(batch), s.registrar) // len(batch)

    # The gate as a read (eth_estimateGas of the view call, so 21000 included).
    gas["gate_view"] = led.gate(v142, SERVICE, STAGING).estimate_gas({"from": s.outsider})
    return gas


ORDER = [
    "register", "register_batch_per_item", "approve_first", "approve", "approve_by_sig_per_signature",
    "reject", "withdraw", "deploy_start_first", "deploy_start", "deploy_start_with_prior", "deploy_promote",
    "record_analysis", "deploy_complete", "deploy_fail", "rollback", "rollback_in_progress", "incident_open",
    "incident_acknowledge", "incident_mitigate", "incident_resolve", "gate_view",
]


def main() -> int:
    began = time.monotonic()
    node = Anvil.start()
    try:
        gas = measure(Suite(Web3(Web3.HTTPProvider(node.url))))
    finally:
        node.stop()
    assert sorted(gas) == sorted(ORDER), sorted(set(gas) ^ set(ORDER))
    for name in ORDER:
        print(f"{name} {gas[name]}")
    print()
    print("targets (gasUsed, base cost included):")
    all_met = True
    for name, limit in TARGETS.items():
        met = gas[name] <= limit
        all_met &= met
        print(f"  {name:<26} {gas[name]:>7} <= {limit:>7}  {'met' if met else 'not met'}")
    print("all targets met" if all_met else "some targets not met")
    sys.stdout.flush()
    print(f"gas: {time.monotonic() - began:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

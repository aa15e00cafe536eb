"""Every command, run with bad inputs against one devnet: each failure is a sentence with its exit code
(2 bad input or an unknown id, 1 operational, 3 denied), never `internal error` or a traceback, and with
--json stdout holds the one error document {"error": {"code", "message", "exit"}}.

The table names files by placeholder ({missing}, {dir}, ...); the `bad` fixture makes them. Files that
must be unreadable or unwritable cannot be made so for root, so those cases run the CLI as `nobody`
(setpriv) in a directory of their own (see NOBODY_CASES).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from shipledger.cli import COMMANDS
from support import CLI, ENV, Result, assert_no_traceback, clean_env, digest_for, fails, new_address, unique

BAD_DIGESTS = ("sha256:xyz", "md5:" + "0" * 32, "")
KEYLESS = None  # a case run with no key: it fails before a key is needed
BOOTSTRAP = {"organisations": [{"name": "a", "steward": new_address()}, {"name": "b", "steward": new_address()}],
             "organisations_needed": 2, "delay": "1h"}
ANALYSIS = {"source": {"command": "true"}, "metrics": [{"name": "latency", "direction": "increase"}]}

# (argv, the devnet account that runs it, expected exit, a needle the message must hold). argv words are
# str.format()ed with the `bad` fixture's placeholders.
CASES = [
    # ------------------------------------------------------------------ global options
    (["member", "list", "--deployment", "{missing}"], KEYLESS, 1, "{missing}"),
    (["member", "list", "--deployment", "{dir}"], KEYLESS, 1, "{dir}"),
    (["member", "list", "--deployment", "{binary}"], KEYLESS, 1, "{binary}"),
    (["member", "list", "--deployment", "{garbage}"], KEYLESS, 1, "{garbage}"),
    (["member", "list", "--deployment", "{obj}"], KEYLESS, 1, "malformed"),
    (["member", "list", "--deployment", "{list}"], KEYLESS, 1, "malformed"),
    (["member", "list", "--rpc", "not a url"], KEYLESS, 1, "not a url"),
    (["member", "list", "--rpc", "http://127.0.0.1:1"], KEYLESS, 1, "cannot reach"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{missing}"], KEYLESS, 2, "{missing}"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{dir}"], KEYLESS, 2, "{dir}"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{binary}"], KEYLESS, 2, "{binary}"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{garbage}"], KEYLESS, 2, "{garbage}"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{obj}"], KEYLESS, 2, "{obj}"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{list}"], KEYLESS, 2, "{list}"),
    (["org", "add", "x", "--steward", "{address}", "--key-env", "NO_SUCH_VAR"], KEYLESS, 2, "NO_SUCH_VAR"),
    (["--rpc"], KEYLESS, 2, "--rpc"),
    ([], KEYLESS, 2, "COMMAND"),
    (["frobnicate"], KEYLESS, 2, "frobnicate"),
    # ------------------------------------------------------------------ devnet
    (["devnet", "up", "--port", "abc"], KEYLESS, 2, "abc"),
    (["devnet", "up", "--port", "0"], KEYLESS, 2, "port"),
    (["devnet", "up", "--port", "70000"], KEYLESS, 2, "port"),
    (["network", "up", "--engine", "qbft", "--dir", "{nodir}"], KEYLESS, 2, "GoQuorum cannot be built here"),
    (["network", "up", "--engine", "besu", "--dir", "{nodir}"], KEYLESS, 2, "clique, anvil"),
    (["network", "up", "--validators", "0", "--dir", "{nodir}"], KEYLESS, 2, "at least 1"),
    (["network", "up", "--block-period", "0", "--dir", "{nodir}"], KEYLESS, 2, "block period"),
    (["network", "up", "--dir", "{binary}"], KEYLESS, 2, "is a file"),
    (["network", "status", "--dir", "{nodir}"], KEYLESS, 1, "no network is running"),
    (["network", "stop-node", "1", "--dir", "{nodir}"], KEYLESS, 1, "no network is running"),
    (["network", "start-node", "x", "--dir", "{nodir}"], KEYLESS, 2, "'x'"),
    (["network", "start-node", "1", "--dir", "{nodir}"], KEYLESS, 1, "no network is running"),
    (["network", "down", "--dir", "{binary}"], KEYLESS, 2, "is a file"),
    (["network", "besu-config", "--out", "{root}"], KEYLESS, 2, "not empty"),
    (["network", "besu-config", "--out", "{binary}"], KEYLESS, 2, "is a file"),
    (["network", "besu-config", "--out", "{nodir}"], KEYLESS, 2, "does not exist"),
    (["network", "besu-config", "--out", "{fresh}", "--validators", "two"], KEYLESS, 2, "two"),
    # ------------------------------------------------------------------ suite, org, member, role, policy
    (["suite", "deploy", "--out", "{dir}", "--bootstrap", "{bootstrap}"], "admin", 2, "{dir}"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{bootstrap}"], KEYLESS, 2, "key"),
    (["suite", "deploy", "--out", "{binary}/book.json", "--bootstrap", "{bootstrap}"], "admin", 2, "{binary}"),
    (["suite", "deploy", "--out", "{fresh}"], "admin", 2, "--bootstrap"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{missing}"], "admin", 2, "{missing}"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{garbage}"], "admin", 2, "not JSON"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{list}"], "admin", 2, "a JSON object"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{obj}"], "admin", 2, "names no organisations"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{bootstrap_k3}"], "admin", 2, "organisations_needed 3"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{bootstrap_typo}"], "admin", 2, "unknown key 'stewards'"),
    (["org", "add", "", "--steward", "{address}"], "steward", 2, "organisation"),
    (["org", "add", "x" * 65, "--steward", "{address}"], "steward", 2, "organisation"),
    (["org", "add", "x"], "steward", 2, "--steward"),
    (["org", "add", "x", "--steward", "{address}"], "outsider", 3, "is not the steward"),
    (["member", "add", "0x123"], "steward", 2, "0x123"),
    (["member", "add", ""], "steward", 2, "''"),
    (["member", "add", "1", "{address}"], "steward", 2, "'1' is not an Ethereum address"),  # v1's ORG ADDRESS
    (["member", "add", "{address}", "--role", "KING"], "steward", 2, "KING"),
    (["member", "add", "{address}", "--role", "DEPLOYER"], "steward", 2, "governance propose role-grant"),
    (["member", "add", "{address}"], "outsider", 3, "is not the steward"),
    (["member", "remove", "nothing"], "steward", 2, "nothing"),
    (["member", "remove", "{address}"], "steward", 3, "{address}"),
    (["role", "grant", "KING", "{address}"], "steward", 2, "KING"),
    (["role", "grant", "", "{address}"], "steward", 2, "role"),
    (["role", "revoke", "REGISTRAR", "0xzz"], "steward", 2, "0xzz"),
    (["role", "grant", "REGISTRAR", "{address}"], "outsider", 3, "is not the steward"),
    (["role", "grant", "DEPLOYER", "{address}", "--service", "s"], "steward", 2, "--service does not go with DEPLOYER"),
    (["policy", "set", "", ENV, "--threshold", "1"], "steward", 2, "service"),
    (["policy", "set", "s", "", "--threshold", "1"], "steward", 2, "environment"),
    (["policy", "set", "s", ENV, "--threshold", "-1"], "steward", 2, "threshold"),
    (["policy", "set", "s", ENV, "--threshold", "x"], "steward", 2, "'x'"),
    (["policy", "set", "s", ENV, "--threshold", "1", "--ttl", "soon"], "steward", 2, "soon"),
    (["policy", "set", "s", ENV, "--threshold", "1", "--after", "bad name"], "steward", 2, "bad name"),
    (["policy", "set", "s", ENV, "--threshold", "1", "--freeze-severity", "9"], "steward", 2, "freeze"),
    (["policy", "set", "s", ENV, "--threshold", "1", "--resolve-quorum", "0"], "steward", 2, "resolve quorum"),
    (["policy", "set", "s", ENV, "--threshold", "1", "--require-attestation", "bad type"], "steward", 2, "bad type"),
    (["policy", "set", "s", ENV, "--threshold", "1", "--require-attestation", "a", "--require-attestation", "a"],
     "steward", 2, "twice"),
    # ------------------------------------------------------------------ governance
    (["governance", "approve", "0"], "steward", 2, "'0'"),
    (["governance", "show", "0"], None, 2, "'0'"),
    (["governance", "show", "999999"], None, 2, "proposal 999999 does not exist"),
    (["governance", "list", "--pending", "--rpc", "http://127.0.0.1:1"], None, 1, "127.0.0.1:1"),
    (["incident", "postmortem", "{incident}", "{missing}"], "responder", 2, "{missing}"),
    (["serve", "--listen", "nonsense"], None, 2, "nonsense"),
    (["serve", "--admission"], None, 2, "--tls-cert"),
    (["serve", "--admission", "--tls-cert", "{missing}", "--tls-key", "{missing}"], None, 2, "cannot read the TLS"),
    (["serve", "--tls-cert", "{garbage}", "--tls-key", "{garbage}"], None, 2, "{garbage}"),
    (["serve", "--tls-cert", "{garbage}"], None, 2, "go together"),
    (["serve", "--admission-map", "{missing}"], None, 2, "goes with --admission"),
    (["serve", "--observations-token-env", "NO_SUCH_TOKEN_VAR"], None, 2, "NO_SUCH_TOKEN_VAR"),
    # ------------------------------------------------------------------ drift and images
    (["drift"], KEYLESS, 2, "one of the two"),
    (["drift", "--kubernetes", "{missing}"], KEYLESS, 2, "{missing}"),
    (["drift", "--kubernetes", "{dir}"], KEYLESS, 2, "{dir}"),
    (["drift", "--kubernetes", "{garbage}"], KEYLESS, 2, "{garbage}"),
    (["drift", "--kubernetes", "{list}"], KEYLESS, 2, "kubectl get pods"),
    (["drift", "--observed", "{binary}"], KEYLESS, 2, "{binary}"),
    (["drift", "--observed", "{garbage}"], KEYLESS, 2, "{garbage}:1"),
    (["drift", "--observed", "{garbage}", "--admission-map", "{missing}"], KEYLESS, 2, "--admission-map"),
    (["register", "--image", "registry.example/app:1.0", "--service", "s", "--version", "1"], "registrar", 2, "names no digest"),
    (["gate", "--image", "registry.example/app@sha256:1", "--service", "{service}", "--env", ENV], KEYLESS, 2, "digest"),
    (["governance", "approve", "999999"], "steward", 2, "proposal 999999 does not exist"),
    (["governance", "execute", "999999"], "outsider", 2, "proposal 999999 does not exist"),
    (["governance", "cancel", "{proposal}"], "outsider", 3, "is not the steward"),
    (["governance", "approve", "{proposal}"], "steward", 3, "has already approved"),
    (["governance", "execute", "{proposal}"], "outsider", 3, "has the approval of 1 of the 2"),
    (["governance", "propose", "settings"], "steward", 2, "--organisations-needed"),
    (["governance", "propose", "settings", "--delay", "soon"], "steward", 2, "soon"),
    (["governance", "propose", "steward-set", "0", "{address}"], "steward", 2, "organisation 0 does not exist"),
    (["attest", "--digest", "{digest}", "--service", "{service}", "--type", "sbom", "--document", "{dir}"], "registrar", 2, "{dir}"),
    (["attest", "--digest", "{digest}", "--service", "{service}", "--type", "bad type", "--document", "{garbage}"],
     "registrar", 2, "bad type"),
    (["attest", "--digest", "{digest}", "--service", "{service}", "--type", "sbom", "--document", "{garbage}"],
     "outsider", 3, "is not an ATTESTOR of sbom"),
    (["policy", "show", "", ENV], KEYLESS, 2, "service"),
    (["policy", "show", "s", "x" * 65], KEYLESS, 2, "environment"),
    # ------------------------------------------------------------------ register, revoke
    *[(["register", "--digest", d, "--service", "s", "--version", "1"], "registrar", 2, "digest") for d in BAD_DIGESTS],
    (["register", "{missing}", "--service", "s", "--version", "1"], "registrar", 2, "{missing}"),
    (["register", "{fifo}", "--service", "s", "--version", "1"], "registrar", 2, "{fifo}"),
    (["register", "--digest", "{new_digest}", "--service", "", "--version", "1"], "registrar", 2, "service"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", ""], "registrar", 2, "version"),
    (["register", "--digest", "{new_digest}"], "registrar", 2, "--service"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1", "--commit", "xyz"], "registrar", 2, "xyz"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1", "--committed-at", "-1"], "registrar", 2, "-1"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1", "--committed-at", "soon"], "registrar", 2, "soon"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1", "--provenance", "{missing}"], "registrar", 2, "{missing}"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1", "--sbom", "{dir}"], "registrar", 2, "{dir}"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1"], "outsider", 3, "REGISTRAR"),
    (["revoke", "--digest", "sha256:xyz", "--service", "s", "--reason", "r"], "registrar", 2, "digest"),
    (["revoke", "--digest", "{digest}", "--service", "", "--reason", "r"], "registrar", 2, "service"),
    (["revoke", "--digest", "{new_digest}", "--service", "{service}", "--reason", "r"], "registrar", 3, "not registered"),
    # ------------------------------------------------------------------ votes
    (["approve", "--digest", "sha256:xyz", "--service", "{service}", "--env", ENV], "approver", 2, "digest"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ""], "approver", 2, "environment"),
    (["approve", "{dir}", "--digest", "{digest}", "--service", "{service}", "--env", ENV], "approver", 2, "not both"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only"], "approver", 2, "--out"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only", "--out", "{dir}"], "approver", 2, "{dir}"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only", "--out", "{nodir}"], "approver", 2, "{nodir}"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only", "--out", "{fresh}",
      "--valid-for", "0"], "approver", 2, "--valid-for"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only", "--out", "{fresh}",
      "--valid-for", "never"], "approver", 2, "never"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only", "--out", "{fresh}"],
     KEYLESS, 2, "key"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--out", "{fresh}"], "approver", 2, "--sign-only"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--valid-for", "1h"], "approver", 2, "--sign-only"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--sign-only", "--out", "{fresh}",
      "--comment", "c"], "approver", 2, "--comment"),
    (["approve", "--digest", "{digest}", "--service", "{service}", "--env", ENV], "registrar", 3, "APPROVER"),
    (["approvals", "submit", "{missing}"], "outsider", 2, "{missing}"),
    (["approvals", "submit", "{dir}"], "outsider", 2, "{dir}"),
    (["approvals", "submit", "{binary}"], "outsider", 2, "{binary}"),
    (["approvals", "submit", "{garbage}"], "outsider", 2, "{garbage}"),
    (["approvals", "submit", "{list}"], "outsider", 2, "{list}"),
    (["approvals", "submit", "{obj}"], "outsider", 2, "{obj}"),
    (["approvals", "submit", "{vote_decision_7}"], "outsider", 2, "decision"),
    (["approvals", "submit", "{vote_expired}"], "outsider", 3, "expired"),
    (["approvals", "submit", "{vote_bad_signature}"], "outsider", 2, "signature"),
    (["approvals", "submit", "{vote_bad_signer}"], "outsider", 2, "signer"),
    (["approvals", "submit", "{vote_bad_digest}"], "outsider", 2, "digest"),
    (["approvals", "submit", "{vote_bad_nonce}"], "outsider", 2, "nonce"),
    (["approvals", "submit", "{vote_forged}"], "outsider", 3, "does not verify"),
    (["reject", "--digest", "sha256:xyz", "--service", "{service}", "--env", ENV, "--reason", "r"], "approver", 2, "digest"),
    (["reject", "--digest", "{digest}", "--service", "", "--env", ENV, "--reason", "r"], "approver", 2, "service"),
    (["withdraw", "--digest", "sha256:xyz", "--service", "{service}", "--env", ENV], "approver", 2, "digest"),
    (["withdraw", "--digest", "{digest}", "--service", "{service}", "--env", ENV], "approver", 3, "no vote"),
    # ------------------------------------------------------------------ gate
    *[(["gate", "--digest", d, "--service", "{service}", "--env", ENV], KEYLESS, 2, "digest") for d in BAD_DIGESTS],
    (["gate", "{missing}", "--service", "{service}", "--env", ENV], KEYLESS, 2, "{missing}"),
    (["gate", "--digest", "{digest}", "--service", "", "--env", ENV], KEYLESS, 2, "service"),
    (["gate", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--deployment", "{binary}"], KEYLESS, 1, "{binary}"),
    (["gate", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--deployment", "{dir}"], KEYLESS, 1, "{dir}"),
    (["gate", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--rpc", "not a url"], KEYLESS, 1, "not a url"),
    # ------------------------------------------------------------------ deploy
    *[(["deploy", step, bad_id, *extra], "deployer", 2, bad_id)
      for step, extra in (("promote", ["--percent", "50"]), ("complete", []), ("fail", ["--reason", "r"]),
                          ("rollback", ["--reason", "r"]))
      for bad_id in ("0", "-1", "abc")],
    *[(["deploy", step, "999999", *extra], "deployer", 2, "999999 does not exist")
      for step, extra in (("promote", ["--percent", "50"]), ("complete", []), ("fail", ["--reason", "r"]),
                          ("rollback", ["--reason", "r"]))],
    (["deploy", "promote", "{deployment}", "--percent", "0"], "deployer", 2, "percent"),
    (["deploy", "promote", "{deployment}", "--percent", "101"], "deployer", 2, "percent"),
    (["deploy", "start", "--digest", "sha256:xyz", "--service", "{service}", "--env", ENV], "deployer", 2, "digest"),
    (["deploy", "start", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--percent", "0"], "deployer", 2, "percent"),
    (["deploy", "start", "{dir}", "--service", "{service}", "--env", ENV], "deployer", 3, "not registered"),
    (["deploy", "complete", "{deployment}"], "outsider", 3, "DEPLOYER"),
    # ------------------------------------------------------------------ incidents
    (["incident", "open", "--service", "", "--env", ENV, "--severity", "2", "--title", "t"], "responder", 2, "service"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "0", "--title", "t"], "responder", 2, "severity"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "9", "--title", "t"], "responder", 2, "severity"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", " "], "responder", 2, "title"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--suspect", "0"], "responder", 2, "'0'"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--suspect", "999999"],
     "responder", 2, "999999"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--details", "{missing}"],
     "responder", 2, "{missing}"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--details", "{dir}"],
     "responder", 2, "{dir}"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--auto-suspect",
      "--deps", "{garbage}"], "responder", 2, "{garbage}"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--auto-suspect",
      "--deps", "{binary}"], "responder", 2, "{binary}"),
    (["incident", "open", "--service", "s", "--env", ENV, "--severity", "2", "--title", "t", "--auto-suspect",
      "--db", "{dir}"], "responder", 2, "{dir}"),
    *[(["incident", step, bad_id], "responder", 2, bad_id) for step in ("ack", "mitigate", "resolve")
      for bad_id in ("0", "abc")],
    *[(["incident", step, "999999"], "responder", 2, "999999 does not exist") for step in ("ack", "mitigate", "resolve")],
    (["incident", "mitigate", "{incident}", "--rollback", "999999"], "responder", 2, "999999"),
    (["incident", "resolve", "{incident}", "--postmortem", "{missing}"], "responder", 2, "{missing}"),
    (["incident", "resolve", "{incident}", "--postmortem", "{dir}"], "responder", 2, "{dir}"),
    (["incident", "ack", "{incident}"], "outsider", 3, "RESPONDER"),
    (["incident", "suspects", "999999"], KEYLESS, 2, "999999"),
    (["incident", "suspects", "0"], KEYLESS, 2, "'0'"),
    (["incident", "suspects", "{incident}", "--deps", "{missing}"], KEYLESS, 2, "{missing}"),
    (["incident", "suspects", "{incident}", "--deps", "{binary}"], KEYLESS, 2, "{binary}"),
    (["incident", "suspects", "{incident}", "--deps", "{list}"], KEYLESS, 2, "{list}"),
    (["incident", "suspects", "{incident}", "--window", "ages"], KEYLESS, 2, "ages"),
    (["incident", "suspects", "{incident}", "--db", "{garbage}"], KEYLESS, 1, "{garbage}"),
    # ------------------------------------------------------------------ canary
    *[(["canary", "judge", "--baseline", f"{{{name}}}", "--canary", "{samples}"], KEYLESS, 2, f"{{{name}}}")
      for name in ("missing", "dir", "binary", "garbage", "list")],
    *[(["canary", "judge", "--baseline", "{samples}", "--canary", "{samples}", "--config", f"{{{name}}}"], KEYLESS, 2,
       f"{{{name}}}") for name in ("missing", "dir", "binary", "garbage", "list", "obj_yaml")],
    *[(["canary", "verify", f"{{{name}}}", "--offline"], KEYLESS, 2, f"{{{name}}}")
      for name in ("missing", "dir", "binary", "garbage", "list", "obj")],
    (["canary", "verify", "{garbage}"], KEYLESS, 2, "{garbage}"),
    (["canary", "record", "999999", "--score", "50", "--verdict", "pass", "--report", "{samples}"], "deployer", 2,
     "999999 does not exist"),
    (["canary", "record", "0", "--score", "50", "--verdict", "pass", "--report", "{samples}"], "deployer", 2, "'0'"),
    (["canary", "record", "{deployment}", "--score", "500", "--verdict", "pass", "--report", "{samples}"], "deployer", 2, "500"),
    (["canary", "record", "{deployment}", "--score", "nan", "--verdict", "pass", "--report", "{samples}"], "deployer", 2, "nan"),
    (["canary", "record", "{deployment}", "--score", "50", "--verdict", "great", "--report", "{samples}"], "deployer", 2, "great"),
    (["canary", "record", "{deployment}", "--score", "50", "--verdict", "pass", "--report", "{missing}"], "deployer", 2, "{missing}"),
    (["canary", "record", "{deployment}", "--score", "50", "--verdict", "pass", "--report", "{dir}"], "deployer", 2, "{dir}"),
    # ------------------------------------------------------------------ rollout
    *[(["rollout", "run", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--interval", "1s",
        "--analysis", f"{{{name}}}", "--state-dir", "{state_dir}"], "deployer", 2, f"{{{name}}}")
      for name in ("missing", "dir", "binary", "garbage", "list", "obj")],
    (["rollout", "run", "--digest", "sha256:xyz", "--service", "{service}", "--env", ENV, "--interval", "1s",
      "--analysis", "{analysis}", "--state-dir", "{state_dir}"], "deployer", 2, "digest"),
    (["rollout", "run", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--interval", "0",
      "--analysis", "{analysis}", "--state-dir", "{state_dir}"], "deployer", 2, "--interval"),
    (["rollout", "run", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--interval", "1s",
      "--steps", "50,10", "--analysis", "{analysis}", "--state-dir", "{state_dir}"], "deployer", 2, "50,10"),
    (["rollout", "run", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--interval", "1s",
      "--steps", "x", "--analysis", "{analysis}", "--state-dir", "{state_dir}"], "deployer", 2, "x"),
    (["rollout", "run", "--digest", "{digest}", "--service", "{service}", "--env", ENV, "--interval", "1s",
      "--incident-severity", "9", "--analysis", "{analysis}", "--state-dir", "{state_dir}"], "deployer", 2, "severity"),
    (["rollout", "status", "999999", "--state-dir", "{state_dir}"], KEYLESS, 2, "999999"),
    (["rollout", "status", "--state-dir", "{garbage}"], KEYLESS, 2, "{garbage}"),
    (["rollout", "status", "7", "--state-dir", "{bad_state_dir}"], KEYLESS, 1, "7.json"),
    (["rollout", "status", "8", "--state-dir", "{bad_state_dir}"], KEYLESS, 1, "8.json"),
    (["rollout", "status", "--state-dir", "{bad_state_dir}"], KEYLESS, 1, "{bad_state_dir}"),
    (["rollout", "resume", "999999", "--state-dir", "{state_dir}"], "deployer", 2, "999999"),
    (["rollout", "abort", "999999", "--reason", "r", "--state-dir", "{state_dir}"], "deployer", 2, "999999"),
    (["rollout", "abort", "7", "--reason", "r", "--state-dir", "{bad_state_dir}"], "deployer", 1, "7.json"),
    (["rollout", "resume", "0", "--state-dir", "{state_dir}"], "deployer", 2, "'0'"),
    # ------------------------------------------------------------------ compliance
    (["status", "", ENV], KEYLESS, 2, "service"),
    (["status", "{service}", "bad env"], KEYLESS, 2, "bad env"),
    (["history", "--digest", "sha256:xyz"], KEYLESS, 2, "xyz"),
    (["history", "--approver", "0x123"], KEYLESS, 2, "0x123"),
    (["history", "--since", "yesterday"], KEYLESS, 2, "yesterday"),
    (["history", "--until", "2024-13-45"], KEYLESS, 2, "2024-13-45"),
    (["history", "--kind", "bogus"], KEYLESS, 2, "bogus"),
    (["history", "--org", ""], KEYLESS, 2, "org"),
    (["history", "--db", "{dir}"], KEYLESS, 2, "{dir}"),
    (["history", "--db", "{garbage}"], KEYLESS, 1, "{garbage}"),
    (["history", "--db", "{binary}"], KEYLESS, 1, "{binary}"),
    (["index", "sync", "--db", "{dir}"], KEYLESS, 2, "{dir}"),
    (["index", "sync", "--db", "{garbage}"], KEYLESS, 1, "{garbage}"),
    (["index", "sync", "--confirmations", "-1"], KEYLESS, 2, "confirmations"),
    (["trace", "--digest", "sha256:xyz", "--service", "{service}"], KEYLESS, 2, "digest"),
    (["trace", "--digest", "{digest}", "--service", ""], KEYLESS, 2, "service"),
    (["trace", "{missing}", "--service", "{service}"], KEYLESS, 2, "{missing}"),
    (["trace", "--digest", "{new_digest}", "--service", "{service}"], KEYLESS, 2, "not registered"),
    (["trace", "--digest", "{digest}", "--service", "{service}", "--db", "{dir}"], KEYLESS, 2, "{dir}"),
    (["audit", "--service", ""], KEYLESS, 2, "service"),
    (["audit", "--env", "x" * 65], KEYLESS, 2, "environment"),
    (["audit", "--db", "{garbage}"], KEYLESS, 1, "{garbage}"),
    (["export", "--format", "csv", "--out", "{dir}"], KEYLESS, 2, "{dir}"),
    (["export", "--format", "csv", "--out", "{nodir}"], KEYLESS, 2, "{nodir}"),
    (["export", "--format", "xml", "--out", "{fresh}"], KEYLESS, 2, "xml"),
    (["export", "--format", "csv", "--out", "{fresh}", "--digest", "sha256:xyz"], KEYLESS, 2, "xyz"),
    (["export", "--format", "csv", "--out", "{fresh}", "--db", "{garbage}"], KEYLESS, 1, "{garbage}"),
    *[(["verify-export", f"{{{name}}}"], KEYLESS, 2, f"{{{name}}}") for name in ("missing", "dir", "binary")],
    (["verify-export", "{samples}", "--batch-size", "0"], KEYLESS, 2, "'0'"),
    (["report", "--out", "{dir}"], KEYLESS, 2, "{dir}"),
    (["report", "--out", "{nodir}"], KEYLESS, 2, "{nodir}"),
    (["report", "--out", "{fresh}", "--since", "soon"], KEYLESS, 2, "soon"),
    (["report", "--out", "{fresh}", "--since", "12"], KEYLESS, 2, "block number"),
    (["report", "--out", "{fresh}", "--env", "bad env"], KEYLESS, 2, "bad env"),
    (["report", "--out", "{fresh}", "--prod-env", ","], KEYLESS, 2, "--prod-env"),
    (["report", "--out", "{fresh}", "--db", "{garbage}"], KEYLESS, 1, "{garbage}"),
]

# Cases run as `nobody`, for files root could always read: {secret} cannot be read, {locked} is a directory
# nobody may not write in. The address book is a readable copy in the case's own directory.
NOBODY_CASES = [
    (["register", "{secret}", "--service", "s", "--version", "1"], "registrar", 2, "{secret}"),
    (["register", "--digest", "{new_digest}", "--service", "s", "--version", "1", "--provenance", "{secret}"], "registrar", 2, "{secret}"),
    (["register", "{secret_dir}", "--service", "s", "--version", "1"], "registrar", 2, "{secret_dir}"),
    (["gate", "{secret}", "--service", "s", "--env", ENV], KEYLESS, 2, "{secret}"),
    (["gate", "--digest", "{new_digest}", "--service", "s", "--env", ENV, "--deployment", "{secret}"], KEYLESS, 1, "{secret}"),
    (["member", "list", "--deployment", "{secret}"], KEYLESS, 1, "{secret}"),
    (["org", "add", "x", "--steward", "{address}", "--keystore", "{secret}"], KEYLESS, 2, "{secret}"),
    (["suite", "deploy", "--out", "{fresh}", "--bootstrap", "{secret}"], "admin", 2, "{secret}"),
    (["approvals", "submit", "{secret}"], "outsider", 2, "{secret}"),
    (["approve", "--digest", "{new_digest}", "--service", "s", "--env", ENV, "--sign-only", "--out", "{locked}/vote.json"],
     "approver", 2, "{locked}/vote.json"),
    (["suite", "deploy", "--out", "{locked}/book.json", "--bootstrap", "{bootstrap}"], "admin", 2, "{locked}/book.json"),
    (["incident", "resolve", "1", "--postmortem", "{secret}"], "responder", 2, "{secret}"),
    (["canary", "judge", "--baseline", "{secret}", "--canary", "{secret}"], KEYLESS, 2, "{secret}"),
    (["canary", "verify", "{secret}", "--offline"], KEYLESS, 2, "{secret}"),
    (["canary", "record", "1", "--score", "50", "--verdict", "pass", "--report", "{secret}"], "deployer", 2, "{secret}"),
    (["incident", "suspects", "1", "--deps", "{secret}", "--no-sync"], KEYLESS, 2, "{secret}"),
    (["rollout", "run", "--digest", "{new_digest}", "--service", "s", "--env", ENV, "--interval", "1s",
      "--analysis", "{secret}"], "deployer", 2, "{secret}"),
    (["rollout", "status", "--state-dir", "{locked}"], KEYLESS, 0, None),  # reading an empty directory is fine
    (["rollout", "run", "--digest", "{new_digest}", "--service", "s", "--env", ENV, "--interval", "1s",
      "--analysis", "{analysis}", "--state-dir", "{locked}/rollouts"], "deployer", 2, "{locked}/rollouts"),
    (["history", "--db", "{locked}/index.sqlite"], KEYLESS, 2, "{locked}/index.sqlite"),
    (["history", "--db", "{secret}"], KEYLESS, 2, "{secret}"),
    (["index", "sync", "--db", "{locked}/index.sqlite"], KEYLESS, 2, "{locked}/index.sqlite"),
    (["export", "--format", "jsonl", "--out", "{locked}/export.jsonl"], KEYLESS, 2, "{locked}/export.jsonl"),
    (["report", "--out", "{locked}/report.html"], KEYLESS, 2, "{locked}/report.html"),
    (["verify-export", "{secret}"], KEYLESS, 2, "{secret}"),
    (["network", "besu-config", "--out", "{locked}/net"], KEYLESS, 2, "{locked}"),
    (["network", "besu-config", "--out", "{secret_dir}/net"], KEYLESS, 2, "{secret_dir}/net"),
]


def _case_id(case) -> str:
    argv, part, code, _ = case
    return " ".join(w if w else "''" for w in argv)[:90] + f" [{part or '-'}->{code}]"


def _vote(dn, digest: str, service: str, **change) -> dict:
    """A good signed vote as JSON, with `change` applied."""
    return {**asdict(dn.ledger("approver", 2).sign_approval(digest, service, ENV)), **change}


@pytest.fixture(scope="module")
def bad(dn, tmp_path_factory) -> dict:
    """The placeholders of CASES: bad files, and real ids and digests on the devnet."""
    root = tmp_path_factory.mktemp("bad")
    service = unique("bad")
    digest = dn.register(service)
    dn.set_policy(service)
    deployer = dn.ledger("deployer")
    live = dn.deployed(unique("bad"))
    responder = dn.ledger("responder")
    incident = responder.open_incident(service, ENV, 3, "a bad-inputs test incident", [live])
    running_service = unique("bad")
    running_digest = dn.release(running_service)
    deployment = deployer.start_deployment(running_digest, running_service, ENV, 10)

    def write(name: str, content) -> str:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    (root / "a-dir").mkdir()
    os.mkfifo(root / "fifo")
    bad_state = root / "bad-state"
    bad_state.mkdir()
    (bad_state / "7.json").write_bytes(b"\xff\xfe not json")
    (bad_state / "8.json").write_text("[]")
    (root / "state").mkdir()
    good = _vote(dn, digest, service)
    return {
        "root": str(root), "missing": str(root / "absent.json"), "dir": str(root / "a-dir"), "fifo": str(root / "fifo"),
        "binary": write("binary.json", b"\xff\xfe\x00\x80 not text"), "garbage": write("garbage.json", "{not json"),
        "list": write("list.json", "[]"), "obj": write("obj.json", "{}"),
        "obj_yaml": write("obj.yaml", "- a\n- b\n"),
        "samples": write("samples.csv", "latency,1\nlatency,2\n"),
        "analysis": write("analysis.json", json.dumps(ANALYSIS)),
        "state_dir": str(root / "state"), "bad_state_dir": str(bad_state),
        "bootstrap": write("bootstrap.json", json.dumps(BOOTSTRAP)),
        "bootstrap_k3": write("bootstrap-k3.json", json.dumps({**BOOTSTRAP, "organisations_needed": 3})),
        "bootstrap_typo": write("bootstrap-typo.json", json.dumps({**BOOTSTRAP, "stewards": []})),
        "proposal": str(dn.ledger("steward", 0).set_policy(unique("bad"), ENV, threshold=1).id),
        "address": new_address(), "service": service, "digest": digest, "new_digest": digest_for(unique()),
        "deployment": str(deployment), "incident": str(incident),
        "vote_decision_7": write("vote7.json", json.dumps(_vote(dn, digest, service, decision=7))),
        "vote_expired": write("vote-expired.json", json.dumps(asdict(dn.ledger("approver", 2).sign_approval(
            digest, service, ENV, deadline=int(time.time()) - 60)))),
        "vote_bad_signature": write("vote-sig.json", json.dumps({**good, "signature": "0xnothex"})),
        "vote_bad_signer": write("vote-signer.json", json.dumps({**good, "signer": "nobody"})),
        "vote_bad_digest": write("vote-digest.json", json.dumps({**good, "digest": "sha256:1"})),
        "vote_bad_nonce": write("vote-nonce.json", json.dumps({**good, "nonce": "many"})),
        "vote_forged": write("vote-forged.json", json.dumps({**good, "signer": dn.address("approver", 0)})),
    }


def _expand(words, values: dict) -> list[str]:
    return [str(w).format(**values) for w in words]


def _placeholders(bad: dict) -> dict:
    """The fixture's values, with {nodir} and {fresh} new for each case: a case that wrongly creates
    one must not make the next case pass."""
    fresh = Path(bad["root"]) / unique("case")
    return {**bad, "nodir": str(fresh / "no-such-dir" / "out.json"), "fresh": str(fresh.with_suffix(".json"))}


def check(result: Result, code: int, needle: str | None) -> None:
    """The contract every failure keeps: the exit code, a sentence naming the culprit, no internal error, and
    (with --json) the one error document."""
    assert "internal error" not in result.err, result.err
    if code == 0:
        assert result.code == 0, result.err
        return
    fails(result, code, *([needle] if needle else []))


def run_case(dn, argv, part, env=None, cwd=None, user=None) -> Result:
    env = clean_env(**(env or {}))
    if part is not None:
        env["SHIPLEDGER_PRIVATE_KEY"] = dn.key(part)
    prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] if user else []
    proc = subprocess.run([*prefix, *CLI, *argv], cwd=cwd or dn.workdir, env=env, capture_output=True, text=True,
                          timeout=120)
    assert_no_traceback(proc.stderr)
    assert_no_traceback(proc.stdout)
    return Result(proc.returncode, proc.stdout, proc.stderr, "--json" in argv)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_input_is_a_sentence(dn, bad, case):
    words, part, code, needle = case
    values = _placeholders(bad)
    argv = [*_expand(words, values), "--json"]
    check(run_case(dn, argv, part), code, needle and needle.format(**values))


@pytest.fixture(scope="module")
def nobody_dir(dn):
    """A directory `nobody` may work in, with a readable copy of the address book, an unreadable file and a
    directory it may not write in. Outside pytest's tmp_path, which only root may enter."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the CLI as nobody")
    root = Path(tempfile.mkdtemp(prefix="shipledger-nobody-"))
    try:
        root.chmod(0o777)
        (root / "deployments").mkdir(mode=0o755)
        shutil.copy(dn.book, root / "deployments" / "devnet.json")
        (root / "deployments" / "devnet.json").chmod(0o644)
        secret = root / "secret.json"
        secret.write_text("{}")
        secret.chmod(0o000)
        locked = root / "locked"
        locked.mkdir(mode=0o755)
        secret_dir = root / "secret-dir"
        secret_dir.mkdir(mode=0o700)
        (secret_dir / "app.bin").write_text("x")
        analysis = root / "analysis.json"
        analysis.write_text(json.dumps(ANALYSIS))
        analysis.chmod(0o644)
        bootstrap = root / "bootstrap.json"
        bootstrap.write_text(json.dumps(BOOTSTRAP))
        bootstrap.chmod(0o644)
        yield {"root": root, "secret": str(secret), "secret_dir": str(secret_dir), "locked": str(locked), "analysis": str(analysis),
               "new_digest": digest_for(unique()), "address": new_address(), "bootstrap": str(bootstrap),
               "fresh": str(root / "fresh-book.json")}
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("case", NOBODY_CASES, ids=_case_id)
def test_unreadable_or_unwritable_path_is_a_sentence(dn, nobody_dir, case):
    words, part, code, needle = case
    argv = [*_expand(words, nobody_dir), "--json"]
    result = run_case(dn, argv, part, env={"HOME": str(nobody_dir["root"])}, cwd=nobody_dir["root"], user="nobody")
    check(result, code, needle and needle.format(**nobody_dir))


def test_every_command_is_in_the_table():
    """A new command joins the sweep: every top-level command and subcommand appears in a case."""
    from shipledger.cli import build_parser

    parser = build_parser()
    wanted = set()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        children = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        wanted |= {f"{name} {child}" for child in children[0].choices} if children else {name}
    assert set(COMMANDS) <= {w.split()[0] for w in wanted}
    covered = {" ".join(words[:2]) for words, *_ in CASES + NOBODY_CASES if words} | {
        words[0] for words, *_ in CASES + NOBODY_CASES if words}
    assert wanted - covered - {"devnet down"} == set()


def test_devnet_down_with_a_broken_state_file(tmp_path):
    state = tmp_path / ".shipledger" / "devnet"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}")
    proc = subprocess.run([*CLI, "devnet", "down", "--json"], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=60)
    result = Result(proc.returncode, proc.stdout, proc.stderr, True)
    check(result, 1, "state.json")


def test_errors_without_json_print_nothing_on_stdout(dn, bad):
    """The human form of the same failures: one sentence on stderr, stdout empty."""
    for words, part, code, needle in CASES[::25]:
        values = _placeholders(bad)
        result = run_case(dn, _expand(words, values), part)
        check(result, code, needle and needle.format(**values))


def test_error_document_names_the_error(dn, tmp_path):
    """The code is a stable machine name: the contract error's, or the class of ours."""
    unknown = run_case(dn, ["deploy", "complete", "999999", "--json"], "deployer")
    assert unknown.code == 2 and unknown.json() == {"error": {
        "code": "UnknownDeployment", "message": "deployment 999999 does not exist", "exit": 2}}
    usage = run_case(dn, ["deploy", "complete", "--json"], "deployer")
    assert usage.code == 2 and usage.json()["error"]["code"] == "UsageError"
    assert "the following arguments are required: id" in usage.json()["error"]["message"]
    missing = run_case(dn, ["canary", "judge", "--baseline", str(tmp_path / "nope.csv"), "--canary", str(tmp_path / "nope.csv"), "--json"], None)
    assert missing.code == 2 and missing.json()["error"]["code"] == "PathError"


@pytest.mark.parametrize("keystore", [{}, {"crypto": {}}, {"crypto": {"kdf": "rot13"}, "version": 3}])
def test_malformed_keystore_with_a_password_is_usage_error(dn, tmp_path, keystore):
    path = tmp_path / "key.json"
    path.write_text(json.dumps(keystore))
    result = run_case(dn, ["org", "add", unique("org"), "--steward", new_address(), "--keystore", str(path), "--json"], None,
                      env={"SHIPLEDGER_KEYSTORE_PASSWORD": "pw"})
    check(result, 2, str(path))


def test_second_reject_says_the_veto_stands_and_sends_nothing(dn):
    service = unique("veto")
    digest = dn.register(service)
    dn.set_policy(service)
    args = ["reject", "--digest", digest, "--service", service, "--env", ENV]
    first = run_case(dn, [*args, "--reason", "x", "--json"], "approver")
    assert first.code == 0 and first.json()["recorded"] is True
    nonce = dn.nonce("approver")
    again = run_case(dn, [*args, "--reason", "y"], "approver")
    assert again.code == 0 and again.out == ""
    assert "already stands" in again.err and "'y' is not recorded" in again.err
    assert f"{dn.address('approver')} rejected" not in again.err
    assert dn.nonce("approver") == nonce
    assert [e.fields["reason"] for e in dn.history(service, "rejected")] == ["x"]


def test_signature_that_expires_before_it_is_mined_says_so(dn, tmp_path):
    """Valid when sent (the estimate passes), expired in the block that mines it: the reason is named, not
    a generic revert."""
    from shipledger.network.devnet import rpc_call

    service = unique("late")
    digest = dn.register(service)
    dn.set_policy(service)
    latest = int(rpc_call(dn.rpc_url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    deadline = max(int(time.time()), latest) + 30
    vote = tmp_path / "vote.json"
    vote.write_text(json.dumps(asdict(dn.ledger("approver", 2).sign_approval(digest, service, ENV, deadline=deadline))))
    rpc_call(dn.rpc_url, "evm_setAutomine", [False])
    try:
        proc = subprocess.Popen([*CLI, "approvals", "submit", str(vote), "--json"], cwd=dn.workdir, text=True,
                                env=clean_env(SHIPLEDGER_PRIVATE_KEY=dn.key("outsider")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        give_up = time.monotonic() + 30
        while int(rpc_call(dn.rpc_url, "txpool_status")["pending"], 16) < 1:
            assert proc.poll() is None and time.monotonic() < give_up, "the submission never reached the pool"
            time.sleep(0.05)
        rpc_call(dn.rpc_url, "evm_setNextBlockTimestamp", [deadline + 5])
        rpc_call(dn.rpc_url, "evm_mine")
    finally:
        rpc_call(dn.rpc_url, "evm_setAutomine", [True])
    out, err = proc.communicate(timeout=60)
    result = Result(proc.returncode, out, err, True)
    # v2: the registry skips the vote (the batch is not reverted), and the CLI names the reason
    check(result, 3, f"skipped {vote}")
    assert "expired, its deadline has passed" in result.err and result.json()["error"]["code"] == "NothingRecorded"

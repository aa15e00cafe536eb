// The web app's wallet code: sign a vote on the Inbox, approve or cancel a governance proposal on the
// Governance page, each with the approver's own browser wallet (the server holds no key).
//
// Bundled with viem by scripts/build_wallet.py into shipledger/server/static/wallet.js (committed, so
// pip users need no node). The page is server-rendered; this script only adds buttons and messages,
// and writes every value with textContent (never as HTML). It talks to the wallet (EIP-1193) and to
// this server (/v1/relay, /v1/gate, /v1/proposals) only: the page's CSP allows no other origin.

import { encodeFunctionData, numberToHex, parseSignature, recoverTypedDataAddress, serializeSignature } from "viem";

const WALLET_TIMEOUT_MS = 120_000; // a wallet that has not answered by then never will
const DISCOVERY_MS = 400; // how long EIP-6963 announcements are awaited before window.ethereum is used
const WEEK = 7 * 24 * 3600; // a vote's validity, as `shipledger approve` signs it
const DECISIONS = { approve: 1, reject: 2 };

const VOTE_TYPES = {
  EIP712Domain: [
    { name: "name", type: "string" },
    { name: "version", type: "string" },
    { name: "chainId", type: "uint256" },
    { name: "verifyingContract", type: "address" },
  ],
  Vote: [
    { name: "signer", type: "address" },
    { name: "digest", type: "bytes32" },
    { name: "service", type: "string" },
    { name: "environment", type: "string" },
    { name: "decision", type: "uint8" },
    { name: "nonce", type: "uint256" },
    { name: "signedAt", type: "uint64" },
    { name: "deadline", type: "uint64" },
  ],
};

const VOTE_BY_SIG_ABI = [{
  type: "function", name: "voteBySig", stateMutability: "nonpayable", outputs: [{ type: "uint256", name: "recorded" }],
  inputs: [{
    type: "tuple[]", name: "votes", components: [
      { name: "signer", type: "address" }, { name: "digest", type: "bytes32" }, { name: "service", type: "string" },
      { name: "environment", type: "string" }, { name: "decision", type: "uint8" }, { name: "nonce", type: "uint256" },
      { name: "signedAt", type: "uint64" }, { name: "deadline", type: "uint64" }, { name: "signature", type: "bytes" },
    ],
  }],
}];
const GOVERNANCE_ABI = ["approveProposal", "cancelProposal"].map((name) => ({
  type: "function", name, stateMutability: "nonpayable", outputs: [], inputs: [{ type: "uint256", name: "id" }],
}));

const meta = (name) => document.querySelector(`meta[name="shipledger-${name}"]`)?.content || "";

// ------------------------------------------------------------------ errors the user reads

class Refused extends Error {}
class TimedOut extends Error {}

function errorCode(err) {
  return err?.code ?? err?.cause?.code ?? err?.data?.originalError?.code;
}

function sentence(err) {
  if (err instanceof Refused || errorCode(err) === 4001) return "You refused in the wallet: nothing was signed and nothing was sent.";
  if (err instanceof TimedOut) return err.message;
  return `The wallet could not do it: ${err?.message || err}`;
}

// ------------------------------------------------------------------ the wallet (EIP-6963, then window.ethereum)

const announced = [];
window.addEventListener("eip6963:announceProvider", (event) => {
  const detail = event.detail;
  if (detail?.provider && detail.info && !announced.some((d) => d.info.uuid === detail.info.uuid)) announced.push(detail);
});
window.dispatchEvent(new Event("eip6963:requestProvider"));

async function wallet() {
  if (!announced.length) await new Promise((resolve) => setTimeout(resolve, DISCOVERY_MS));
  const choice = document.querySelector("[data-wallet-choice]");
  const picked = announced.find((d) => d.info.uuid === choice?.value) || announced[0];
  if (picked) return { name: String(picked.info.name || "wallet"), provider: picked.provider };
  if (window.ethereum) return { name: "browser wallet", provider: window.ethereum };
  throw new Error("no browser wallet found: install one (MetaMask, Rabby, Frame) or use `shipledger approve --sign-only`.");
}

/** One EIP-1193 request that gives up after WALLET_TIMEOUT_MS. */
function ask(provider, method, params) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TimedOut(
      `The wallet did not answer ${method} within ${WALLET_TIMEOUT_MS / 1000} s: nothing was sent. Open the wallet and try again.`)),
    WALLET_TIMEOUT_MS);
  });
  return Promise.race([provider.request(params === undefined ? { method } : { method, params }), timeout])
    .finally(() => clearTimeout(timer));
}

async function connect() {
  const { name, provider } = await wallet();
  const [account] = await ask(provider, "eth_requestAccounts");
  if (!account) throw new Error("the wallet shared no account");
  await useChain(provider);
  return { name, provider, account };
}

/** Put the wallet on the suite's chain: wallets refuse typed data whose domain names another chain. */
async function useChain(provider) {
  const want = BigInt(meta("chain-id"));
  if (BigInt(await ask(provider, "eth_chainId")) === want) return;
  const chainId = numberToHex(want);
  try {
    await ask(provider, "wallet_switchEthereumChain", [{ chainId }]);
  } catch (err) {
    if (errorCode(err) !== 4902) throw err;
    const rpc = meta("rpc-url");
    if (!rpc) throw new Error(`your wallet does not know chain ${want}: add it to the wallet, then try again`);
    await ask(provider, "wallet_addEthereumChain", [{
      chainId, chainName: `shipledger chain ${want}`, rpcUrls: [rpc],
      nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    }]);
  }
  const now = BigInt(await ask(provider, "eth_chainId"));
  if (now !== want) throw new Error(`the wallet stayed on chain ${now}, not the suite's chain ${want}`);
}

async function receipt(provider, hash) {
  const deadline = Date.now() + WALLET_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const found = await ask(provider, "eth_getTransactionReceipt", [hash]);
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new TimedOut(`transaction ${hash} was not mined within ${WALLET_TIMEOUT_MS / 1000} s`);
}

// ------------------------------------------------------------------ the panel: what will be done, then the outcome

const panel = document.querySelector("[data-wallet-panel]");

function say(text, kind = "info") {
  const line = panel.querySelector(".wallet-message");
  line.textContent = text;
  line.className = `wallet-message ${kind}`;
}

function element(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** Show `lines` (what exactly will be signed or sent) and wait for the user's Sign or Cancel. */
function confirm(title, lines, action) {
  const box = panel.querySelector(".wallet-confirm");
  box.replaceChildren(element("h2", title), ...lines.map(([k, v]) => {
    const p = element("p");
    p.append(element("strong", `${k}: `), element("span", v));
    return p;
  }));
  const go = element("button", action, { type: "button", "data-confirm": "yes" });
  const stop = element("button", "Cancel", { type: "button", "data-confirm": "no" });
  box.append(go, stop);
  box.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => () => { box.hidden = true; box.replaceChildren(); resolve(answer); };
    go.addEventListener("click", done(true));
    stop.addEventListener("click", done(false));
  });
}

const utc = (seconds) => new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");

function walletChooser() {
  const line = panel.querySelector(".wallet-which");
  const show = () => {
    if (announced.length > 1) {
      const select = element("select", undefined, { "data-wallet-choice": "" });
      for (const d of announced) select.append(element("option", String(d.info.name), { value: String(d.info.uuid) }));
      line.replaceChildren(element("span", "Wallet: "), select);
    } else {
      line.textContent = announced.length ? `Wallet: ${announced[0].info.name}`
        : window.ethereum ? "Wallet: browser wallet (window.ethereum)" : "No browser wallet found.";
    }
  };
  setTimeout(show, DISCOVERY_MS);
}

// ------------------------------------------------------------------ the Inbox: sign a vote, relay it

/** The chain's time: the newest block's timestamp, from the wallet's node. A vote signed later than
 * the block that records it is skipped (signed_in_future), and the browser's clock may differ from
 * the chain's; the newest block is never later than the one that will record the vote. */
async function chainNow(provider) {
  const block = await ask(provider, "eth_getBlockByNumber", ["latest", false]);
  return Number(BigInt(block.timestamp));
}

function randomNonce() {
  const words = crypto.getRandomValues(new Uint32Array(4)); // 128 bits: unordered, any unused number
  return words.reduce((n, w) => (n << 32n) | BigInt(w), 0n);
}

async function vote(row, decision) {
  const release = row.dataset;
  let session;
  try {
    say("Asking the wallet for your account…");
    session = await connect();
  } catch (err) {
    return say(sentence(err), "error");
  }
  const { provider, account, name } = session;
  const chainId = Number(meta("chain-id"));
  const registry = meta("registry");
  const ttl = Number(release.ttl || 0);
  let signedAt;
  try {
    signedAt = await chainNow(provider);
  } catch (err) {
    return say(sentence(err), "error");
  }
  const deadline = signedAt + (ttl ? Math.min(ttl, WEEK) : WEEK);
  const nonce = randomNonce();
  const message = {
    signer: account, digest: `0x${release.digest.replace(/^sha256:/, "")}`, service: release.service,
    environment: release.environment, decision: DECISIONS[decision], nonce: nonce.toString(), signedAt, deadline,
  };
  const domain = { name: "shipledger", version: "2", chainId, verifyingContract: registry };
  const ok = await confirm(`${decision === "approve" ? "Approve" : "Reject"} ${release.service} ${release.version}?`, [
    ["Decision", decision === "approve" ? "APPROVE this release" : "REJECT this release (a veto)"],
    ["Artifact", `${release.service} ${release.version}, ${release.digest}`],
    ["Environment", release.environment],
    ["Valid", `from ${utc(signedAt)} until ${utc(deadline)}`],
    ["Signer", `${account} (${name})`],
    ["Ledger", `chain ${chainId}, release registry ${registry}`],
  ], `Sign with ${name}`);
  if (!ok) return say("Cancelled: nothing was signed and nothing was sent.");
  let signature;
  try {
    say("Waiting for your signature in the wallet…");
    const raw = await ask(provider, "eth_signTypedData_v4",
      [account, JSON.stringify({ types: VOTE_TYPES, primaryType: "Vote", domain, message })]);
    const { r, s, yParity } = parseSignature(raw); // some hardware wallets give v = 0/1: the contract wants 27/28
    signature = serializeSignature({ r, s, yParity });
    const { EIP712Domain, ...types } = VOTE_TYPES;
    const by = await recoverTypedDataAddress({ domain, types, primaryType: "Vote", message: { ...message, nonce }, signature });
    if (by.toLowerCase() !== account.toLowerCase()) {
      return say(`The wallet's signature is by ${by}, not ${account}: nothing was sent.`, "error");
    }
  } catch (err) {
    return say(sentence(err), "error");
  }
  const signed = {
    signer: account, digest: release.digest, service: release.service, environment: release.environment,
    decision: DECISIONS[decision], nonce: "NONCE", signed_at: signedAt, deadline, chain_id: chainId, registry, signature,
  };
  const body = JSON.stringify(signed).replace('"NONCE"', nonce.toString()); // a 128-bit number, beyond JSON's doubles
  try {
    say("Signed. Sending it to the ledger…");
    const answer = await fetch("/v1/relay", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const result = await answer.json();
    if (answer.status === 404 && result.error?.code === "RelayOff") {
      await sendVote(provider, account, registry, message, signature);
    } else if (!answer.ok) {
      return say(`The relay refused the vote: ${result.error?.message || answer.status}`, "error");
    } else if (result.skipped.length) {
      return say(`The ledger did not record the vote: ${result.skipped.map((s) => s.reason).join(", ")}`, "error");
    } else {
      say(`Your ${decision === "approve" ? "approval" : "rejection"} is recorded in transaction ${result.tx.tx_hash}.`, "done");
    }
  } catch (err) {
    return say(sentence(err), "error");
  }
  row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  await showGate(row);
}

/** No relay on this server: the wallet sends voteBySig itself (and pays its gas). */
async function sendVote(provider, account, registry, message, signature) {
  const data = encodeFunctionData({
    abi: VOTE_BY_SIG_ABI, functionName: "voteBySig",
    args: [[{ ...message, nonce: BigInt(message.nonce), signedAt: BigInt(message.signedAt), deadline: BigInt(message.deadline), signature }]],
  });
  say("This server relays nothing: confirm the transaction in your wallet…");
  const hash = await ask(provider, "eth_sendTransaction", [{ from: account, to: registry, data }]);
  const mined = await receipt(provider, hash);
  if (mined.status !== "0x1") throw new Error(`transaction ${hash} reverted`);
  say(`Your vote was sent by your wallet in transaction ${hash}.`, "done");
}

async function showGate(row) {
  const cell = row.querySelector(".gate");
  const query = new URLSearchParams({ digest: row.dataset.digest, service: row.dataset.service, environment: row.dataset.environment });
  for (let i = 0; i < 40; i++) { // the server sees a new block within about a second
    const answer = await fetch(`/v1/gate?${query}`);
    if (answer.ok) {
      const gate = await answer.json();
      if (cell) cell.textContent = gate.allowed ? "allowed" : gate.reason.replaceAll("_", " ");
      if (gate.allowed || gate.reason !== cell?.dataset.reason) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// ------------------------------------------------------------------ the Governance page: a steward's transaction

async function govern(row, action) {
  const id = row.dataset.proposalId;
  let session;
  try {
    say("Asking the wallet for your account…");
    session = await connect();
  } catch (err) {
    return say(sentence(err), "error");
  }
  const { provider, account, name } = session;
  const governance = meta("governance");
  const ok = await confirm(`${action === "approve" ? "Approve" : "Cancel"} proposal ${id}?`, [
    ["Action", action === "approve" ? `APPROVE governance proposal ${id} for your organisation` : `CANCEL governance proposal ${id}`],
    ["Proposal", `${row.dataset.kind}: ${row.dataset.change}`],
    ["Sent as", `a transaction from ${account} (${name}) to the Governance contract ${governance} on chain ${meta("chain-id")}; it costs gas`],
  ], `Send with ${name}`);
  if (!ok) return say("Cancelled: nothing was sent.");
  let mined;
  try {
    const data = encodeFunctionData({ abi: GOVERNANCE_ABI, functionName: `${action}Proposal`, args: [BigInt(id)] });
    say("Confirm the transaction in your wallet…");
    const hash = await ask(provider, "eth_sendTransaction", [{ from: account, to: governance, data }]);
    say(`Sent transaction ${hash}; waiting for it to be mined…`);
    mined = await receipt(provider, hash);
    if (mined.status !== "0x1") return say(`Transaction ${hash} reverted: the Governance contract refused it.`, "error");
    say(`Proposal ${id}: ${action === "approve" ? "approved" : "cancelled"} in transaction ${hash}.`, "done");
  } catch (err) {
    return say(sentence(err), "error");
  }
  row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  await showProposal(row, Number(mined.blockNumber));
}

/** The proposal's state and approvals as the server reads them once it has seen the mined block. */
async function showProposal(row, minedIn) {
  for (let i = 0; i < 40; i++) { // the server sees a new block within about a second
    const answer = await fetch("/v1/proposals");
    if (answer.ok) {
      const { block, proposals } = await answer.json();
      const found = proposals.find((p) => String(p.proposal_id) === row.dataset.proposalId);
      if (found && block >= minedIn) {
        row.querySelector("td.state").textContent = found.state;
        row.querySelector("td.approvals").textContent = `${found.approvals} of ${found.needed}`;
        return;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// ------------------------------------------------------------------ buttons

function buttons(cell, labels, handler) {
  for (const [label, value] of labels) {
    const button = element("button", label, { type: "button", "data-action": value });
    button.addEventListener("click", () => handler(value));
    cell.append(button);
  }
}

if (panel) {
  walletChooser();
  for (const row of document.querySelectorAll("tr.release")) {
    buttons(row.querySelector("td[data-sign]"), [["Approve", "approve"], ["Reject", "reject"]], (d) => vote(row, d));
  }
  for (const row of document.querySelectorAll("tr.proposal")) {
    const cell = row.querySelector("td[data-act]");
    const state = row.dataset.state;
    buttons(cell, [...(state === "pending" ? [["Approve", "approve"]] : []),
      ...(state === "pending" || state === "scheduled" ? [["Cancel proposal", "cancel"]] : [])], (a) => govern(row, a));
  }
}

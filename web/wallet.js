// The web app's wallet code: sign a vote on the Inbox, approve or cancel a governance proposal on the
// Governance page, each with the approver's own browser wallet (the server holds no key); and on the
// Inbox, a Safe's vote: the page drafts it, shows the hash the Safe's owners sign elsewhere, and relays
// it with their combined signature (no wallet needed).
//
// Bundled with viem by scripts/build_wallet.py into shipledger/server/static/wallet.js (committed, so
// pip users need no node). The page is server-rendered; this script only adds buttons and messages,
// and writes every value with textContent (never as HTML). It talks to the wallet (EIP-1193) and to
// this server (/v1/relay, /v1/gate, /v1/proposals) only: the page's CSP allows no other origin.

import {
  encodeFunctionData, getAddress, hashTypedData, isAddress, numberToHex, parseSignature, recoverTypedDataAddress, serializeSignature,
} from "viem";

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
// Safe 1.4.1's CompatibilityFallbackHandler: the hash a Safe's owners sign is EIP-712 SafeMessage(bytes
// message) under the Safe's own domain {chainId, verifyingContract: the Safe} (getMessageHashForSafe).
const SAFE_MESSAGE_TYPES = { SafeMessage: [{ name: "message", type: "bytes" }] };
const SAFE_SIGNATURE_BYTES = 65; // one owner's r, s, v: what checkSignatures reads per owner

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

/** The vote `signer` casts on `row`'s release, signed at `signedAt` (the chain's time): the EIP-712
 * domain and message, exactly what is signed and then relayed, and the plain words that say it. */
function draftVote(row, decision, signer, signedAt) {
  const release = row.dataset;
  const chainId = Number(meta("chain-id"));
  const registry = meta("registry");
  const ttl = Number(release.ttl || 0);
  const deadline = signedAt + (ttl ? Math.min(ttl, WEEK) : WEEK);
  const nonce = randomNonce();
  const message = {
    signer, digest: `0x${release.digest.replace(/^sha256:/, "")}`, service: release.service,
    environment: release.environment, decision: DECISIONS[decision], nonce: nonce.toString(), signedAt, deadline,
  };
  const domain = { name: "shipledger", version: "2", chainId, verifyingContract: registry };
  const lines = [
    ["Decision", decision === "approve" ? "APPROVE this release" : "REJECT this release (a veto)"],
    ["Artifact", `${release.service} ${release.version}, ${release.digest}`],
    ["Environment", release.environment],
    ["Valid", `from ${utc(signedAt)} until ${utc(deadline)}`],
  ];
  const ledger = ["Ledger", `chain ${chainId}, release registry ${registry}`];
  const title = `${decision === "approve" ? "Approve" : "Reject"} ${release.service} ${release.version}`;
  return { row, decision, chainId, registry, domain, message, nonce, lines, ledger, title };
}

/** The body of POST /v1/relay for a drafted vote and its signature (the fields of `approve --sign-only`). */
function relayBody(draft, signature) {
  const m = draft.message;
  const signed = {
    signer: m.signer, digest: draft.row.dataset.digest, service: m.service, environment: m.environment, decision: m.decision,
    nonce: m.nonce, signed_at: m.signedAt, deadline: m.deadline, chain_id: draft.chainId, registry: draft.registry, signature,
  };
  // the nonce is a 128-bit number, beyond JSON's doubles: written as digits. Only the key can match
  // `"nonce":"`: a quote inside a value is escaped.
  return JSON.stringify(signed).replace(`"nonce":"${m.nonce}"`, `"nonce":${m.nonce}`);
}

/** Post one signed vote to this server's relay. The answer: { tx } once recorded, { off } when the
 * server relays nothing, { refused } with the relay's message, or { skipped } with the registry's
 * reasons for not recording it (bad_signature, expired, nonce_used, ...). */
async function relay(draft, signature) {
  const answer = await fetch("/v1/relay", { method: "POST", headers: { "Content-Type": "application/json" }, body: relayBody(draft, signature) });
  const result = await answer.json();
  if (answer.status === 404 && result.error?.code === "RelayOff") return { off: true };
  if (!answer.ok) return { refused: `The relay refused the vote: ${result.error?.message || answer.status}` };
  if (result.skipped.length) return { skipped: result.skipped.map((s) => s.reason) };
  return { tx: result.tx.tx_hash };
}

async function vote(row, decision) {
  let session;
  try {
    say("Asking the wallet for your account…");
    session = await connect();
  } catch (err) {
    return say(sentence(err), "error");
  }
  const { provider, account, name } = session;
  let signedAt;
  try {
    signedAt = await chainNow(provider);
  } catch (err) {
    return say(sentence(err), "error");
  }
  const draft = draftVote(row, decision, account, signedAt);
  const { domain, message, nonce } = draft;
  const ok = await confirm(`${draft.title}?`, [...draft.lines, ["Signer", `${account} (${name})`], draft.ledger], `Sign with ${name}`);
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
  try {
    say("Signed. Sending it to the ledger…");
    const sent = await relay(draft, signature);
    if (sent.refused) return say(sent.refused, "error");
    if (sent.skipped) return say(`The ledger did not record the vote: ${sent.skipped.join(", ")}`, "error");
    if (sent.off) {
      await sendVote(provider, account, draft.registry, message, signature);
    } else {
      say(`Your ${decision === "approve" ? "approval" : "rejection"} is recorded in transaction ${sent.tx}.`, "done");
    }
  } catch (err) {
    return say(sentence(err), "error");
  }
  row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  await showGate(row);
}

// ------------------------------------------------------------------ the Inbox: a Safe's vote (ERC-1271)

const safePanel = document.querySelector("[data-safe-panel]");

/** An address as the CLI takes it (all lower case, all upper case, or a correct EIP-55 checksum), or null. */
function parseAddress(text) {
  if (!/^0x[0-9a-fA-F]{40}$/.test(text)) return null;
  const digits = text.slice(2);
  if (digits === digits.toLowerCase() || digits === digits.toUpperCase()) return getAddress(`0x${digits.toLowerCase()}`);
  return isAddress(text, { strict: true }) ? getAddress(text) : null;
}

/** Draft the Safe's vote on `row` and show what its owners sign; nothing is sent until their combined
 * signature is pasted and relayed. The drafted fields are kept on the page and relayed as they are. */
function safeVote(row, decision) {
  const typed = safePanel.querySelector("[data-safe-address]").value.trim();
  const safe = parseAddress(typed);
  if (!safe) {
    return say(`Enter the Safe's address (0x and 40 hex digits; in mixed case, a correct EIP-55 checksum), not "${typed}": nothing was drafted.`, "error");
  }
  // The chain's time as the server last saw it: the block that records the vote is not older.
  const signedAt = Number(meta("head-time"));
  if (!signedAt) return say("The server does not know the chain's time now: reload the page. Nothing was drafted.", "error");
  const draft = draftVote(row, decision, safe, signedAt);
  const { EIP712Domain, ...types } = VOTE_TYPES;
  const voteHash = hashTypedData({ domain: draft.domain, types, primaryType: "Vote", message: { ...draft.message, nonce: draft.nonce } });
  // abi.encode(voteHash) is the 32 bytes themselves: the handler's isValidSignature(bytes32, bytes) passes them so
  const safeHash = hashTypedData({
    domain: { chainId: draft.chainId, verifyingContract: safe }, types: SAFE_MESSAGE_TYPES, primaryType: "SafeMessage",
    message: { message: voteHash },
  });
  showSafeVote(draft, voteHash, safeHash);
  say(`Drafted the Safe's vote below: have the owners sign the Safe message hash, then paste their signatures. Nothing was sent.`);
}

function showSafeVote(draft, voteHash, safeHash) {
  const box = safePanel.querySelector("[data-safe-vote]");
  const m = draft.message;
  const line = ([k, v], attrs) => {
    const p = element("p");
    p.append(element("strong", `${k}: `), element(attrs ? "code" : "span", v, attrs));
    return p;
  };
  const signature = element("textarea", undefined, { rows: "3", cols: "80", spellcheck: "false", placeholder: "0x…", "data-safe-signature": "" });
  const send = element("button", "Relay the Safe's vote", { type: "button", "data-safe-relay": "" });
  const discard = element("button", "Discard", { type: "button", "data-safe-discard": "" });
  box.replaceChildren(
    element("h2", `${draft.title} as the Safe ${m.signer}`),
    ...[...draft.lines, ["Signer", `the Safe ${m.signer}: the registry asks it (ERC-1271) whether its owners signed`],
      ["Nonce", m.nonce], draft.ledger].map((kv) => line(kv)),
    line(["Vote hash (EIP-712)", voteHash], { "data-vote-hash": "" }),
    line(["Safe message hash, which the owners sign", safeHash], { "data-safe-hash": "" }),
    element("p", "Each owner signs the Safe message hash with their own key, as Safe takes it: over the hash itself (v 27 or 28),"
      + " or with eth_sign / personal_sign and then v raised by 4 (31 or 32). It is the EIP-712 hash of SafeMessage { message:"
      + ` the vote hash } in the Safe's domain { chainId ${draft.chainId}, verifyingContract ${m.signer} }. Paste the signatures`
      + ` as one hex string, ${SAFE_SIGNATURE_BYTES} bytes per owner, in ascending order of owner address, as many as the Safe's threshold.`),
    element("label", "Combined signature ", { for: "safe-signature" }), signature, element("br"), send, discard);
  signature.id = "safe-signature";
  Object.assign(box.dataset, { signer: m.signer, nonce: m.nonce, signedAt: String(m.signedAt), deadline: String(m.deadline),
    decision: String(m.decision) });
  box.hidden = false;
  send.addEventListener("click", () => relaySafeVote(draft, signature, box));
  discard.addEventListener("click", () => {
    box.hidden = true;
    box.replaceChildren();
    say("Discarded the Safe's vote: nothing was sent.");
  });
}

/** What is wrong with a pasted combined signature, in a sentence; "" when its shape is right. */
function combinedSignatureProblem(hex) {
  if (!hex) return "Paste the owners' combined signature first";
  if (!/^[0-9a-fA-F]+$/.test(hex)) return "The combined signature is not hex (0x, then only the digits 0-9 and a-f)";
  if (hex.length % (2 * SAFE_SIGNATURE_BYTES)) {
    const size = hex.length % 2 ? "an odd number of hex digits" : `${hex.length / 2} bytes`;
    return `The combined signature is ${size}: it must be ${SAFE_SIGNATURE_BYTES} bytes per owner (a multiple of ${SAFE_SIGNATURE_BYTES})`;
  }
  return "";
}

const SAFE_SKIPS = {
  bad_signature: "bad_signature: the Safe did not accept the combined signature (it needs as many owners' signatures as its"
    + " threshold, each over the Safe message hash shown, in ascending order of owner address)",
};

async function relaySafeVote(draft, input, box) {
  const hex = input.value.trim().replace(/^0x/i, "");
  const problem = combinedSignatureProblem(hex);
  if (problem) return say(`${problem}: nothing was sent.`, "error");
  let sent;
  try {
    say("Sending the Safe's vote to the ledger…");
    sent = await relay(draft, `0x${hex.toLowerCase()}`);
  } catch (err) {
    return say(`The server could not be reached: ${err?.message || err}. Nothing was recorded.`, "error");
  }
  if (sent.off) return say("This server relays nothing (it was started without a relayer key): nothing was sent.", "error");
  if (sent.refused) return say(sent.refused, "error");
  if (sent.skipped) return say(`The ledger did not record the vote: ${sent.skipped.map((r) => SAFE_SKIPS[r] || r).join(", ")}`, "error");
  const what = draft.decision === "approve" ? "approval" : "rejection";
  say(`The Safe's ${what} is recorded in transaction ${sent.tx}.`, "done");
  draft.row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  box.querySelectorAll("button, textarea").forEach((c) => { c.disabled = true; });
  await showGate(draft.row);
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
    const cell = row.querySelector("td[data-sign]");
    buttons(cell, [["Approve", "approve"], ["Reject", "reject"]], (d) => vote(row, d));
    if (safePanel) buttons(cell, [["Approve as Safe", "safe-approve"], ["Reject as Safe", "safe-reject"]], (a) => safeVote(row, a.slice(5)));
  }
  for (const row of document.querySelectorAll("tr.proposal")) {
    const cell = row.querySelector("td[data-act]");
    const state = row.dataset.state;
    buttons(cell, [...(state === "pending" ? [["Approve", "approve"]] : []),
      ...(state === "pending" || state === "scheduled" ? [["Cancel proposal", "cancel"]] : [])], (a) => govern(row, a));
  }
}

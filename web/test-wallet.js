// A browser wallet for the Playwright tests (tests/server/test_wallet_flows.py): a real EIP-1193
// provider around viem's local account, announced through EIP-6963, that makes real secp256k1
// signatures and signs its own transactions. It behaves as MetaMask does where the page depends on it:
// 4902 for an unknown chain on wallet_switchEthereumChain, add-and-switch on wallet_addEthereumChain,
// and typed data refused when its domain names another chain than the active one.
//
// An earlier init script sets window.__shipledgerTestWallet = {key, chainId, knownChains, mode}; mode is
// "normal", "refuse" (4001 on signing and sending), "silent" (never answers a signing request) or "v01"
// (signatures with v = 0/1, as some hardware wallets give). Node reads go through the exposed binding
// window.__walletRpc(json) -> json (a wallet talks to its node itself, not from the page's origin).
// Every request is logged in window.__walletCalls for the test to read.
// Bundled by scripts/build_wallet.py into tests/server/test-wallet.js.

import { createWalletClient, custom, defineChain, numberToHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const config = window.__shipledgerTestWallet;
if (config) {
  const account = privateKeyToAccount(config.key);
  const known = new Set(config.knownChains);
  let chainId = config.chainId;
  const calls = [];
  window.__walletCalls = calls;

  const rpcError = (code, message) => Object.assign(new Error(message), { code });
  const node = {
    async request({ method, params }) {
      const answer = JSON.parse(await window.__walletRpc(JSON.stringify({ method, params: params || [] })));
      if (answer.error) throw Object.assign(new Error(answer.error.message), { code: answer.error.code, data: answer.error.data });
      return answer.result;
    },
  };
  const listeners = {};
  const emit = (event, value) => (listeners[event] || []).forEach((f) => f(value));

  const provider = {
    on(event, f) { (listeners[event] ||= []).push(f); },
    removeListener(event, f) { listeners[event] = (listeners[event] || []).filter((g) => g !== f); },
    async request({ method, params = [] }) {
      calls.push(method);
      const signing = method === "eth_signTypedData_v4" || method === "eth_sendTransaction";
      if (signing && config.mode === "refuse") throw rpcError(4001, "User rejected the request.");
      if (signing && config.mode === "silent") return new Promise(() => {});
      switch (method) {
        case "eth_requestAccounts":
        case "eth_accounts":
          return [account.address];
        case "eth_chainId":
          return numberToHex(chainId);
        case "wallet_switchEthereumChain": {
          const id = Number(params[0].chainId);
          if (!known.has(id)) throw rpcError(4902, `Unrecognized chain ID "${params[0].chainId}".`);
          chainId = id;
          emit("chainChanged", numberToHex(id));
          return null;
        }
        case "wallet_addEthereumChain": {
          const id = Number(params[0].chainId);
          known.add(id);
          chainId = id;
          emit("chainChanged", numberToHex(id));
          return null;
        }
        case "eth_signTypedData_v4": {
          const [from, json] = params;
          if (from.toLowerCase() !== account.address.toLowerCase()) throw rpcError(4100, "unknown account");
          const typed = JSON.parse(json);
          if (Number(typed.domain.chainId) !== chainId) {
            throw rpcError(-32602, `Provided chainId "${typed.domain.chainId}" must match the active chainId "${chainId}"`);
          }
          const { EIP712Domain, ...types } = typed.types;
          let signature = await account.signTypedData({ domain: typed.domain, types, primaryType: typed.primaryType, message: typed.message });
          if (config.mode === "v01") signature = signature.slice(0, 130) + (signature.endsWith("1b") ? "00" : "01");
          return signature;
        }
        case "eth_sendTransaction": {
          const [tx] = params;
          if (chainId !== config.nodeChainId) throw rpcError(4901, `the wallet is on chain ${chainId}, not its node's`);
          const chain = defineChain({ id: chainId, name: "devnet", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
            rpcUrls: { default: { http: ["http://127.0.0.1"] } } });
          const client = createWalletClient({ account, chain, transport: custom(node, { retryCount: 0 }) });
          return client.sendTransaction({ to: tx.to, data: tx.data, value: tx.value ? BigInt(tx.value) : undefined });
        }
        default:
          return node.request({ method, params });
      }
    },
  };

  const detail = Object.freeze({
    info: Object.freeze({ uuid: "5f0c1b7e-6d8a-4c39-9a57-3f1e2d4b6a90", name: "Test Wallet", icon: "data:image/svg+xml,<svg/>", rdns: "org.shipledger.test-wallet" }),
    provider,
  });
  const announce = () => window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();
}

"""Plumbing: everything that touches web3, JSON-RPC or subprocesses lives here."""

"""Plumbing, not public API: JSON-RPC, transactions, log and revert decoding, artifacts, address books, and the parsing of names, digests, durations and config files."""

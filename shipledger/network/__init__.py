"""The chains the CLI starts for you (the embedded anvil devnet) and the files it writes for a Besu QBFT network."""

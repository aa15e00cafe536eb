"""The chains the CLI starts for you: the embedded anvil devnet today."""

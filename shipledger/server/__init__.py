"""`shipledger serve`: the HTTP API, the web app and /metrics over the index and the chain."""

//go:build tools

// Package tools pins the consortium engine: go-ethereum v1.13.15, the last release that can seal
// Clique blocks. GoQuorum (QBFT) would be the first choice, but the Go module proxy refuses
// github.com/Consensys/quorum at every version (403 "module version not available"), so it cannot be
// built here. `make engine` builds cmd/geth from this module; go.sum pins every dependency.
package tools

import _ "github.com/ethereum/go-ethereum/cmd/geth"

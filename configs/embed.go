// Package configs holds Switchboard's default configuration file.
//
// switchboard.yaml lists every configuration key with its default value and
// a comment. It is embedded into the binary and is the only source of
// defaults: cmd/switchboard loads it before any user file, so the file and
// the server can never disagree.
package configs

import (
	"bytes"
	_ "embed"
)

//go:embed switchboard.yaml
var defaultYAML []byte

// Default returns the embedded switchboard.yaml. Each call returns a fresh
// copy, so callers may modify it.
func Default() []byte {
	return bytes.Clone(defaultYAML)
}

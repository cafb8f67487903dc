//go:build !unix

package web

import "errors"

// RaiseFileLimit is not supported on this system.
func RaiseFileLimit() (soft, hard uint64, err error) {
	return 0, 0, errors.New("web: no open file limit on this system")
}

func fileLimit() (uint64, bool) { return 0, false }

//go:build !linux

package media

import "errors"

func getReadBuffer(uintptr) (int, error) { return 0, errors.New("not on this system") }

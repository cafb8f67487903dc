package cluster

import "errors"

// Errors of the package, compared with errors.Is.
var (
	// ErrConfig wraps a Config or Params that cannot work.
	ErrConfig = errors.New("cluster: invalid configuration")
	// ErrClosed is returned by a primitive used after its Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrNotStarted is returned by a primitive used before its Start.
	ErrNotStarted = errors.New("cluster: not started")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("cluster: already started")
)

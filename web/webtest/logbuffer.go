package webtest

import (
	"bytes"
	"sync"
)

// LogBuffer is a log sink safe for concurrent writers and readers: tests
// hand it to a logger (or a child process's output) and read what was
// logged so far.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

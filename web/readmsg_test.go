package web

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestAppendAllLikeReadAll (issue 16): the reader's message read into a
// pooled buffer gives io.ReadAll's bytes and errors, whatever the buffer
// held before and however the reader splits its reads.
func TestAppendAllLikeReadAll(t *testing.T) {
	payloads := [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 700), bytes.Repeat([]byte("z"), 5000)}
	for _, p := range payloads {
		for _, prev := range [][]byte{make([]byte, 0, 1024), make([]byte, 0, 1), []byte("stale!")[:0]} {
			readers := map[string]func() io.Reader{
				"whole":   func() io.Reader { return bytes.NewReader(p) },
				"onebyte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(p)) },
				"dataerr": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(p)) },
			}
			for name, mk := range readers {
				want, werr := io.ReadAll(mk())
				got, gerr := appendAll(prev[:0], mk())
				if !bytes.Equal(got, want) || !errors.Is(gerr, werr) {
					t.Fatalf("%s, %d bytes: appendAll = %d bytes, %v; io.ReadAll %d bytes, %v", name, len(p), len(got), gerr, len(want), werr)
				}
			}
		}
	}
	boom := errors.New("boom")
	got, err := appendAll(nil, io.MultiReader(bytes.NewReader([]byte("ab")), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || string(got) != "ab" {
		t.Fatalf("appendAll = %q, %v; want \"ab\", boom", got, err)
	}
}

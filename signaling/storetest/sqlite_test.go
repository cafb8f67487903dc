package storetest_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The contract runs here rather than in package signaling: storetest
// imports signaling, so signaling's own (internal) tests cannot import it.
func TestSQLiteStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() signaling.Store {
		// A directory that does not exist yet: OpenSQLite creates it.
		path := filepath.Join(t.TempDir(), "data", "switchboard.db")
		return func() signaling.Store {
			s, err := signaling.OpenSQLite(t.Context(), path, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("OpenSQLite: %v", err)
			}
			return s
		}
	})
}

package storetest_test

import (
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/storetest"
)

func TestMemoryStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() signaling.Store {
		// Each open is a new handle over the same data, as reopening a file.
		data := signaling.NewMemoryStore()
		return func() signaling.Store { return data.Reopen() }
	})
}

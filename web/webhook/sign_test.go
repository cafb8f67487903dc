package webhook_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/web/webhook"
)

var secret = []byte("webhook-test-secret-0123456789abcdef")

// TestVerify: a signed body verifies; a tampered body, another secret, an
// old (or future) timestamp and a missing or malformed header fail with
// their errors.
func TestVerify(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"id":"evt_1","type":"push.ring","data":{}}`)
	h := webhook.Sign(secret, body, now)
	if err := webhook.VerifyAt(secret, body, h, time.Minute, now.Add(30*time.Second)); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	_, sig, _ := strings.Cut(h, "v1=")
	tampered := []byte(`{"id":"evt_1","type":"push.stop","data":{}}`)
	for name, c := range map[string]struct {
		secret, body []byte
		header       string
		at           time.Time
		want         error
	}{
		"tampered body":    {secret, tampered, h, now, webhook.ErrBadSignature},
		"other secret":     {[]byte("another-secret"), body, h, now, webhook.ErrBadSignature},
		"old timestamp":    {secret, body, h, now.Add(2 * time.Minute), webhook.ErrTooOld},
		"future timestamp": {secret, body, h, now.Add(-2 * time.Minute), webhook.ErrTooOld},
		"replayed old signature with a fresh t": {secret, body,
			fmt.Sprintf("t=%d,v1=%s", now.Add(time.Hour).Unix(), sig), now.Add(time.Hour), webhook.ErrBadSignature},
		"no header":    {secret, body, "", now, webhook.ErrNoSignature},
		"no v1":        {secret, body, fmt.Sprintf("t=%d", now.Unix()), now, webhook.ErrNoSignature},
		"no timestamp": {secret, body, "v1=00", now, webhook.ErrNoSignature},
	} {
		if err := webhook.VerifyAt(c.secret, c.body, c.header, time.Minute, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

// ExampleVerify is the receiving side, as README shows it.
func ExampleVerify() {
	http.HandleFunc("/switchboard", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, body, r.Header.Get(webhook.HeaderSignature), 5*time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Deduplicate on the event ID (r.Header.Get(webhook.HeaderEventID)), then handle the event.
		w.WriteHeader(http.StatusNoContent)
	})
}

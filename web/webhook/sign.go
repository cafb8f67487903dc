package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of every delivery.
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256>", the HMAC
	// keyed with webhooks.secret over "<t>.<body>" (as Stripe's).
	HeaderSignature = "Switchboard-Signature"
	// HeaderEventID is the event's ID, the same on every retry and for every
	// URL: receivers deduplicate on it.
	HeaderEventID = "Switchboard-Event-Id"
	// HeaderEventType is the event's type, as in the body.
	HeaderEventType = "Switchboard-Event-Type"
	// HeaderAttempt is the attempt number, from 1.
	HeaderAttempt = "Switchboard-Attempt"
)

// DefaultTolerance is the age of a signature that Verify accepts by default.
const DefaultTolerance = 5 * time.Minute

// Sign returns the HeaderSignature value for body signed at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a delivery as a receiver should: header is its
// HeaderSignature, body its exact bytes. It fails with ErrNoSignature,
// ErrTooOld when the timestamp is more than tolerance away from now (0:
// DefaultTolerance), or ErrBadSignature.
func Verify(secret, body []byte, header string, tolerance time.Duration) error {
	return VerifyAt(secret, body, header, tolerance, time.Now())
}

// VerifyAt is Verify at the given time.
func VerifyAt(secret, body []byte, header string, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s ago", ErrTooOld, d.Round(time.Second))
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrBadSignature
}

package webhook

import "errors"

// Errors of Verify, compared with errors.Is.
var (
	// ErrNoSignature: the signature header is missing or malformed.
	ErrNoSignature = errors.New("webhook: no valid signature header")
	// ErrBadSignature: no v1 signature of the header matches the body.
	ErrBadSignature = errors.New("webhook: signature does not match")
	// ErrTooOld: the signature's timestamp is further from now than the
	// tolerance (a replay, or a badly set clock).
	ErrTooOld = errors.New("webhook: timestamp outside the tolerance")
)

package turnserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the TURN REST API scheme is HMAC-SHA1
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/pion/turn/v5"
)

// Username is the TURN REST API username of userID's credentials valid
// until expires: "EXPIRY:USERID", EXPIRY in Unix seconds.
func Username(userID string, expires time.Time) string {
	return strconv.FormatInt(expires.Unix(), 10) + ":" + userID
}

// Password is the password of username under secret:
// base64(HMAC-SHA1(secret, username)).
func Password(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// DeriveSecret returns the credential secret used when turn.secret is
// empty: derived from key (auth.secret) when there is one, so that every
// server sharing that key agrees; otherwise random for this process.
func DeriveSecret(key []byte) string {
	if len(key) == 0 {
		b := make([]byte, 32)
		_, _ = rand.Read(b) // never fails (crypto/rand)
		return base64.RawStdEncoding.EncodeToString(b)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("switchboard turn credentials"))
	return base64.RawStdEncoding.EncodeToString(mac.Sum(nil))
}

// expiry parses a REST API username: its expiry and user ID.
func expiry(username string) (time.Time, string, bool) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok || user == "" {
		return time.Time{}, "", false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(sec, 0), user, true
}

// authenticate is pion's AuthHandler: the long-term key of a well-formed,
// unexpired username (pion checks the request's MESSAGE-INTEGRITY with it).
func (s *Server) authenticate(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	exp, user, ok := expiry(ra.Username)
	switch {
	case !ok:
		s.log.Debug("TURN credentials refused: malformed username", "username", ra.Username, "client", ra.SrcAddr)
		return "", nil, false
	case !s.cfg.Now().Before(exp):
		s.log.Debug("TURN credentials refused: expired", "username", ra.Username, "client", ra.SrcAddr, "expired", exp)
		return "", nil, false
	}
	return user, turn.GenerateAuthKey(ra.Username, ra.Realm, Password(s.cfg.Secret, ra.Username)), true
}

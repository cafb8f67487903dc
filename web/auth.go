package web

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// MinSecretLen is the shortest HS256 secret accepted outside dev mode.
const MinSecretLen = 32

// AuthConfig configures token checking.
type AuthConfig struct {
	// Secret is the HS256 key. Empty with Dev: a random key per start.
	Secret []byte `mapstructure:"secret"`
	// Dev enables GET /api/dev/token, which issues tokens to anyone.
	Dev bool `mapstructure:"dev"`
	// DevTokenTTL is the lifetime of dev tokens.
	DevTokenTTL time.Duration `mapstructure:"dev_token_ttl"`
}

// Errors of token checking.
var (
	ErrNoToken      = errors.New("web: no token")
	ErrInvalidToken = errors.New("web: invalid token")
	ErrTokenExpired = errors.New("web: token expired")
)

// Claims are the claims of Switchboard's tokens: sub is the user ID; room,
// when present, restricts a room token to one room.
type Claims struct {
	Room string `json:"room,omitempty"`
	jwt.RegisteredClaims
}

// Authenticator issues and verifies HS256 tokens. The algorithm is pinned:
// tokens signed with anything but HS256 (including "none") are refused.
type Authenticator struct {
	secret []byte
	parser *jwt.Parser
}

// NewAuthenticator checks the config and returns an Authenticator.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	secret := cfg.Secret
	if len(secret) == 0 {
		if !cfg.Dev {
			return nil, fmt.Errorf("web: auth.secret is required when auth.dev is false")
		}
		secret = make([]byte, MinSecretLen)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
	}
	if !cfg.Dev && len(secret) < MinSecretLen {
		return nil, fmt.Errorf("web: auth.secret must be at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	return &Authenticator{
		secret: secret,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(), jwt.WithLeeway(0)),
	}, nil
}

// Issue signs a token for user, valid for ttl; room may be empty.
func (a *Authenticator) Issue(user, room string, ttl time.Duration) (string, time.Time, error) {
	now := time.Now()
	exp := now.Add(ttl)
	c := Claims{Room: room, RegisteredClaims: jwt.RegisteredClaims{
		Subject: user, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.secret)
	return s, exp, err
}

// Verify checks a token and returns its claims. The subject must be a valid
// user ID.
func (a *Authenticator) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrNoToken
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, ErrTokenExpired
		}
		return nil, ErrInvalidToken
	}
	if !protocol.ValidUserID(c.Subject) {
		return nil, ErrInvalidToken
	}
	return &c, nil
}

// tokenFromRequest takes the token from "Authorization: Bearer" (the
// scheme is case-insensitive, RFC 7235) or ?token=.
func tokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, t, ok := strings.Cut(strings.TrimSpace(h), " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(t)
		}
	}
	return r.URL.Query().Get("token")
}

// VerifyRoomToken checks a room token (a token with a room claim) and
// returns its user and room; it satisfies rooms.TokenVerifier.
func (a *Authenticator) VerifyRoomToken(token string) (userID, roomID string, err error) {
	c, err := a.Verify(token)
	if err != nil {
		return "", "", err
	}
	if c.Room == "" {
		return "", "", ErrInvalidToken
	}
	return c.Subject, c.Room, nil
}

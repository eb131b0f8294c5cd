package smtpd

import (
	"bytes"
	"errors"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
)

// Mechanisms are the only SASL mechanisms offered (SPEC R1).
var Mechanisms = []string{sasl.Plain, sasl.Login}

// errMalformed marks an AUTH exchange that could not be decoded.
var errMalformed = errors.New("malformed SASL response")

// credentials are what a client sent: never logged, never stored (SPEC R13).
type credentials struct {
	authzid, login, password string
}

// parsePlain decodes a PLAIN response, "authzid NUL authcid NUL passwd"
// (RFC 4616 §2).
func parsePlain(b []byte) (credentials, error) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[1]) > 320 || len(parts[2]) > 1024 || len(parts[0]) > 320 {
		return credentials{}, errMalformed
	}
	for _, p := range parts {
		if !utf8.Valid(p) {
			return credentials{}, errMalformed
		}
	}
	return credentials{authzid: string(parts[0]), login: string(parts[1]), password: string(parts[2])}, nil
}

// parseLoginField checks one LOGIN field (user name or password).
func parseLoginField(b []byte, max int) (string, error) {
	if len(b) == 0 || len(b) > max || !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		return "", errMalformed
	}
	return string(b), nil
}

// saslServer runs PLAIN or LOGIN and hands the decoded credentials to check,
// whose error (an *smtp.SMTPError reply) ends the exchange.
type saslServer struct {
	mech  string
	step  int
	login string
	check func(credentials) error
	// malformed is called when the client's data cannot be decoded, before
	// the error reply; it returns that reply.
	malformed func() error
}

var _ sasl.Server = (*saslServer)(nil)

// Next implements sasl.Server.
func (s *saslServer) Next(resp []byte) ([]byte, bool, error) {
	defer func() { s.step++ }()
	switch s.mech {
	case sasl.Plain:
		if s.step == 0 && resp == nil {
			// No initial response: ask for it with an empty challenge.
			return []byte{}, false, nil
		}
		c, err := parsePlain(resp)
		if err != nil {
			return nil, false, s.malformed()
		}
		return nil, true, s.check(c)
	case sasl.Login:
		// draft-murchison-sasl-login: "Username:" then "Password:"; an
		// initial response, when given, is the user name.
		if s.step == 0 && resp == nil {
			return []byte("Username:"), false, nil
		}
		if s.login == "" {
			l, err := parseLoginField(resp, 320)
			if err != nil {
				return nil, false, s.malformed()
			}
			s.login = l
			return []byte("Password:"), false, nil
		}
		p, err := parseLoginField(resp, 1024)
		if err != nil {
			return nil, false, s.malformed()
		}
		return nil, true, s.check(credentials{login: s.login, password: p})
	}
	return nil, false, s.malformed()
}

package metrics

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Gate lets a request through to h when it comes from one of networks
// ([admin] metrics_networks), or when token accepts the bearer token it
// carries. Any other request gets 401 when token is set, so that a scraper
// outside those networks knows to send one, and 403 when it is nil, since no
// token would help.
func Gate(h http.Handler, networks []netip.Prefix, token func(string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fromNetworks(r, networks) {
			h.ServeHTTP(w, r)
			return
		}
		if token == nil {
			http.Error(w, "metrics are open to [admin] metrics_networks only", http.StatusForbidden)
			return
		}
		if t, ok := bearer(r); ok && token(t) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="submitd"`)
		http.Error(w, "a bearer token is needed outside [admin] metrics_networks", http.StatusUnauthorized)
	})
}

// fromNetworks reports whether the request's peer address is in networks.
// It is the TCP peer: a proxy in front of the admin server is the client
// here, so the networks must not hold a proxy that forwards outside clients.
func fromNetworks(r *http.Request, networks []netip.Prefix) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range networks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// bearer returns the token of an "Authorization: Bearer …" header (RFC 6750
// §2.1; the scheme is case-insensitive).
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os/user"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"submitd/internal/delivery"
	"submitd/internal/directory"
	"submitd/internal/dkim"
	"submitd/internal/guard"
	"submitd/internal/ids"
	"submitd/internal/password"
	"submitd/internal/queue"
	"submitd/internal/sending"
	"submitd/internal/sessionlog"
	"submitd/internal/trace"
)

// Defaults of the zero Config fields.
const (
	// DefaultSessionIdle ends a browser session after this long unused.
	DefaultSessionIdle = 30 * time.Minute
	// DefaultMaxSessions bounds the browser sessions held in memory; past
	// it the one unused longest is ended.
	DefaultMaxSessions = 10000
)

// loginHashes bounds the staff password checks under way at once: the
// login guard limits each client IP, and this bounds what many IPs can make
// the server spend in CPU and, for argon2id, memory.
const loginHashes = 2

// loginWait is how long a login waits for a password check to be free
// before it gets 503.
const loginWait = 5 * time.Second

// maxBody bounds a request body: every API request is a small JSON object.
const maxBody = 64 << 10

// SessionCookie is the browser session cookie's name.
const SessionCookie = "submitd_session"

// CSRFHeader carries the CSRF token of a browser session on every request
// that changes something; a form may send the field csrf_token instead.
const CSRFHeader = "X-CSRF-Token"

// Sessions is what the server reads of the session log; sessionlog.SQLite
// is one.
type Sessions interface {
	FailureLister
	// Get returns one record, or an error wrapping sessionlog.ErrNotFound.
	Get(ctx context.Context, id string) (*sessionlog.Record, error)
	// Find returns the records matching q, newest first.
	Find(ctx context.Context, q sessionlog.Query) ([]*sessionlog.Record, error)
}

// Guard is what the server reads and changes of the brute-force guard;
// guard.Guard is one.
type Guard interface {
	GuardView
	// Unblock lifts the blocks and failures of every key overlapping p.
	Unblock(ctx context.Context, p netip.Prefix) ([]netip.Prefix, error)
	// BlockNetwork blocks p until until and returns the prefix blocked.
	BlockNetwork(ctx context.Context, p netip.Prefix, until time.Time) (netip.Prefix, error)
}

// Queue is what the server reads and changes of the delivery queue;
// queue.Admin is one.
type Queue interface {
	// List returns the queued messages, oldest first.
	List() ([]queue.Item, error)
	// Show returns one message and its header section.
	Show(id string) (*queue.Item, []byte, error)
	// Retry makes a message ("all": every message) due now.
	Retry(id string) (string, error)
	// Delete removes a message, reporting it to its sender when bounce.
	Delete(id string, bounce bool) (string, error)
	// Adopt moves the messages of a stopped node's spool in dir into this
	// node's queue.
	Adopt(dir string) (*queue.AdoptResult, error)
}

// Backoffs is what a Queue that delivers (the running queue, not one over
// a stopped spool) tells of the destinations in back-off: MX hosts that
// asked to slow down, and why. The queue page shows them.
type Backoffs interface {
	Backoffs() []delivery.Backoff
}

// DKIMKeys is what the server reads and changes of the DKIM keys;
// dkim.Store is one.
type DKIMKeys interface {
	// Get returns a domain's key, or an error wrapping dkim.ErrNoKey.
	Get(ctx context.Context, domain string) (*dkim.Key, error)
	// Put stores a key, replacing one only when replace.
	Put(ctx context.Context, k *dkim.Key, replace bool) error
	// Delete removes a domain's key.
	Delete(ctx context.Context, domain string) error
}

// Config is what the server works on.
type Config struct {
	// Directory holds domains, aliases and accounts.
	Directory directory.Store
	// Sessions is the session log (SPEC R13).
	Sessions Sessions
	// Guard is the SMTP brute-force guard (SPEC R11).
	Guard Guard
	// Queue is the delivery queue (SPEC R18); nil leaves the queue
	// endpoints answering 503.
	Queue Queue
	// DKIM holds the signing keys (SPEC R17).
	DKIM DKIMKeys
	// DNS looks up the published DKIM records for the domain detail
	// ([delivery] resolver); nil leaves the check out.
	DNS TXTResolver
	// Health checks the domains' DNS for the domain detail; nil leaves
	// the check out. SetSettings replaces it.
	Health HealthChecker
	// Trace is the delivery history (SPEC R13a); nil leaves the trace
	// endpoints answering 503.
	Trace TraceStore
	// Held holds and releases compromised accounts (SPEC R20); nil leaves
	// the held endpoints answering 503.
	Held Held
	// Staff holds the staff users and their tokens.
	Staff StaffStore
	// Audit is the audit log.
	Audit AuditLog
	// LoginGuard limits failed staff logins per client IP, in a key space
	// of its own, so the admin login is no weaker than SMTP AUTH.
	LoginGuard *guard.Guard
	// PasswordScheme is the scheme of new password hashes.
	PasswordScheme string
	// SessionIdle ends a browser session after this long unused; 0 means
	// DefaultSessionIdle.
	SessionIdle time.Duration
	// MaxSessions bounds the browser sessions; 0 means DefaultMaxSessions.
	MaxSessions int
	// SecureCookie marks the session cookie Secure (the TCP listener
	// serves TLS).
	SecureCookie bool
	// MetricsNetworks may read /metrics without a token.
	MetricsNetworks []netip.Prefix
	// SendingAccount and SendingDomain are the configured sending limits
	// of every account and every hosted domain ([sending], SPEC R19), which
	// the directory's overrides replace.
	SendingAccount sending.Limits
	SendingDomain  sending.Limits
	// Log gets the server's log lines.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the admin HTTP server: its Handler serves the API on the TCP
// listener and the unix socket alike.
type Server struct {
	// Metrics serves /metrics (Prometheus); nil answers 404. Set it before
	// the server serves.
	Metrics http.Handler
	// SendingUsage reads the running server's sending counts; nil (the
	// CLI without a server) shows the limits without them. Set it before
	// the server serves.
	SendingUsage SendingUsage
	// Reload re-reads the running server's configuration (POST
	// /api/v1/reload); nil (the CLI without a server) answers 503. Set it
	// before the server serves.
	Reload ReloadFunc
	// Warnings reads what support must know before customers notice,
	// shown on the front page (certificates about to expire); nil shows
	// none. Set it before the server serves.
	Warnings func() []string
	// Restart hands the running server over to a new process (submitd
	// restart); nil (the CLI without a server) answers 503. Set it before
	// the server serves.
	Restart Restarter

	// cfg is the configuration, defaults filled in; its Settings part is
	// only read by New, which puts it in live.
	cfg Config
	// live are the settings in force (SetSettings).
	live atomic.Pointer[Settings]
	// mux routes the requests.
	mux *http.ServeMux
	// explainer tells sessions (explain.go).
	explainer *Explainer
	// logins is the per-login failure count (SetLogins), nil without one.
	logins Logins

	// loginSlots holds a token per staff password check under way.
	loginSlots chan struct{}

	// mu guards sessions.
	mu sync.Mutex
	// sessions are the browser sessions by the hash of their cookie.
	sessions map[string]*webSession
}

// webSession is one logged-in browser.
type webSession struct {
	// staff is the user logged in.
	staff string
	// csrf is the token every change must carry.
	csrf string
	// seen is when the session was last used.
	seen time.Time
	// flash is the outcome of the last change made from a page, shown once
	// on the page it leads back to; guarded by Server.mu.
	flash *flash
}

// New makes a server over cfg.
func New(cfg Config) *Server {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), sessions: map[string]*webSession{}, loginSlots: make(chan struct{}, loginHashes)}
	s.SetSettings(Settings{MetricsNetworks: cfg.MetricsNetworks, SendingAccount: cfg.SendingAccount, SendingDomain: cfg.SendingDomain,
		PasswordScheme: cfg.PasswordScheme, SessionIdle: cfg.SessionIdle, DNS: cfg.DNS, Health: cfg.Health})
	s.explainer = &Explainer{Directory: cfg.Directory, Failures: cfg.Sessions, Guard: cfg.Guard}
	s.routes()
	return s
}

// Handler serves the API and /metrics.
func (s *Server) Handler() http.Handler { return s.mux }

// HTTPServer returns an http.Server for the handler with timeouts that bound
// what a slow or hostile client holds. For the unix socket, each connection
// carries its peer's user id, which names the CLI user in the audit log.
func (s *Server) HTTPServer(socket bool) *http.Server {
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	if socket {
		// The socket is the owner's control path (mode 0600): no write
		// limit, so a command whose work grows with the data (queue adopt)
		// is answered however long it takes; the CLI sets its own limit.
		hs.WriteTimeout = 0
		hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerUser(c))
		}
	}
	return hs
}

// peerKey marks a request that came over the unix socket; its value is the
// actor ("cli:USER").
type peerKey struct{}

// peerUser names the user at the other end of a unix socket connection, by
// its kernel-reported uid (SO_PEERCRED), so it cannot be made up.
func peerUser(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return "cli:unknown"
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "cli:unknown"
	}
	var cred *syscall.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return "cli:unknown"
	}
	uid := strconv.Itoa(int(cred.Uid))
	if u, err := user.LookupId(uid); err == nil {
		return "cli:" + u.Username
	}
	return "cli:uid" + uid
}

// apiError is an error answered with its status and message.
type apiError struct {
	// status is the HTTP status.
	status int
	// msg is the message for the client.
	msg string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// badRequest is a 400 with a message.
func badRequest(format string, args ...any) error {
	return errorf(http.StatusBadRequest, format, args...)
}

// principal is who makes a request.
type principal struct {
	// name is the staff name, or the actor for the CLI.
	name string
	// role is what it may do.
	role Role
	// actor names it in the audit log.
	actor string
	// session is the browser session, nil for a token or the socket.
	session *webSession
}

// handlerFunc answers one API request made by p: a value sent as JSON, or
// an error.
type handlerFunc func(r *http.Request, p *principal) (any, error)

// handle routes pattern to h for callers with role need.
func (s *Server) handle(pattern string, need Role, h handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		p, err := s.authenticate(r)
		if err == nil && !p.role.may(need) {
			err = errorf(http.StatusForbidden, "%s may not do this: it needs the %s role", p.name, need)
		}
		if err == nil && p.session != nil && !safeMethod(r.Method) {
			err = s.checkCSRF(r, p.session)
		}
		var v any
		if err == nil {
			v, err = h(r, p)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// writeJSON sends v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeError sends err as {"error": message} with a fitting status; an
// unexpected error is logged and answered without its details.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := s.errorStatus(r, err)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="submitd"`)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

// errorStatus is the status and message err is answered with, for the API
// and the pages alike; an unexpected error is logged and told without its
// details.
func (s *Server) errorStatus(r *http.Request, err error) (int, string) {
	status, msg := http.StatusInternalServerError, "internal error; see the server log"
	var ae *apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		status, msg = ae.status, ae.msg
	case errors.As(err, &mbe):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBody)
	case errors.Is(err, directory.ErrNotFound), errors.Is(err, ErrNotFound), errors.Is(err, sessionlog.ErrNotFound),
		errors.Is(err, trace.ErrNotFound), errors.Is(err, queue.ErrNotQueued), errors.Is(err, dkim.ErrNoKey):
		status, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, directory.ErrExists), errors.Is(err, ErrExists), errors.Is(err, directory.ErrConflict),
		errors.Is(err, dkim.ErrKeyExists):
		status, msg = http.StatusConflict, err.Error()
	default:
		s.cfg.Log.Error("admin: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	return status, msg
}

// authenticate finds who makes r: the CLI over the unix socket, a bearer
// token, or a browser session cookie.
func (s *Server) authenticate(r *http.Request) (*principal, error) {
	if actor, ok := r.Context().Value(peerKey{}).(string); ok {
		// The socket is mode 0600 in data_dir: whoever connects may run
		// the CLI on the database anyway.
		return &principal{name: actor, role: RoleAdmin, actor: actor}, nil
	}
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" {
			return nil, errorf(http.StatusUnauthorized, "Authorization must be \"Bearer TOKEN\" (submitd staff token NAME)")
		}
		st, _, err := s.cfg.Staff.TokenStaff(ctx, hashToken(tok))
		if errors.Is(err, ErrNotFound) {
			return nil, errorf(http.StatusUnauthorized, "unknown or revoked token")
		}
		if err != nil {
			return nil, err
		}
		return &principal{name: st.Name, role: st.Role, actor: st.Name}, nil
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return nil, errorf(http.StatusUnauthorized, "log in first (POST /api/v1/login) or send a bearer token")
	}
	ws := s.session(c.Value)
	if ws == nil {
		return nil, errorf(http.StatusUnauthorized, "the session has ended; log in again")
	}
	// The user is read each time, so a removed user or a changed role
	// takes effect at once.
	st, err := s.cfg.Staff.Staff(ctx, ws.staff)
	if errors.Is(err, ErrNotFound) {
		s.endSession(c.Value)
		return nil, errorf(http.StatusUnauthorized, "the user %s no longer exists", ws.staff)
	}
	if err != nil {
		return nil, err
	}
	return &principal{name: st.Name, role: st.Role, actor: st.Name, session: ws}, nil
}

// checkCSRF checks the CSRF token of a change made from a browser.
func (s *Server) checkCSRF(r *http.Request, ws *webSession) error {
	tok := r.Header.Get(CSRFHeader)
	if tok == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		tok = r.PostFormValue("csrf_token")
	}
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(ws.csrf)) != 1 {
		return errorf(http.StatusForbidden, "missing or wrong CSRF token (send the one from login in the %s header)", CSRFHeader)
	}
	return nil
}

// randomToken returns 32 random bytes in the session id alphabet's hex.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hashToken is how tokens and cookies are keyed: a leaked database or
// memory dump does not give working credentials.
func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// NewToken makes an API token: "sdt_" and 64 hex digits. It returns the
// token to show once and the Token to store.
func NewToken(staff string, now time.Time) (string, Token) {
	tok := "sdt_" + randomToken()
	return tok, Token{Staff: staff, Hash: hashToken(tok), Created: now}
}

// session returns the live browser session of cookie value v and marks it
// used.
func (s *Server) session(v string) *webSession {
	key := hashToken(v)
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.sessions[key]
	if ws == nil {
		return nil
	}
	if now.Sub(ws.seen) >= s.settings().SessionIdle {
		delete(s.sessions, key)
		return nil
	}
	ws.seen = now
	return ws
}

// newSession starts a browser session of staff and returns its cookie value.
func (s *Server) newSession(staff string) (string, *webSession) {
	v := randomToken()
	ws := &webSession{staff: staff, csrf: randomToken(), seen: s.cfg.Now()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.cfg.MaxSessions {
		// Expired ones go first; if none has, the one unused longest.
		var oldest string
		for k, o := range s.sessions {
			if ws.seen.Sub(o.seen) >= s.settings().SessionIdle {
				delete(s.sessions, k)
				continue
			}
			if oldest == "" || o.seen.Before(s.sessions[oldest].seen) {
				oldest = k
			}
		}
		if len(s.sessions) >= s.cfg.MaxSessions {
			delete(s.sessions, oldest)
		}
	}
	s.sessions[hashToken(v)] = ws
	return v, ws
}

// endSession ends the browser session of cookie value v.
func (s *Server) endSession(v string) {
	s.mu.Lock()
	delete(s.sessions, hashToken(v))
	s.mu.Unlock()
}

// endSessionsOf ends every browser session of staff, after its password
// changed or it was removed.
func (s *Server) endSessionsOf(staff string) {
	s.mu.Lock()
	for k, ws := range s.sessions {
		if ws.staff == staff {
			delete(s.sessions, k)
		}
	}
	s.mu.Unlock()
}

// clientIP is the address a TCP request came from.
func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// login checks a staff password, limited per client IP by LoginGuard, and
// starts a browser session.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var in struct {
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	st, ws, err := s.startSession(w, r, in.Name, in.Password)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if st == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": st.Name, "role": string(st.Role), "csrf_token": ws.csrf})
}

// startSession checks a staff password, limited per client IP by
// LoginGuard, and on success starts a browser session and sets its cookie
// on w. The API's login and the login page both take this path. It returns
// nil and no error when the client went away while waiting.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, name, pw string) (*Staff, *webSession, error) {
	if name == "" || pw == "" {
		return nil, nil, badRequest("name and password are required")
	}
	if crossSite(r) {
		// Login CSRF: a page of another site must not log the staff
		// member's browser into an account of the attacker's choosing.
		return nil, nil, errorf(http.StatusForbidden, "a login posted from another site's page is refused; open the login page of this server")
	}
	ip := clientIP(r)
	sid := ids.Session()
	var att *guard.Attempt
	if s.cfg.LoginGuard != nil {
		a, ok := s.cfg.LoginGuard.Begin(ip, sid)
		if !ok {
			s.cfg.Log.Warn("admin: login refused, too many failures", "ip", ip.String(), "name", name)
			return nil, nil, errorf(http.StatusTooManyRequests, "too many failed logins from %s; try again later", ip)
		}
		att = a
		defer att.Succeed() // gives the place back unless Fail settled it
	}
	t := time.NewTimer(loginWait)
	defer t.Stop()
	select {
	case s.loginSlots <- struct{}{}:
		defer func() { <-s.loginSlots }()
	case <-t.C:
		return nil, nil, errorf(http.StatusServiceUnavailable, "too many logins at once; try again in a moment")
	case <-r.Context().Done():
		return nil, nil, nil
	}
	st, err := s.cfg.Staff.Staff(r.Context(), name)
	ok := false
	switch {
	case err == nil:
		ok, err = password.Verify(st.PasswordHash, pw)
		if err != nil {
			s.cfg.Log.Error("admin: staff password hash unusable", "name", name, "err", err)
			ok = false
		}
	case errors.Is(err, ErrNotFound):
		// Hash anyway, so an unknown name takes as long as a wrong
		// password and the names cannot be told apart by timing.
		password.Verify(dummyHash(s.settings().PasswordScheme), pw)
	default:
		return nil, nil, err
	}
	if !ok {
		att.Fail()
		s.cfg.Log.Info("admin: login failed", "ip", ip.String(), "name", name, "attempt", sid)
		return nil, nil, errorf(http.StatusUnauthorized, "wrong name or password")
	}
	v, ws := s.newSession(st.Name)
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: v, Path: "/", HttpOnly: true, Secure: s.cfg.SecureCookie,
		SameSite: http.SameSiteStrictMode,
	})
	s.cfg.Log.Info("admin: login", "ip", ip.String(), "name", st.Name)
	return st, ws, nil
}

// dummyHashes are hashes of a random password per scheme, for the timing
// of unknown names.
var dummyHashes sync.Map

func dummyHash(scheme string) string {
	if h, ok := dummyHashes.Load(scheme); ok {
		return h.(string)
	}
	h, err := password.Hash(scheme, randomToken())
	if err != nil {
		h, _ = password.Hash("bcrypt", randomToken())
	}
	dummyHashes.Store(scheme, h)
	return h
}

// logout ends the browser session; it needs the CSRF token, so a page of
// another site cannot log support out.
func (s *Server) logout(r *http.Request, p *principal) (any, error) {
	if p.session == nil {
		return nil, badRequest("only a browser session can log out; revoke a token with DELETE /api/v1/tokens/{id}")
	}
	c, _ := r.Cookie(SessionCookie)
	s.endSession(c.Value)
	return map[string]string{"result": "logged out"}, nil
}

// decode reads a JSON body into v, or a form for browsers.
func decode(r *http.Request, v any) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if err := r.ParseForm(); err != nil {
			return badRequest("bad form: %v", err)
		}
		bools := boolFields(v)
		m := map[string]any{}
		for k, vs := range r.PostForm {
			if k == "csrf_token" || len(vs) == 0 {
				continue
			}
			m[k] = vs[0]
			// Only a field that is a boolean takes "on" or "true" as one:
			// a password or a reason that reads "true" stays text.
			if b, ok := formValue(vs[0]).(bool); ok && bools[k] {
				m[k] = b
			}
		}
		b, _ := json.Marshal(m)
		return decodeBytes(b, v)
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		b = []byte("{}")
	}
	return decodeBytes(b, v)
}

// crossSite reports whether a browser says the request comes from a page
// of another origin: Sec-Fetch-Site "cross-site" or "same-site" (a sibling
// host), or an Origin whose host is not the one asked. curl and other API
// clients send neither header.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	return err != nil || u.Host != r.Host
}

// boolFields names the JSON fields of the struct v points to that are
// booleans (or pointers to booleans).
func boolFields(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]bool{}
	if t == nil || t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Bool {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

// formValue turns form strings that look like booleans into booleans, so a
// form and JSON decode into the same struct.
func formValue(s string) any {
	switch s {
	case "true", "on":
		return true
	case "false", "off":
		return false
	}
	return s
}

func decodeBytes(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("bad JSON body: %v", err)
	}
	return nil
}

// AsCLI marks a request context as the CLI's, run by actor ("cli:USER"),
// as a connection on the unix socket is. The CLI runs the API in-process
// this way when no server runs; nothing from the network can set it.
func AsCLI(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, peerKey{}, actor)
}

// CLIActor names the user running this process in the audit log.
func CLIActor() string {
	u, err := user.Current()
	if err != nil {
		return fmt.Sprintf("cli:uid%d", syscall.Getuid())
	}
	return "cli:" + u.Username
}

package admin

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The support pages (issue "Support and operator web"): server-rendered
// HTML over the same handlers as the API. A page shows what an API read
// answers; a form posts to an action that runs the API change with the same
// checks, audit entry and errors, so there is one control path. Adding a
// page is one template in templates/ (its "content"), one webPage line with
// the handler that reads its data, a webAction line per form, and its link
// in the menu of templates/layout.html.

//go:embed templates/*.html static/*
var webFiles embed.FS

// webFields are the form fields of the pages that the API handlers do not
// know; they are taken out of the form before the handler decodes it.
var webFields = []string{"confirmed", "back"}

// flash is the outcome of a change, shown once on the next page.
type flash struct {
	// Text says what was done, or what went wrong.
	Text string
	// Error marks a failure.
	Error bool
}

// pageData is what every template gets.
type pageData struct {
	// Title is the page's title.
	Title string
	// Nav names the menu entry to mark.
	Nav string
	// Staff is the user logged in.
	Staff string
	// Admin says the user has the admin role, so admin-only forms show.
	Admin bool
	// CSRF is the token every form posts.
	CSRF string
	// Query is the text in the Find box.
	Query string
	// Flash is the outcome of the last change, or nil.
	Flash *flash
	// Back is this page's path and query, where its forms lead back to.
	Back string
	// URL is the request's URL, for filter and paging links.
	URL *url.URL
	// Data is what the page's handler answered.
	Data any
	// Confirm is the question of a confirmation step.
	Confirm string
	// Action is the path a confirmation posts to.
	Action string
	// Fields are the form fields a confirmation posts again.
	Fields [][2]string
	// Warnings are shown on the front page (Server.Warnings).
	Warnings []string
}

// partData is what a sub-template shared by pages gets: the page, for its
// forms' CSRF token and way back, and the part's data.
type partData struct {
	// Page is the page the part is on.
	Page *pageData
	// Data is the part's data.
	Data any
}

// partials are the templates every page may use besides the layout, such
// as the sending limits of the account and domain pages.
var partials = []string{"templates/layout.html", "templates/sending.html"}

// redirect is a page handler's answer that sends the browser elsewhere.
type redirect string

// webTemplates are the parsed pages by name, each with the layout.
var webTemplates = sync.OnceValue(parseWebTemplates)

// webFuncs are the helpers the templates use.
var webFuncs = template.FuncMap{
	"when": func(t any) string {
		switch t := t.(type) {
		case time.Time:
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if t == nil || t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return ""
	},
	"ago": func(t time.Time) string {
		d := time.Since(t).Round(time.Second)
		switch {
		case d < time.Minute:
			return d.String()
		case d < time.Hour:
			return d.Round(time.Minute).String()
		}
		return d.Round(time.Hour).String()
	},
	"path": url.PathEscape,
	"has": func(list []string, v string) bool {
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	},
	"pretty": func(m json.RawMessage) string {
		if len(m) == 0 || string(m) == "null" {
			return ""
		}
		var b bytes.Buffer
		if json.Indent(&b, m, "", "  ") != nil {
			return string(m)
		}
		return b.String()
	},
	// page links to the page of a list starting at offset.
	"pageURL": func(u *url.URL, offset int) string {
		q := u.Query()
		q.Set("offset", strconv.Itoa(offset))
		return u.Path + "?" + q.Encode()
	},
	"add": func(a, b int) int { return a + b },
	// part hands a sub-template the page and its own data.
	"part": func(page *pageData, data any) partData { return partData{Page: page, Data: data} },
	"sub":  func(a, b int) int { return a - b },
	// list makes a list of its arguments, for a part that shows a list.
	"list": func(v ...any) []any { return v },
}

func parseWebTemplates() map[string]*template.Template {
	t := map[string]*template.Template{}
	pages, err := fs.Glob(webFiles, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if slices.Contains(partials, p) {
			continue
		}
		t[name] = template.Must(template.New("layout.html").Funcs(webFuncs).ParseFS(webFiles, append(slices.Clone(partials), p)...))
	}
	return t
}

// webRoutes registers the pages and their actions.
func (s *Server) webRoutes() {
	s.mux.HandleFunc("GET /static/style.css", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, webFiles, "static/style.css")
	})
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/find", http.StatusSeeOther) })
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.loginPage)
	s.mux.HandleFunc("POST /logout", s.logoutPage)

	s.webPage("GET /find", RoleSupport, "find", "Find", s.findPage)
	s.webPage("GET /sessions/{id}", RoleSupport, "session", "Session", s.getSession)
	s.webPage("GET /blocked", RoleSupport, "blocked", "Blocked IPs", s.listBlocked)
	s.webAction("POST /blocked/unblock", RoleSupport, s.unblock, "Unblock %s and clear its failures?", "target")
	s.webAction("POST /blocked/block", RoleSupport, s.block, "Block %s for %s?", "target", "duration")

	s.webPage("GET /accounts", RoleSupport, "accounts", "Accounts", s.listAccounts)
	s.webPage("GET /accounts/{address}", RoleSupport, "account", "Account", s.accountPage)
	s.webAction("POST /accounts/{address}/smtp_access", RoleSupport, s.setSMTPAccess, "Set SMTP access of %s to %s?", "{address}", "enabled")
	s.webAction("POST /accounts/{address}/password", RoleSupport, s.setPasswordTwice, "")
	s.webAction("POST /accounts/{address}/identities", RoleSupport, s.addIdentity, "Let %s send as %s?", "{address}", "identity")
	s.webAction("POST /accounts/{address}/identities/{identity}/remove", RoleSupport, s.removeIdentity, "Stop %s sending as %s?", "{address}", "{identity}")

	s.webPage("GET /domains", RoleSupport, "domains", "Domains", s.listDomains)
	s.webPage("GET /domains/{name}", RoleSupport, "domain", "Domain", s.domainPage)
	s.webAction("POST /domains/{name}/aliases", RoleAdmin, s.addAlias, "Add %s as an alias of %s?", "alias", "{name}")
	s.webAction("POST /aliases/{alias}/remove", RoleAdmin, s.removeAlias, "Remove the alias %s?", "{alias}")
	s.webAction("POST /domains/{name}/dkim", RoleAdmin, s.generateDKIM, "Make a new DKIM key for %s?", "{name}")

	s.sendingRoutes()

	s.webPage("GET /queue", RoleSupport, "queue", "Queue", s.queuePage)
	s.webPage("GET /queue/{id}", RoleSupport, "queued", "Queued message", s.getQueued)
	s.webAction("POST /queue/{id}/retry", RoleSupport, s.retryQueued, "Try to deliver %s now?", "{id}")
	s.webAction("POST /queue/{id}/delete", RoleSupport, s.deleteQueued, "Delete %s from the queue (bounce to the sender: %s)?", "{id}", "bounce")

	s.webPage("GET /held", RoleSupport, "held", "Held accounts", s.listHeld)
	s.webPage("GET /held/{address}", RoleSupport, "heldaccount", "Held account", s.getHeld)
	s.webAction("POST /held/{address}/release", RoleSupport, s.releaseHeld,
		"Release %s: switch its SMTP access on and deliver its held mail?", "{address}")
	s.webAction("POST /held/{address}/purge", RoleSupport, s.purgeHeld,
		"Delete the held mail of %s without a single bounce? The account stays held.", "{address}")

	s.webPage("GET /logins", RoleSupport, "logins", "Logins under attack", s.listUnderAttack)
	s.webAction("POST /logins/{login}/clear", RoleSupport, s.clearUnderAttack,
		"Forget the failures of %s, so every network may try it again?", "{login}")

	s.webPage("GET /audit", RoleSupport, "audit", "Audit log", s.listAudit)
}

// setHeaders sets what every page answers with: no caching of customer
// data, no framing, and a policy that runs no script and loads only the
// server's own style sheet.
func setHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

// render writes template name with d.
func (s *Server) render(w http.ResponseWriter, status int, name string, d *pageData) {
	var b bytes.Buffer
	if err := webTemplates()[name].Execute(&b, d); err != nil {
		s.cfg.Log.Error("admin: page not rendered", "page", name, "err", err)
		http.Error(w, "internal error; see the server log", http.StatusInternalServerError)
		return
	}
	setHeaders(w)
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// newPage is the data of a page for p, taking p's flash.
func (s *Server) newPage(r *http.Request, p *principal, title, nav string) *pageData {
	d := &pageData{Title: title, Nav: nav, Staff: p.name, Admin: p.role.may(RoleAdmin), Back: r.URL.RequestURI(), URL: r.URL}
	if p.session != nil {
		d.CSRF = p.session.csrf
		s.mu.Lock()
		d.Flash, p.session.flash = p.session.flash, nil
		s.mu.Unlock()
	}
	return d
}

// setFlash keeps f for the next page p sees.
func (s *Server) setFlash(p *principal, f *flash) {
	if p.session == nil {
		return
	}
	s.mu.Lock()
	p.session.flash = f
	s.mu.Unlock()
}

// webAuth finds who makes a page request; a browser not logged in is sent
// to the login page and nil returned.
func (s *Server) webAuth(w http.ResponseWriter, r *http.Request, need Role) (*principal, error) {
	p, err := s.authenticate(r)
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusUnauthorized {
		next := r.URL.RequestURI()
		if r.Method != http.MethodGet {
			next = localPath(r.PostFormValue("back"))
		}
		http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
		return nil, nil
	}
	if err == nil && !p.role.may(need) {
		err = errorf(http.StatusForbidden, "%s may not do this: it needs the %s role", p.name, need)
	}
	return p, err
}

// webPage registers a page: GET pattern shows template tmpl with what h
// answers. h is an API read handler, or a small one of the page's own.
func (s *Server) webPage(pattern string, need Role, tmpl, title string, h handlerFunc) {
	nav := tmpl
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		p, err := s.webAuth(w, r, need)
		if p == nil && err == nil {
			return
		}
		if err != nil {
			s.errorPage(w, r, p, err)
			return
		}
		v, err := h(r, p)
		if err != nil {
			s.errorPage(w, r, p, err)
			return
		}
		if to, ok := v.(redirect); ok {
			http.Redirect(w, r, string(to), http.StatusSeeOther)
			return
		}
		d := s.newPage(r, p, title, nav)
		d.Data = v
		d.Query = r.URL.Query().Get("q")
		if nav == "find" && s.Warnings != nil {
			d.Warnings = s.Warnings()
		}
		s.render(w, http.StatusOK, tmpl, d)
	})
}

// errorPage shows an error on a page of its own, with its status.
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, p *principal, err error) {
	status, msg := s.errorStatus(r, err)
	if p == nil {
		p = &principal{}
	}
	d := s.newPage(r, p, http.StatusText(status), "")
	d.Flash = &flash{Text: msg, Error: true}
	s.render(w, status, "error", d)
}

// webAction registers a form's action: POST pattern runs the API change h
// and goes back to the page the form came from, with what h answered, or
// its error, shown there. Unless confirm is "", the first POST shows a
// confirmation step instead: confirm with the values of args ("{name}" a
// path value, else a form field) filled in, and a button that posts the
// same form again with confirmed=yes.
func (s *Server) webAction(pattern string, need Role, h handlerFunc, confirm string, args ...string) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := r.ParseForm(); err != nil {
			s.errorPage(w, r, nil, badRequest("bad form: %v", err))
			return
		}
		p, err := s.webAuth(w, r, need)
		if p == nil && err == nil {
			return
		}
		if err == nil && p.session != nil {
			err = s.checkCSRF(r, p.session)
		}
		if err != nil {
			s.errorPage(w, r, p, err)
			return
		}
		back := localPath(r.PostForm.Get("back"))
		if confirm != "" && r.PostForm.Get("confirmed") != "yes" {
			s.confirmPage(w, r, p, confirm, args, back)
			return
		}
		for _, f := range webFields {
			r.PostForm.Del(f)
		}
		v, err := h(r, p)
		if err != nil {
			_, msg := s.errorStatus(r, err)
			s.setFlash(p, &flash{Text: msg, Error: true})
		} else {
			s.setFlash(p, &flash{Text: resultText(v)})
		}
		http.Redirect(w, r, back, http.StatusSeeOther)
	})
}

// confirmPage shows the confirmation step of an action.
func (s *Server) confirmPage(w http.ResponseWriter, r *http.Request, p *principal, confirm string, args []string, back string) {
	vals := make([]any, len(args))
	for i, a := range args {
		if name, ok := strings.CutPrefix(a, "{"); ok {
			vals[i] = r.PathValue(strings.TrimSuffix(name, "}"))
			continue
		}
		v := r.PostForm.Get(a)
		if a == "enabled" || a == "bounce" {
			v = onOff(v)
		}
		vals[i] = v
	}
	d := s.newPage(r, p, "Confirm", "")
	d.Confirm = fmt.Sprintf(confirm, vals...)
	d.Action = r.URL.Path
	d.Back = back
	for k, vs := range r.PostForm {
		if k == "csrf_token" || k == "confirmed" || k == "back" || len(vs) == 0 {
			continue
		}
		d.Fields = append(d.Fields, [2]string{k, vs[0]})
	}
	s.render(w, http.StatusOK, "confirm", d)
}

// onOff says a form's boolean in words.
func onOff(v string) string {
	if b, ok := formValue(v).(bool); ok && b {
		return "on"
	}
	return "off"
}

// resultText is what a change answered, in the words the CLI prints.
func resultText(v any) string {
	switch v := v.(type) {
	case result:
		return v.Result
	case map[string]any:
		if s, ok := v["result"].(string); ok {
			return s
		}
	case *dkimView:
		return "made a new DKIM key; publish " + v.Record
	}
	return "done"
}

// localPath is p when it is a path on this server, else "/": a form's back
// field must not send the browser to another site.
func localPath(p string) string {
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(p, "/") ||
		strings.HasPrefix(p, "//") || strings.Contains(p, `\`) {
		return "/"
	}
	return p
}

// loginPage shows the login form and logs in with it, through the same
// checks and limits as the API's login.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	d := &pageData{Title: "Log in", URL: r.URL}
	next := localPath(r.URL.Query().Get("next"))
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := r.ParseForm(); err != nil {
			d.Flash = &flash{Text: "bad form", Error: true}
			s.render(w, http.StatusBadRequest, "login", d)
			return
		}
		next = localPath(r.PostForm.Get("next"))
		st, _, err := s.startSession(w, r, r.PostForm.Get("name"), r.PostForm.Get("password"))
		if err == nil && st == nil {
			return
		}
		if err == nil {
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
		status, msg := s.errorStatus(r, err)
		d.Flash = &flash{Text: msg, Error: true}
		d.Query = r.PostForm.Get("name")
		d.Back = next
		s.render(w, status, "login", d)
		return
	}
	d.Back = next
	s.render(w, http.StatusOK, "login", d)
}

// logoutPage ends the browser session, with the same CSRF check as the
// API's logout.
func (s *Server) logoutPage(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	p, err := s.authenticate(r)
	if err == nil && p.session != nil {
		err = s.checkCSRF(r, p.session)
	}
	if err == nil {
		_, err = s.logout(r, p)
	}
	var ae *apiError
	if err != nil && !(errors.As(err, &ae) && ae.status == http.StatusUnauthorized) {
		s.errorPage(w, r, p, err)
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// findPage is the Find box's page: with nothing asked it shows the box; a
// text naming one record lands on that record, else the matches are
// listed.
func (s *Server) findPage(r *http.Request, p *principal) (any, error) {
	if strings.TrimSpace(r.URL.Query().Get("q")) == "" {
		return nil, nil
	}
	v, err := s.find(r, p)
	if err != nil {
		return nil, err
	}
	res := v.(findResult)
	// A session named by id is what the customer's error line is about.
	for _, id := range res.Terms.Sessions {
		for _, sum := range res.Sessions {
			if sum.ID == id {
				return redirect("/sessions/" + id), nil
			}
		}
	}
	if len(res.Messages) > 0 {
		// Where a message went is what the question is about.
		return res, nil
	}
	switch {
	case len(res.Sessions) == 1 && len(res.Blocked)+len(res.Accounts)+len(res.Domains)+len(res.Queue) == 0:
		return redirect("/sessions/" + res.Sessions[0].ID), nil
	case len(res.Accounts) == 1 && len(res.Blocked)+len(res.Sessions)+len(res.Domains)+len(res.Queue) == 0:
		return redirect("/accounts/" + url.PathEscape(res.Accounts[0].Address)), nil
	case len(res.Domains) == 1 && len(res.Blocked)+len(res.Sessions)+len(res.Accounts)+len(res.Queue) == 0:
		return redirect("/domains/" + url.PathEscape(res.Domains[0])), nil
	case len(res.Queue) == 1 && len(res.Blocked)+len(res.Sessions)+len(res.Accounts)+len(res.Domains) == 0:
		return redirect("/queue/" + res.Queue[0].ID), nil
	}
	return res, nil
}

// setPasswordTwice is the password form's action: the password typed twice
// is its confirmation step, so it is never sent back in a page.
func (s *Server) setPasswordTwice(r *http.Request, p *principal) (any, error) {
	again := r.PostForm.Get("password_again")
	r.PostForm.Del("password_again")
	if again != r.PostForm.Get("password") {
		return nil, badRequest("the two passwords differ; type the new password twice")
	}
	return s.setPassword(r, p)
}

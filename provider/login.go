package provider

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The browser's sign-in. A person pastes a token into /login once; the
// provider answers with a cookie that holds a random session id (never
// the token) and keeps the session in memory, so a replica's restart
// signs everyone out and each replica has its own sessions. The cookie
// is a credential of the HTML pages (and /metrics, which they link) only:
// the JSON API takes bearer tokens alone, so that no other site can make
// a browser call it with the cookie.
const (
	sessionCookie = "gcefleet_session"
	// sessionTTL is how long a sign-in lasts: a working day.
	sessionTTL = 12 * time.Hour
	// maxSessions bounds the sessions kept; a sign-in beyond it ends
	// the session that would have expired first.
	maxSessions = 1000
	// loginRate and loginBurst bound sign-in attempts, whatever their
	// source, so that guessing tokens through the form is hopeless.
	loginRate  = 5
	loginBurst = 10
)

type session struct {
	p       Principal
	expires time.Time
}

// sessions are the signed-in browsers.
type sessions struct {
	mu    sync.Mutex
	byID  map[string]session
	login *rate.Limiter
}

func newSessions() *sessions {
	return &sessions{byID: map[string]session{}, login: rate.NewLimiter(loginRate, loginBurst)}
}

// start makes a session for p and returns its id.
func (ss *sessions) start(p Principal, now time.Time) string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	id := base64.RawURLEncoding.EncodeToString(b)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, s := range ss.byID {
		if now.After(s.expires) {
			delete(ss.byID, k)
		}
	}
	if len(ss.byID) >= maxSessions {
		var first string
		for k, s := range ss.byID {
			if first == "" || s.expires.Before(ss.byID[first].expires) {
				first = k
			}
		}
		delete(ss.byID, first)
	}
	ss.byID[id] = session{p: p, expires: now.Add(sessionTTL)}
	return id
}

// lookup returns the principal of session id, if it is current.
func (ss *sessions) lookup(id string, now time.Time) (Principal, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	if !ok || now.After(s.expires) {
		delete(ss.byID, id)
		return Principal{}, false
	}
	return s.p, true
}

func (ss *sessions) end(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
}

// sessionKey carries a page request's signed-in principal to principal.
type sessionKey struct{}

// signedIn returns the principal of r's session cookie, if any.
func (s *Server) signedIn(r *http.Request) (Principal, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return Principal{}, false
	}
	return s.sessions.lookup(c.Value, time.Now())
}

// page lets a signed-in browser through to h (which wrap makes) by
// carrying its principal in the request's context; a request with
// neither a session nor a bearer token is sent to /login when it asks
// for a page, and to wrap's 401 otherwise.
func (s *Server) page(redirect bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			p, ok := s.signedIn(r)
			if ok {
				r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, p))
			} else if redirect {
				http.Redirect(w, r, "login", http.StatusSeeOther)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html><head><title>Sign in: gcefleet Machine Provider</title>
<meta name="viewport" content="width=device-width">
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}input{font-size:1em;padding:4px}.err{color:#b00020}</style></head>
<body><h1>gcefleet Machine Provider</h1>
{{if .Error}}<p class="err" id="error">{{.Error}}</p>{{end}}
<form method="post" action="login">
<p><label for="token">Token (any token of the provider's configuration; the role decides what the page shows):</label><br>
<input type="password" id="token" name="token" size="50" autocomplete="current-password" autofocus required></p>
<p><button type="submit" id="signin">Sign in</button></p>
</form>
<p>The token is sent once; the browser keeps a session cookie for {{.TTL}}.</p>
</body></html>
`))

func (s *Server) loginForm(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	loginPage.Execute(w, map[string]any{"Error": msg, "TTL": "12 hours"})
}

// getLogin serves the sign-in form, or sends a signed-in browser home.
func (s *Server) getLogin(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.signedIn(r); ok {
		http.Redirect(w, r, "./", http.StatusSeeOther)
		return
	}
	s.loginForm(w, http.StatusOK, "")
}

// postLogin checks a token from the form and starts a session for it.
func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) {
	if !s.sessions.login.Allow() {
		w.Header().Set("Retry-After", "1")
		s.loginForm(w, http.StatusTooManyRequests, "Too many sign-in attempts: wait a few seconds and try again.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		s.loginForm(w, http.StatusBadRequest, "The form could not be read: send the token field of this form (at most 4 KiB).")
		return
	}
	tok := r.PostForm.Get("token")
	p, ok := s.tokenPrincipal(tok)
	if !ok {
		s.log.Warn("sign-in refused: unknown token", "remote", r.RemoteAddr)
		s.loginForm(w, http.StatusUnauthorized, "Unknown token: paste a token from the provider's configuration (its tokens list).")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: s.sessions.start(p, time.Now()), Path: "/",
		MaxAge: int(sessionTTL / time.Second), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r),
	})
	s.log.Info("signed in", "name", p.Name, "role", p.Role, "remote", r.RemoteAddr)
	http.Redirect(w, r, "./", http.StatusSeeOther)
}

// logout ends the browser's session. It is a POST (a form's button), and
// the cookie is SameSite=Strict, so no other site can sign anyone out.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.end(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
	http.Redirect(w, r, "login", http.StatusSeeOther)
}

// overTLS says whether the browser reached r over TLS: here, or at a
// proxy in front that says so. Believing the header can only add Secure
// to a cookie, which keeps it off plain HTTP; it grants nothing.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// tokenPrincipal returns whose tok is, comparing it with every token in
// constant time.
func (s *Server) tokenPrincipal(tok string) (Principal, bool) {
	if tok == "" {
		return Principal{}, false
	}
	var p Principal
	found := false
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) == 1 && !found {
			p, found = Principal{Name: t.Name, Role: t.Role}, true
		}
	}
	return p, found
}

// handlePages registers the sign-in routes on mux; the cross-origin
// check refuses a POST another site's page makes (a sign-in CSRF).
func (s *Server) handlePages(mux *http.ServeMux) {
	csrf := http.NewCrossOriginProtection()
	mux.HandleFunc("GET /login", s.getLogin)
	mux.Handle("POST /login", csrf.Handler(http.HandlerFunc(s.postLogin)))
	mux.Handle("POST /logout", csrf.Handler(http.HandlerFunc(s.logout)))
}

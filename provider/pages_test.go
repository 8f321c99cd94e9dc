package provider_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/provider"
	"github.com/gcefleet/gcefleet/store"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func get(t *testing.T, u string, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	return do(t, noRedirect, req)
}

// post sends a form as a browser on the page's own origin would.
func post(t *testing.T, u string, form url.Values, cookie *http.Cookie, site string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", site)
	if cookie != nil {
		req.AddCookie(cookie)
	}
	return do(t, noRedirect, req)
}

func signIn(t *testing.T, base, token string) *http.Cookie {
	t.Helper()
	resp, body := post(t, base+"/login", url.Values{"token": {token}}, nil, "same-origin")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("sign-in: %s %q\n%s", resp.Status, resp.Header.Get("Location"), body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "gcefleet_session" {
			return c
		}
	}
	t.Fatalf("sign-in set no session cookie: %v", resp.Header["Set-Cookie"])
	return nil
}

func TestSignIn(t *testing.T) {
	w := start(t)
	// Not signed in: the page sends the browser to the form.
	resp, _ := get(t, w.url+"/", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("GET / without a session: %s, Location %q; want 303 to login", resp.Status, resp.Header.Get("Location"))
	}
	resp, body := get(t, w.url+"/login", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `method="post"`) {
		t.Fatalf("GET /login: %s\n%s", resp.Status, body)
	}
	resp, body = post(t, w.url+"/login", url.Values{"token": {"not-a-token"}}, nil, "same-origin")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Unknown token") || len(resp.Cookies()) != 0 {
		t.Fatalf("sign-in with a bad token: %s %v\n%s", resp.Status, resp.Cookies(), body)
	}

	c := signIn(t, w.url, "admin-secret-0123456789")
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" || c.MaxAge <= 0 {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, not Secure on plain HTTP, Path=/ and a lifetime", c)
	}
	if strings.Contains(c.Value, "admin-secret") || len(c.Value) < 40 {
		t.Errorf("cookie value %q: want a random session id, not the token", c.Value)
	}
	resp, body = get(t, w.url+"/", c)
	if resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <b>ops</b> (admin)") || !strings.Contains(body, `id="signout"`) {
		t.Fatalf("GET / signed in: %s\n%s", resp.Status, body)
	}
	if resp, _ := get(t, w.url+"/login", c); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET /login signed in: %s; want a redirect home", resp.Status)
	}
	if resp, body := get(t, w.url+"/metrics", c); resp.StatusCode != 200 || !strings.Contains(body, "gcefleet_provider_leases") {
		t.Errorf("GET /metrics signed in: %s", resp.Status)
	}

	// The JSON API takes bearer tokens only: a cookie there would let
	// other sites act for the browser.
	for _, u := range []string{"/v1/leases", "/v1/machines"} {
		resp, body := get(t, w.url+u, c)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "bearer token") {
			t.Errorf("GET %s with only the cookie: %s %s; want 401", u, resp.Status, body)
		}
	}
	req, _ := http.NewRequest("POST", w.url+"/v1/leases", strings.NewReader(`{"request_id":"csrf","dimensions":{"os":["linux"]},"term":{"duration":3600000000000}}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(c)
	if resp, body := do(t, noRedirect, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /v1/leases with only the cookie: %s %s; want 401", resp.Status, body)
	}
	// Bearer tokens work on the page as before, and a bad one is a 401.
	req, _ = http.NewRequest("GET", w.url+"/", nil)
	req.Header.Set("Authorization", "Bearer alice-secret-0123456789")
	if resp, body := do(t, noRedirect, req); resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <b>alice</b> (client)") || strings.Contains(body, `id="signout"`) {
		t.Errorf("GET / with a bearer token: %s\n%s", resp.Status, body)
	}
	req.Header.Set("Authorization", "Bearer wrong")
	if resp, _ := do(t, noRedirect, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET / with a bad bearer token: %s; want 401", resp.Status)
	}

	// Another site cannot sign the browser out (nor in).
	if resp, _ := post(t, w.url+"/logout", nil, c, "cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST /logout: %s; want 403", resp.Status)
	}
	if resp, _ := post(t, w.url+"/login", url.Values{"token": {"admin-secret-0123456789"}}, nil, "cross-site"); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("cross-site POST /login: %s; want 403", resp.Status)
	}
	if resp, _ := get(t, w.url+"/", c); resp.StatusCode != 200 {
		t.Fatalf("the session ended by a cross-site POST: %s", resp.Status)
	}
	if resp, _ := get(t, w.url+"/logout", c); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /logout: %s; want 405 (sign-out is a POST)", resp.Status)
	}
	resp, _ = post(t, w.url+"/logout", nil, c, "same-origin")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("POST /logout: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	// The old cookie is dead on the server, not only in the browser.
	if resp, _ := get(t, w.url+"/", c); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET / after signing out: %s; want a redirect to login", resp.Status)
	}
}

func TestSignInRateLimited(t *testing.T) {
	w := start(t)
	limited := 0
	for range 40 {
		resp, body := post(t, w.url+"/login", url.Values{"token": {"guess"}}, nil, "same-origin")
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if !strings.Contains(body, "Too many sign-in attempts") {
				t.Errorf("429 body: %s", body)
			}
		}
	}
	if limited == 0 {
		t.Fatal("40 sign-in attempts in a row were all checked; want some refused with 429")
	}
}

func TestSignInSecureUnderTLS(t *testing.T) {
	cfg, err := provider.ParseConfig("test.yaml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewTLSServer(provider.New(st, cfg, slog.New(slog.DiscardHandler)).Handler())
	defer srv.Close()
	c := srv.Client()
	c.CheckRedirect = noRedirect.CheckRedirect
	req, _ := http.NewRequest("POST", srv.URL+"/login", strings.NewReader("token=admin-secret-0123456789"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, _ := do(t, c, req)
	if len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Fatalf("sign-in under TLS: %s %v; want one Secure cookie", resp.Status, resp.Header["Set-Cookie"])
	}
	// Behind a proxy that ends TLS, as serve is deployed.
	plain := httptest.NewServer(srv.Config.Handler)
	defer plain.Close()
	req, _ = http.NewRequest("POST", plain.URL+"/login", strings.NewReader("token=admin-secret-0123456789"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, _ = do(t, noRedirect, req)
	if len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Fatalf("sign-in behind a TLS proxy: %s %v; want one Secure cookie", resp.Status, resp.Header["Set-Cookie"])
	}
}

// TestStatusPageShowsRequests checks the leases table: what a waiting
// request asks for, how long it has waited and its deadline; and that
// dimensions leave out instance_id.
func TestStatusPageShowsRequests(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	m := machine("vm-1")
	m.Dimensions = store.Dimensions{"os": {"linux"}, "cpus": {"8"}, "instance_id": {"1234567890123"}}
	if _, err := w.gce.AddMachine(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := w.alice.RequestLease(ctx, lease("job-1")); err != nil {
		t.Fatal(err)
	}
	stuck := store.LeaseRequest{RequestID: "job-2", Dimensions: store.Dimensions{"os": {"windows"}, "gpu": {"t4"}},
		Term: store.Term{Duration: time.Hour}, Deadline: time.Now().Add(30 * time.Minute)}
	if _, err := w.bob.RequestLease(ctx, stuck); err != nil {
		t.Fatal(err)
	}
	c := signIn(t, w.url, "admin-secret-0123456789")
	resp, body := get(t, w.url+"/", c)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: %s", resp.Status)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="15">`,
		"Active leases (2: 1 waiting)",
		"<td>gpu=t4 os=windows</td>",   // what the stuck request asks for
		`class="waiting">waiting 0 s<`, // how long it has waited
		">in 29 min<",                  // its deadline
		"<td>cpus=8 os=linux</td>",     // a machine's dimensions, without instance_id
		"Leases active", "Oldest wait", // the charts
		"<svg",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, "instance_id") {
		t.Error("the page shows instance_id")
	}
	// A client sees its own leases, no machines and no charts.
	req, _ := http.NewRequest("GET", w.url+"/", nil)
	req.Header.Set("Authorization", "Bearer bob-secret-0123456789")
	_, body = do(t, noRedirect, req)
	if !strings.Contains(body, "Active leases (1: 1 waiting)") || strings.Contains(body, "<h2>Machines") || strings.Contains(body, "<svg") || strings.Contains(body, "<td>alice</td>") {
		t.Errorf("bob's page:\n%s", body)
	}
}

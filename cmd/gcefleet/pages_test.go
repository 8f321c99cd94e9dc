package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gcefleet/gcefleet/internal/testutil"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// serveFleet serves a provider with a GCE Backend on the emulator, with
// its two machines cataloged, one leased by alice and a request of hers
// that no machine can meet; it returns the provider's URL.
func serveFleet(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFleet(t, dir)
	config := filepath.Join(dir, "provider.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(providerCfg, filepath.Join(dir, "p.db"))+"backend: {config: fleet.yaml, token: gce}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := serveInProcess(t, config)
	ctx := context.Background()
	admin := &client.Client{BaseURL: url, Token: adminToken}
	alice := &client.Client{BaseURL: url, Token: aliceToken}
	testutil.WaitFor(t, "the group's instances to be cataloged", func() bool {
		ms, err := admin.Machines(ctx)
		return err == nil && len(ms) == 2
	})
	if l, err := alice.RequestLease(ctx, store.LeaseRequest{RequestID: "job-1", Dimensions: store.Dimensions{"os": {"linux"}}, Term: store.Term{Duration: time.Hour}}); err != nil || l.State != store.Fulfilled {
		t.Fatalf("lease: %+v, %v", l, err)
	}
	// The page shows the backend's view of its group, which catches up
	// with the lease at its next pass: wait for that, as a person would
	// wait for the page's next refresh.
	testutil.WaitFor(t, "the backend to count the leased machine", func() bool {
		req, err := http.NewRequest("GET", url+"/metrics", nil)
		if err != nil {
			return false
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return err == nil && regexp.MustCompile(`(?m)^gcefleet_backend_instances\{[^}]*state="leased"[^}]*\} 1$`).Match(b)
	})
	// The backend offers no gpu=t4: a machine added by hand, and leased,
	// makes it a kind the provider has, so that a request for another
	// waits rather than being refused.
	if _, err := admin.AddMachine(ctx, store.Machine{Hostname: "vm-gpu", Backend: "hand", Dimensions: store.Dimensions{"os": {"linux"}, "gpu": {"t4"}}}); err != nil {
		t.Fatal(err)
	}
	if l, err := admin.RequestLease(ctx, store.LeaseRequest{RequestID: "ops-gpu", Dimensions: store.Dimensions{"gpu": {"t4"}}, Term: store.Term{Duration: time.Hour}}); err != nil || l.State != store.Fulfilled {
		t.Fatalf("the hand-added machine's lease: %+v, %v", l, err)
	}
	stuck := store.LeaseRequest{RequestID: "job-2", Dimensions: store.Dimensions{"os": {"linux"}, "gpu": {"t4"}}, Term: store.Term{Duration: time.Hour}}
	if l, err := alice.RequestLease(ctx, stuck); err != nil || l.State != store.Pending {
		t.Fatalf("the request no machine meets: %+v, %v", l, err)
	}
	return url
}

// TestStatusPageInABrowser signs in to the provider's status page in
// headless chromium, checks what the page shows each role, and signs out.
func TestStatusPageInABrowser(t *testing.T) {
	ctx := testutil.Browser(t)
	url := serveFleet(t)

	// Not signed in, the page is the sign-in form.
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/"), chromedp.WaitVisible("#token")); err != nil {
		t.Fatal(err)
	}
	at, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if at != url+"/login" {
		t.Errorf("an unsigned browser at / is at %s; want %s/login", at, url)
	}
	testutil.Screenshot(t, ctx, "provider-login.png")
	// A wrong token is refused on the form.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#token", "not-a-token"), chromedp.Click("#signin"), chromedp.WaitVisible("#error")); err != nil {
		t.Fatal(err)
	}
	testutil.WantText(t, "the refused sign-in", testutil.PageText(t, ctx, "#error"), "Unknown token")

	if err := chromedp.Do(ctx, chromedp.SendKeys("#token", adminToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who")); err != nil {
		t.Fatal(err)
	}
	testutil.WantText(t, "the admin's heading", testutil.PageText(t, ctx, "#who"), "Signed in as ops (admin)", "Sign out", "refreshes every 15 s")
	testutil.WantText(t, "the charts", testutil.PageText(t, ctx, "#charts"),
		"Leases active", "active 2", "Requests waiting", "waiting 1", "Oldest wait",
		"Group pool", "(us-east1-b)", "target 2", "current 2", "leased 1", "idle 1")
	leases := testutil.PageText(t, ctx, "#leases")
	testutil.WantText(t, "the leases table", leases, "requested dimensions", "waited", "deadline", "gpu=t4 os=linux", "waiting ", "in 23 h", "ago")
	machines := testutil.PageText(t, ctx, "#machines")
	testutil.WantText(t, "the machines table", machines, "os=linux", "zone=us-east1-b")
	if strings.Contains(machines, "instance_id") {
		t.Errorf("the machines table shows instance_id:\n%s", machines)
	}
	testutil.WantText(t, "the page", testutil.PageText(t, ctx, "body"), "GCE Backend", "This replica leads")
	svgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#charts svg polyline, #charts svg circle").length`))
	if err != nil {
		t.Fatal(err)
	}
	if svgs < 4 {
		t.Errorf("%d lines drawn in the charts; want one a series at least", svgs)
	}
	testutil.Screenshot(t, ctx, "provider-status-admin.png")

	// Signing out ends the session: the page is the form again.
	if err := chromedp.Do(ctx, chromedp.Click("#signout"), chromedp.WaitVisible("#token"), chromedp.Navigate(url+"/"), chromedp.WaitVisible("#token")); err != nil {
		t.Fatal(err)
	}
	// A client sees its own leases and neither machines nor charts.
	if err := chromedp.Do(ctx, chromedp.SendKeys("#token", aliceToken), chromedp.Click("#signin"), chromedp.WaitVisible("#who")); err != nil {
		t.Fatal(err)
	}
	body := testutil.PageText(t, ctx, "body")
	testutil.WantText(t, "alice's page", body, "Signed in as alice (client)", "Active leases (2: 1 waiting)", "gpu=t4 os=linux")
	for _, not := range []string{"Machines (", "The last hour", "GCE Backend"} {
		if strings.Contains(body, not) {
			t.Errorf("alice's page shows %q", not)
		}
	}
	testutil.Screenshot(t, ctx, "provider-status-client.png")
}

// TestGrafanaDashboardNamesRealMetrics checks that every metric the
// dashboard in docs/ queries is one a provider with a backend exports.
func TestGrafanaDashboardNamesRealMetrics(t *testing.T) {
	data, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	url := serveFleet(t)
	var scraped string
	// The backend's job durations appear once its jobs have run.
	testutil.WaitFor(t, "the backend's metrics", func() bool {
		scraped = adminGet(url + "/metrics")
		return strings.Contains(scraped, "gcefleet_backend_job_seconds_bucket{") && strings.Contains(scraped, "gcefleet_backend_converged ")
	})
	exported := map[string]bool{}
	for _, line := range strings.Split(scraped, "\n") {
		if name, _, ok := strings.Cut(line, "{"); ok && !strings.HasPrefix(line, "#") {
			exported[name] = true
		} else if name, _, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			exported[name] = true
		}
	}
	metric := regexp.MustCompile(`\bgcefleet_[a-z0-9_]+`)
	named := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metric.FindAllString(tg.Expr, -1) {
				named++
				if !exported[name] {
					t.Errorf("panel %q queries %s, which /metrics does not export", p.Title, name)
				}
			}
		}
	}
	if named < 15 {
		t.Errorf("the dashboard names %d metrics; want the provider's and the backend's", named)
	}
}

// TestServeHelpSaysHowToScrape: serve --help tells an operator how
// Prometheus scrapes /metrics and how a browser signs in.
func TestServeHelpSaysHowToScrape(t *testing.T) {
	code, out, stderr := runCLI(t, nil, "serve", "--help")
	help := out + stderr
	for _, want := range []string{"/login", "authorization: {type: Bearer, credentials_file:", "scrape_configs:"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help (exit %d) lacks %q:\n%s", code, want, help)
		}
	}
}

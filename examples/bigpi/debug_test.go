package main

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gcefleet/gcefleet/emulator"
	"github.com/gcefleet/gcefleet/internal/testutil"
)

// TestBigpiDebugPageInABrowser runs bigpi on the emulator with -debug and
// reads its status page in headless chromium while it samples: the run,
// the system and zones, rounded uptimes and a profile link per machine.
func TestBigpiDebugPageInABrowser(t *testing.T) {
	ctx := testutil.Browser(t)
	bin := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/examples/bigpi")
	boot := testutil.GoBuild(t, "github.com/gcefleet/gcefleet/cmd/gceboot")
	_, url := testutil.Emulator(t, emulator.Options{Images: map[string]string{"gcr.io/pi-project/gceboot": boot}})

	// Enough samples that bigpi runs until the test stops it.
	cmd := exec.Command(bin, "-system=gce", "-nmach=2", "-samples=1e15", "-debug=127.0.0.1:0",
		"-gce.compute-endpoint="+url, "-gce.project=pi-project", "-gce.zones=us-west1-b",
		"-gce.image=gcr.io/pi-project/gceboot:v1", "-gce.machine-type=e2-standard-4")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	log := &testutil.SyncBuffer{}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, log))
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("bigpi wrote:\n%s", log)
		}
	})
	var page string
	timeout := time.After(30 * time.Second)
	for page == "" {
		select {
		case l := <-lines:
			if u, ok := strings.CutPrefix(l, "status page: "); ok {
				page = u
			}
		case err := <-exited:
			t.Fatalf("bigpi exited (%v) before it said where its status page is", err)
		case <-timeout:
			t.Fatal("bigpi did not say where its status page is within 30s")
		}
	}
	// Keepalives fill in the machines' vital signs, uptime among them.
	testutil.WaitWithin(t, 60*time.Second, "both machines running, with a keepalive, on the status page", func() bool {
		resp, err := http.Get(page)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return err == nil && strings.Count(string(b), "<td>Running</td>") == 2 && !strings.Contains(string(b), "<td>never</td>")
	})

	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible("#machines")); err != nil {
		t.Fatal(err)
	}
	facts := testutil.PageText(t, ctx, "#facts")
	testutil.WantText(t, "the page's facts", facts, "system", "gce", "program", "bigpi: 2 machines, 1000000000000000 samples",
		"project", "pi-project", "zones", "us-west1-b", "driver up", "2 running of 2")
	run := regexp.MustCompile(`run (r[0-9a-f]+): instances are labelled`).FindStringSubmatch(log.String())
	if run == nil {
		t.Fatal("bigpi did not name its run")
	}
	testutil.WantText(t, "the page's facts", facts, run[1])
	uptimes, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#machines tr td:nth-child(5)")).map(td => td.innerText)`))
	if err != nil {
		t.Fatal(err)
	}
	rounded := regexp.MustCompile(`^([0-9]+ms|[0-9]+(\.[0-9])?s|[0-9]+m[0-9]+s)$`)
	if len(uptimes) != 2 {
		t.Errorf("uptimes %q; want one a machine", uptimes)
	}
	for _, u := range uptimes {
		if !rounded.MatchString(u) {
			t.Errorf("uptime %q is not rounded (like 7.8s)", u)
		}
	}
	links, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#machines a")).map(a => a.getAttribute("href"))`))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(links); n != 8 || !strings.HasPrefix(links[0], "pprof/heap?machine=bigm-") {
		t.Errorf("machine links %q; want heap, goroutine, CPU and vars of each", links)
	}
	refresh, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('meta[http-equiv="refresh"]').content`))
	if err != nil || refresh != "5" {
		t.Errorf("refresh %q, %v; want the page to refresh every 5 s", refresh, err)
	}
	testutil.Screenshot(t, ctx, "bigpi-debug.png")
	// A machine's variables, from its link.
	if err := chromedp.Do(ctx, chromedp.Navigate(page+"vars?machine="+strings.TrimPrefix(links[3], "vars?machine="))); err != nil {
		t.Fatal(err)
	}
	testutil.WantText(t, "a machine's vars", testutil.PageText(t, ctx, "body"), "bigm-")

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("bigpi did not stop within 60s of SIGINT")
	}
}

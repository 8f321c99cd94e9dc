package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserTimeout bounds everything a test does in its browser.
const browserTimeout = 60 * time.Second

// Browser starts a headless chromium for the test and returns the context
// that chromedp's actions run in; the browser ends with the test. Without
// chromium (Debian's chromium package) the test is skipped with a loud
// SKIPPED, NEEDS CHROMIUM, or fails when CI=true.
func Browser(t testing.TB) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		msg := "chromium (apt-get install chromium) to test the pages in a real browser"
		if os.Getenv("CI") == "true" {
			t.Fatal("this system lacks " + msg)
		}
		loud(fmt.Sprintf("%s: SKIPPED, NEEDS CHROMIUM: this system lacks %s\n", t.Name(), msg))
		t.Skip("SKIPPED, NEEDS CHROMIUM: this system lacks " + msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in containers
		chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), browserTimeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// Start the browser now, so that a failure to start is the test's.
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
	})
	return bctx
}

// Screenshot saves a PNG of the whole page the browser shows as name in
// the artifacts directory (GCEFLEET_ARTIFACTS, or the test's temporary
// directory) and returns its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("GCEFLEET_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// PageText returns the text of the element sel matches (its innerText,
// as a person reads it).
func PageText(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("reading %s: %v", sel, err)
	}
	return text
}

// WantText fails the test for each of want that text lacks.
func WantText(t testing.TB, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q; it reads:\n%s", what, w, text)
		}
	}
}

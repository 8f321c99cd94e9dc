package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/gcefleet/gcefleet/internal/testutil"
)

// floodLimit is the descriptor limit the flooded processes run under;
// each flood opens more connections than that.
const floodLimit, floodConns = 256, 400

// startLimited runs this test binary as gcefleet with args under a
// descriptor limit of floodLimit and returns the first line it prints.
func startLimited(t *testing.T, env []string, args ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sh := append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, floodLimit), self}, args...)
	_, out := testutil.StartProcess(t, append([]string{"GCEFLEET_TEST_ROLE=cli"}, env...), "sh", sh...)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the address gcefleet %s prints: %v", args[0], err)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line)
}

// flood opens floodConns connections to addr, each sending req once and
// reading what comes back, and leaves them open and idle until the test
// ends. It returns once each has been answered, closed or given up
// (after 5s: on a server out of descriptors they wait in the backlog).
func flood(t *testing.T, addr, req string) {
	t.Helper()
	var (
		mu       sync.Mutex
		answered int
		wg       sync.WaitGroup
	)
	conns := make([]net.Conn, 0, floodConns)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range floodConns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flooding %s: %v", addr, err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, req); err != nil {
				return
			}
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				answered++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections to %s, %d answered", floodConns, addr, answered)
}

// within calls f, which must succeed within 2s.
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	start := time.Now()
	err := f()
	if took := time.Since(start); err != nil || took > 2*time.Second {
		t.Errorf("%s after the flood: %v in %v, want an answer within 2s", what, err, took.Round(time.Millisecond))
	}
}

// TestProviderSurvivesAConnectionFlood: more idle connections than the
// provider has descriptors, each having sent one unauthenticated
// request, do not keep an authenticated client from being answered.
func TestProviderSurvivesAConnectionFlood(t *testing.T) {
	url := startLimited(t, nil, "serve", "--config", writeConfig(t, filepath.Join(t.TempDir(), "p.db")))
	addr := strings.TrimPrefix(url, "http://")
	flood(t, addr, "GET /v1/leases HTTP/1.1\r\nHost: x\r\n\r\n")
	hc := &http.Client{Timeout: 2 * time.Second}
	within(t, "an authenticated request", func() error {
		req, err := http.NewRequest("GET", url+"/v1/leases", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+aliceToken)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// TestEmulatorSurvivesAConnectionFlood: the same for the emulator's API.
func TestEmulatorSurvivesAConnectionFlood(t *testing.T) {
	url := startLimited(t, nil, "emulator", "--listen", "127.0.0.1:0")
	flood(t, strings.TrimPrefix(url, "http://"), "GET /compute/v1/projects/p/zones/us-central1-a/instances HTTP/1.1\r\nHost: x\r\n\r\n")
	svc, err := compute.NewService(t.Context(), option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication(),
		option.WithHTTPClient(&http.Client{Timeout: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	within(t, "listing instances", func() error {
		_, err := svc.Instances.List("p", "us-central1-a").Do()
		return err
	})
}

// TestMetadataServerSurvivesAConnectionFlood: the same for an instance's
// metadata server, flooded with requests that lack Metadata-Flavor.
func TestMetadataServerSurvivesAConnectionFlood(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const image = "gcr.io/test/sleeper"
	url := startLimited(t, nil, "emulator", "--listen", "127.0.0.1:0", "--image", image+"="+self)
	svc, err := compute.NewService(t.Context(), option.WithEndpoint(url+"/compute/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	insertSleeper(t, svc, image)
	var meta string
	testutil.WaitFor(t, "the instance's metadata server", func() bool {
		out, err := svc.Instances.GetSerialPortOutput("p", "us-central1-a", "sleeper").Do()
		if err != nil {
			t.Fatal(err)
		}
		if _, rest, ok := strings.Cut(out.Contents, "GCE_METADATA_HOST="); ok {
			meta = strings.Fields(rest)[0]
		}
		return meta != ""
	})
	flood(t, meta, "GET /computeMetadata/v1/instance/name HTTP/1.1\r\nHost: x\r\n\r\n")
	hc := &http.Client{Timeout: 2 * time.Second}
	within(t, "reading the instance's name", func() error {
		req, err := http.NewRequest("GET", "http://"+meta+"/computeMetadata/v1/instance/name", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Metadata-Flavor", "Google")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "sleeper" {
			return fmt.Errorf("%d %q, %v", resp.StatusCode, b, err)
		}
		return nil
	})
}

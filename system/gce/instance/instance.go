// Package instance is what a bigmachine machine on Compute Engine knows of
// itself, through the metadata server: its configuration, its address, and
// how to delete its own instance. It is small on purpose: gceboot, the
// bootstrap every instance boots, is built on it and nothing heavier.
package instance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"

	"github.com/gcefleet/gcefleet/bigmachine"
)

// Metadata keys the gce system sets on each instance.
const (
	// ConfigKey holds the machine's bigmachine.WorkerConfig, its
	// credentials included; it is set on each instance alone.
	ConfigKey = "bigmachine-config"
	// EndpointKey holds the Compute endpoint the machine deletes itself
	// through; absent on real GCE.
	EndpointKey = "bigmachine-compute-endpoint"
)

// Config waits for the driver to put this machine's configuration in its
// metadata and returns it.
func Config(ctx context.Context) (bigmachine.WorkerConfig, error) {
	host := os.Getenv("GCE_METADATA_HOST")
	if host == "" {
		host = "169.254.169.254"
	}
	base := "http://" + host + "/computeMetadata/v1/instance/attributes/?recursive=true&alt=json"
	etag := ""
	for {
		u := base
		if etag != "" {
			u += "&wait_for_change=true&timeout_sec=60&last_etag=" + url.QueryEscape(etag)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return bigmachine.WorkerConfig{}, err
		}
		req.Header.Set("Metadata-Flavor", "Google")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return bigmachine.WorkerConfig{}, err
			}
			etag = ""
			select { // the metadata server is restarting; ask again soon
			case <-time.After(time.Second):
			case <-ctx.Done():
				return bigmachine.WorkerConfig{}, ctx.Err()
			}
			continue
		}
		var attrs map[string]string
		err = json.NewDecoder(resp.Body).Decode(&attrs)
		resp.Body.Close()
		if err != nil {
			return bigmachine.WorkerConfig{}, fmt.Errorf("instance attributes: %w", err)
		}
		if v, ok := attrs[ConfigKey]; ok {
			return bigmachine.DecodeWorkerConfig(v)
		}
		etag = resp.Header.Get("ETag")
	}
}

// Listen listens on addr; a missing host means the instance's internal
// address.
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if host, err = metadata.InternalIPWithContext(ctx); err != nil {
			return nil, fmt.Errorf("this instance's address from the metadata server: %w", err)
		}
	}
	return net.Listen("tcp", net.JoinHostPort(host, port))
}

// DeleteSelf deletes the instance it runs on, with the instance's service
// account token from the metadata server. It does not wait: the
// instance's end ends this process. It is one REST call, made directly so
// that the bootstrap need not carry a Compute client.
func DeleteSelf(ctx context.Context) error {
	var project, zone, name, token string
	for _, f := range []struct {
		dst *string
		get func(context.Context) (string, error)
	}{
		{&project, metadata.ProjectIDWithContext},
		{&zone, metadata.ZoneWithContext},
		{&name, metadata.InstanceNameWithContext},
		{&token, accessToken},
	} {
		v, err := f.get(ctx)
		if err != nil {
			return err
		}
		*f.dst = v
	}
	endpoint, _ := metadata.InstanceAttributeValueWithContext(ctx, EndpointKey)
	if endpoint == "" {
		endpoint = "https://compute.googleapis.com"
	}
	u := fmt.Sprintf("%s/compute/v1/projects/%s/zones/%s/instances/%s?requestId=%s", strings.TrimSuffix(endpoint, "/"), project, zone, name, requestID())
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			switch {
			case resp.StatusCode < 300 || resp.StatusCode == http.StatusNotFound:
				return nil
			case resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode < 500 && !strings.Contains(string(body), "rateLimitExceeded"):
				return fmt.Errorf("deleting instance %s: %s: %s", name, resp.Status, body)
			}
			err = fmt.Errorf("deleting instance %s: %s", name, resp.Status)
		}
		if attempt == 5 {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff *= 2
	}
}

func accessToken(ctx context.Context) (string, error) {
	s, err := metadata.GetWithContext(ctx, "instance/service-accounts/default/token")
	if err != nil {
		return "", fmt.Errorf("service account token: %w", err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(s), &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("service account token: unexpected answer")
	}
	return tok.AccessToken, nil
}

// requestID returns a new random UUID for a Compute API requestId, which
// makes a retried mutation happen once. (The gce package has the same;
// this package stays clear of the Compute client, for gceboot's size.)
func requestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

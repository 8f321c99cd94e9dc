// Package instance is what a bigmachine machine on Compute Engine knows of
// itself, through the metadata server: its boot configuration, its
// address, how to prove who it is for its certificate, and how to delete
// its own instance. It is small on purpose: gceboot, the
// bootstrap every instance boots, is built on it and nothing heavier.
package instance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
)

// Metadata keys the gce system sets on each instance. Instance metadata is
// readable by every viewer of the project, so they hold nothing secret.
const (
	// BootKey holds the machine's BootConfig, set at insert.
	BootKey = "bigmachine-boot"
	// EndpointKey holds the Compute endpoint the machine deletes itself
	// through; absent on real GCE.
	EndpointKey = "bigmachine-compute-endpoint"
)

// BootConfig is what a machine learns from its metadata: only public
// things. It makes its own key and proves who it is to get its
// certificate (see Enroll).
type BootConfig struct {
	// CA is the run's CA certificate (PEM): the machine accepts only a
	// certificate it issued, and only the driver it certified.
	CA []byte `json:"ca"`
	// Nonce is the run's, bound into the machine's identity token.
	Nonce string `json:"nonce"`
	// Listen is the address the machine serves on, such as ":8443".
	Listen string `json:"listen"`
	// Timeout is how long the worker waits for a keepalive.
	Timeout time.Duration `json:"timeout"`
}

// Encode returns c as metadata holds it.
func (c BootConfig) Encode() string {
	b, _ := json.Marshal(c)
	return string(b)
}

// DecodeBootConfig parses what Encode returned.
func DecodeBootConfig(s string) (BootConfig, error) {
	var c BootConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return c, fmt.Errorf("bad %s in the instance metadata: %w", BootKey, err)
	}
	if len(c.CA) == 0 || c.Nonce == "" || c.Listen == "" {
		return c, fmt.Errorf("%s in the instance metadata lacks the CA, nonce or address", BootKey)
	}
	return c, nil
}

// Boot returns this machine's BootConfig from the metadata server, asking
// again while the metadata server does not answer, until ctx ends.
func Boot(ctx context.Context) (BootConfig, error) {
	for {
		v, err := metadata.InstanceAttributeValueWithContext(ctx, BootKey)
		var undef metadata.NotDefinedError
		switch {
		case err == nil:
			return DecodeBootConfig(v)
		case errors.As(err, &undef):
			return BootConfig{}, fmt.Errorf("the instance metadata has no %s: this instance was not made by a bigmachine driver", BootKey)
		}
		select { // the metadata server is not up yet; ask again soon
		case <-time.After(time.Second):
		case <-ctx.Done():
			return BootConfig{}, fmt.Errorf("reading %s from the metadata server: %w", BootKey, err)
		}
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

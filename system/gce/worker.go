package gce

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	"cloud.google.com/go/compute/metadata"

	"github.com/gcefleet/gcefleet/bigmachine"
	gceapi "github.com/gcefleet/gcefleet/gce"
)

// Listen listens on addr; a missing host means the instance's internal
// address, from the metadata server.
func (s *System) Listen(addr string) (net.Listener, error) {
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

// Exit deletes the instance this worker runs on, then exits. A worker
// exits when its driver is gone; deleting the instance is what keeps a
// lost driver from leaving machines behind.
func (s *System) Exit(code int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := DeleteSelf(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gce: deleting this instance:", err)
	}
	os.Exit(code)
}

// DeleteSelf deletes the instance it runs on through the Compute API, with
// the instance's service account token from the metadata server. It does
// not wait: the instance's end ends this process.
func DeleteSelf(ctx context.Context) error {
	project, err := metadata.ProjectIDWithContext(ctx)
	if err != nil {
		return err
	}
	zone, err := metadata.ZoneWithContext(ctx)
	if err != nil {
		return err
	}
	name, err := metadata.InstanceNameWithContext(ctx)
	if err != nil {
		return err
	}
	endpoint, _ := metadata.InstanceAttributeValueWithContext(ctx, EndpointKey)
	c, err := gceapi.NewClient(ctx, endpoint)
	if err != nil {
		return err
	}
	defer c.Close()
	r := &computepb.DeleteInstanceRequest{Project: project, Zone: zone, Instance: name, RequestId: new(requestID())}
	return gceapi.Retry(ctx, func() error {
		_, err := c.Instances.Delete(ctx, r)
		return err
	})
}

// WorkerConfig waits for the driver to put this machine's configuration in
// its metadata and returns it. gceboot calls it as the instance boots.
func WorkerConfig(ctx context.Context) (bigmachine.WorkerConfig, error) {
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
			time.Sleep(time.Second) // the metadata server is restarting
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

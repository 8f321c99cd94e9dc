package gce

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gcefleet/gcefleet/system/gce/instance"
)

// Listen listens on addr; a missing host means the instance's internal
// address, from the metadata server.
func (s *System) Listen(addr string) (net.Listener, error) { return instance.Listen(addr) }

// Exit deletes the instance this worker runs on, then exits. A worker
// exits when its driver is gone; deleting the instance is what keeps a
// lost driver from leaving machines behind.
func (s *System) Exit(code int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := instance.DeleteSelf(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gce: deleting this instance:", err)
	}
	os.Exit(code)
}

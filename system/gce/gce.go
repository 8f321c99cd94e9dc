// Package gce is the bigmachine System whose machines are Compute Engine
// instances. Each boots Container-Optimized OS with a container declaration
// that runs gceboot, which receives the driver's binary and execs it.
//
// No key leaves its machine: instance metadata, which every viewer of the
// project can read, holds only the run's CA certificate and a nonce; each
// machine makes its own key and proves with its instance identity token
// that it is the instance the driver made before the driver signs its
// certificate (Enroll, and package gcefleet/identity).
//
// Nothing leaks: every instance is labelled with its run and owner, carries
// a maxRunDuration after which GCE deletes it, and deletes itself when its
// driver stops renewing its keepalive; Shutdown deletes exactly the
// instances of its run.
package gce

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/gcecompute"
	"github.com/gcefleet/gcefleet/identity"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

// Metadata keys and labels the system uses.
const (
	// BootKey holds a machine's instance.BootConfig: the run's CA
	// certificate, nonce and port, nothing secret. Machines make their
	// own keys and prove who they are for their certificates (Enroll).
	BootKey = instance.BootKey
	// EndpointKey holds the Compute endpoint a machine deletes itself
	// through; absent on real GCE.
	EndpointKey = instance.EndpointKey
	// RunLabel, OwnerLabel and RoleLabel mark every instance; gc and
	// Shutdown never delete an instance without them.
	RunLabel   = "gcefleet-run"
	OwnerLabel = "gcefleet-owner"
	RoleLabel  = "gcefleet-role"
	roleValue  = "bigmachine"
)

// System makes machines on Compute Engine. Create it with New.
type System struct {
	cfg   Config
	run   string
	nonce string
	log   *slog.Logger

	mu       sync.Mutex
	client   *gcecompute.Client
	next     int  // index of the next machine
	firewall bool // the run's firewall rule exists
	zones    map[string]bool
	status   map[string]*zoneStatus
	verifier *identity.Verifier
}

// Machine is the system's record of one instance.
type Machine struct {
	Zone, Name string
	id         string // the instance's id, which its identity token names
	sign       func(name string, pub crypto.PublicKey) ([]byte, error)

	// While it boots: since when GCE has said RUNNING, and when its serial
	// port was last read for the container agent's failure.
	bootMu                       sync.Mutex
	runningSince, consoleChecked time.Time
}

// New returns a gce system with cfg. It checks nothing and calls nothing:
// workers create it too, before they know their configuration.
func New(cfg Config) *System {
	b := make([]byte, 3)
	rand.Read(b)
	// Run ids start with a letter, so that names built on them are valid.
	run := "r" + hex.EncodeToString(b)
	// The nonce each machine's identity token binds: it is public (in
	// metadata), and makes a token of another run worthless here.
	nonce := make([]byte, 16)
	rand.Read(nonce)
	return &System{cfg: cfg, run: run, nonce: base64.RawURLEncoding.EncodeToString(nonce), log: slog.Default(), zones: map[string]bool{}, status: map[string]*zoneStatus{},
		verifier: identity.NewVerifier(identity.CertsURL(cfg.Endpoint), &http.Client{Timeout: 30 * time.Second})}
}

// Name returns "gce".
func (s *System) Name() string { return "gce" }

// Run returns the run's id, the value of its RunLabel.
func (s *System) Run() string { return s.run }

// Client returns the Compute client, made on first use.
func (s *System) Client(ctx context.Context) (*gcecompute.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	c, err := gcecompute.NewClient(ctx, s.cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	s.client = c
	return c, nil
}

// Keepalive returns the configured timing.
func (s *System) Keepalive() bigmachine.Keepalive {
	return bigmachine.Keepalive{Period: s.cfg.KeepalivePeriod, Timeout: s.cfg.KeepaliveTimeout}
}

func (s *System) networkTag() string { return s.cfg.Prefix + "-" + s.run }

func (s *System) labels() map[string]string {
	l := map[string]string{RunLabel: s.run, OwnerLabel: s.cfg.Owner, RoleLabel: roleValue}
	for k, v := range s.cfg.Labels {
		if _, ours := l[k]; !ours {
			l[k] = v
		}
	}
	return l
}

func (s *System) runFilter() string { return fmt.Sprintf("labels.%s = %q", RunLabel, s.run) }

// Start makes n instances, zone by zone, with only public things in their
// metadata (the run's CA certificate and nonce), and returns them with
// their addresses. Each machine makes its own key and gets its
// certificate when the driver enrolls it (Enroll).
func (s *System) Start(ctx context.Context, req bigmachine.StartRequest) ([]bigmachine.Spec, error) {
	if err := s.cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := s.Client(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.ensureFirewall(ctx, c); err != nil {
		return nil, err
	}
	var made []madeInstance
	var failures []string
	remaining := req.N
	spot := s.cfg.Spot
	for pass := 0; remaining > 0 && pass < 2; pass++ {
		for _, zone := range s.cfg.Zones {
			if remaining == 0 {
				break
			}
			cpus, err := s.guestCPUs(ctx, c, zone)
			if err != nil {
				return nil, err
			}
			ins, err := s.insert(ctx, c, zone, remaining, spot, req.CA)
			for _, in := range ins {
				made = append(made, madeInstance{in, cpus})
			}
			remaining -= len(ins)
			var partial *partialError
			if err != nil {
				switch {
				case errors.As(err, &partial), gcecompute.Classify(err) == gcecompute.Quota, gcecompute.Classify(err) == gcecompute.Stockout:
					s.log.Warn("zone cannot take the machines; trying the next", "zone", zone, "err", err)
					failures = append(failures, zone+": "+err.Error())
					continue
				}
				failures = append(failures, err.Error())
				remaining = 0 // no other zone will fix this
			}
		}
		if remaining == 0 || !spot || !s.cfg.SpotFallback {
			break
		}
		s.log.Warn("no zone has Spot capacity; making standard machines", "machines", remaining)
		spot = false
	}

	var out []bigmachine.Spec
	for _, in := range made {
		out = append(out, in.spec(s.cfg, req.Sign))
	}
	if len(out) < req.N {
		return out, fmt.Errorf("gce: %d of %d machines made: %s", len(out), req.N, strings.Join(failures, "; "))
	}
	return out, nil
}

// madeInstance is an instance made, with its machine type's CPU count.
type madeInstance struct {
	in   *computepb.Instance
	cpus int
}

func (m madeInstance) spec(cfg Config, sign func(string, crypto.PublicKey) ([]byte, error)) bigmachine.Spec {
	nic := m.in.GetNetworkInterfaces()[0]
	ip := nic.GetNetworkIP()
	if cfg.ExternalIP {
		if acs := nic.GetAccessConfigs(); len(acs) > 0 && acs[0].GetNatIP() != "" {
			ip = acs[0].GetNatIP()
		}
	}
	return bigmachine.Spec{
		Name: m.in.GetName(), Addr: net.JoinHostPort(ip, itoa(cfg.Port)), Maxprocs: max(m.cpus, 1),
		Handle: &Machine{Zone: gcecompute.LastSegment(m.in.GetZone()), Name: m.in.GetName(), id: strconv.FormatUint(m.in.GetId(), 10), sign: sign},
	}
}

// guestCPUs returns the machine type's CPU count in zone.
func (s *System) guestCPUs(ctx context.Context, c *gcecompute.Client, zone string) (int, error) {
	var mt *computepb.MachineType
	err := gcecompute.Retry(gcecompute.WithRetryLog(ctx, s.log), func() error {
		var err error
		mt, err = c.MachineTypes.Get(ctx, &computepb.GetMachineTypeRequest{Project: s.cfg.Project, Zone: zone, MachineType: s.cfg.MachineType})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("machine type %s in %s: %w", s.cfg.MachineType, zone, err)
	}
	return int(mt.GetGuestCpus()), nil
}

// insert makes up to n instances in zone with one bulkInsert, and returns
// those that exist afterwards.
func (s *System) insert(ctx context.Context, c *gcecompute.Client, zone string, n int, spot bool, ca []byte) ([]*computepb.Instance, error) {
	s.mu.Lock()
	names := map[string]*computepb.BulkInsertInstanceResourcePerInstanceProperties{}
	for range n {
		s.next++
		names[fmt.Sprintf("%s-%s-%04d", s.cfg.Prefix, s.run, s.next)] = &computepb.BulkInsertInstanceResourcePerInstanceProperties{}
	}
	s.zones[zone] = true
	s.mu.Unlock()

	decl := gcecompute.ContainerDeclaration("gceboot", s.cfg.Image, gcecompute.RestartNever)
	boot := instance.BootConfig{CA: ca, Nonce: s.nonce, Listen: ":" + itoa(s.cfg.Port), Timeout: s.cfg.KeepaliveTimeout}.Encode()
	items := []*computepb.Items{{Key: new(gcecompute.ContainerDeclarationKey), Value: &decl}, {Key: new("google-logging-enabled"), Value: new("true")}, {Key: new(BootKey), Value: &boot}}
	if s.cfg.Endpoint != "" {
		items = append(items, &computepb.Items{Key: new(EndpointKey), Value: new(s.cfg.Endpoint)})
	}
	nic := &computepb.NetworkInterface{}
	if s.cfg.Network != "" {
		nic.Network = new(s.cfg.Network)
	}
	if s.cfg.Subnetwork != "" {
		nic.Subnetwork = new(s.cfg.Subnetwork)
	}
	if s.cfg.ExternalIP {
		nic.AccessConfigs = []*computepb.AccessConfig{{Name: new("External NAT"), Type: new("ONE_TO_ONE_NAT")}}
	}
	sched := &computepb.Scheduling{
		MaxRunDuration:            &computepb.Duration{Seconds: new(int64(s.cfg.MaxRunDuration / time.Second))},
		InstanceTerminationAction: new("DELETE"),
	}
	if spot {
		sched.ProvisioningModel = new("SPOT")
	}
	props := &computepb.InstanceProperties{
		MachineType: new(s.cfg.MachineType),
		Labels:      s.labels(),
		Tags:        &computepb.Tags{Items: []string{s.networkTag()}},
		Metadata:    &computepb.Metadata{Items: items},
		Disks: []*computepb.AttachedDisk{{
			Boot: new(true), AutoDelete: new(true),
			InitializeParams: &computepb.AttachedDiskInitializeParams{SourceImage: new(s.cfg.BootImage), DiskSizeGb: new(s.cfg.DiskSizeGB)},
		}},
		NetworkInterfaces: []*computepb.NetworkInterface{nic},
		Scheduling:        sched,
		ServiceAccounts:   []*computepb.ServiceAccount{{Email: new(s.cfg.ServiceAccount), Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"}}},
	}
	req := &computepb.BulkInsertInstanceRequest{
		Project: s.cfg.Project, Zone: zone, RequestId: new(gcecompute.RequestID()),
		BulkInsertInstanceResourceResource: &computepb.BulkInsertInstanceResource{
			Count: new(int64(n)), MinCount: new(int64(1)), InstanceProperties: props, PerInstanceProperties: names,
		},
	}
	var opErr error
	err := gcecompute.Retry(gcecompute.WithRetryLog(ctx, s.log), func() error {
		op, err := c.Instances.BulkInsert(ctx, req)
		if err != nil {
			return err
		}
		opErr = c.Wait(ctx, s.cfg.Project, op)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bulkInsert in %s: %w", zone, err)
	}
	// Whatever the operation says, what exists is what we have.
	ins, lerr := s.list(ctx, c, zone)
	if lerr != nil {
		return nil, lerr
	}
	var mine []*computepb.Instance
	for _, in := range ins {
		if _, ok := names[in.GetName()]; ok {
			mine = append(mine, in)
		}
	}
	if opErr != nil {
		return mine, fmt.Errorf("bulkInsert of %d in %s: %w", n, zone, opErr)
	}
	if len(mine) < n {
		// minCount 1 lets GCE make what it can; the rest is a matter of
		// this zone's room, which the next zone may have.
		return mine, &partialError{zone: zone, made: len(mine), want: n}
	}
	return mine, nil
}

// partialError is a bulkInsert that made fewer machines than asked.
type partialError struct {
	zone       string
	made, want int
}

func (e *partialError) Error() string {
	return fmt.Sprintf("made %d of %d machines: the zone's quota or capacity allowed no more", e.made, e.want)
}

// list returns the run's instances in zone.
func (s *System) list(ctx context.Context, c *gcecompute.Client, zone string) ([]*computepb.Instance, error) {
	var out []*computepb.Instance
	err := gcecompute.Retry(gcecompute.WithRetryLog(ctx, s.log), func() error {
		var err error
		out, err = gcecompute.All(c.Instances.List(ctx, &computepb.ListInstancesRequest{Project: s.cfg.Project, Zone: zone, Filter: new(s.runFilter()), MaxResults: new(uint32(500))}))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the run's instances in %s: %w", zone, err)
	}
	return out, nil
}

// ensureFirewall makes the run's firewall rule, once.
func (s *System) ensureFirewall(ctx context.Context, c *gcecompute.Client) error {
	s.mu.Lock()
	done := s.firewall || !s.cfg.Firewall
	s.mu.Unlock()
	if done {
		return nil
	}
	source := s.cfg.FirewallSource
	if source == "" {
		ip, err := outboundIP(s.cfg.Endpoint)
		if err != nil {
			return fmt.Errorf("finding this host's address for the firewall rule (set -gce.firewall-source): %w", err)
		}
		source = ip + "/32"
	}
	network := s.cfg.Network
	if network == "" {
		network = "global/networks/default"
	}
	req := &computepb.InsertFirewallRequest{Project: s.cfg.Project, RequestId: new(gcecompute.RequestID()), FirewallResource: &computepb.Firewall{
		Name:         new(s.networkTag()),
		Description:  new(firewallDescription(s.run, s.cfg.Owner)),
		Network:      new(network),
		Direction:    new("INGRESS"),
		SourceRanges: []string{source},
		TargetTags:   []string{s.networkTag()},
		Allowed:      []*computepb.Allowed{{IPProtocol: new("tcp"), Ports: []string{itoa(s.cfg.Port)}}},
	}}
	err := gcecompute.Retry(gcecompute.WithRetryLog(ctx, s.log), func() error {
		op, err := c.Firewalls.Insert(ctx, req)
		if err != nil {
			return err
		}
		return c.Wait(ctx, s.cfg.Project, op)
	})
	if err != nil && gcecompute.Classify(err) != gcecompute.Exists {
		return fmt.Errorf("firewall rule %s: %w", s.networkTag(), err)
	}
	s.mu.Lock()
	s.firewall = true
	s.mu.Unlock()
	return nil
}

// outboundIP is this host's address on the route to endpoint (or to
// Google, for real GCE). No packet is sent.
func outboundIP(endpoint string) (string, error) {
	host := "compute.googleapis.com:443"
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil {
			return "", err
		}
		host = u.Host
		if u.Port() == "" {
			host += ":443"
		}
	}
	conn, err := net.Dial("udp", host)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// KeepaliveFailed asks GCE about the instance: one that is gone, stopped
// or preempted will not answer again. Machines of a zone share one list call, at most a
// second old for running machines and bootCheckEvery for booting ones, so
// that many machines failing at once (or booting) cost few API calls.
func (s *System) KeepaliveFailed(ctx context.Context, m *bigmachine.Machine) (bool, error) {
	h, ok := m.Handle().(*Machine)
	if !ok {
		return false, nil
	}
	asked := time.Now()
	maxAge := time.Second
	if m.State() < bigmachine.Running {
		maxAge = bootCheckEvery
	}
	statuses, err := s.statuses(ctx, h.Zone, asked.Add(-maxAge))
	if err != nil {
		return false, nil
	}
	st, found := statuses[h.Name]
	if !found {
		// A list made before the instance was would not hold it: only a
		// list made since this question can say it is gone.
		if statuses, err = s.statuses(ctx, h.Zone, asked); err != nil {
			return false, nil
		}
		st, found = statuses[h.Name]
	}
	switch {
	case !found:
		return true, fmt.Errorf("instance %s in %s was deleted", h.Name, h.Zone)
	case st == "STOPPING" || st == "STOPPED" || st == "TERMINATED" || st == "SUSPENDING" || st == "SUSPENDED":
		return true, fmt.Errorf("instance %s in %s is %s", h.Name, h.Zone, st)
	case st == "RUNNING" && m.State() < bigmachine.Running:
		if line := s.agentFailure(ctx, h); line != "" {
			return true, fmt.Errorf("instance %s in %s: its container did not start: %s", h.Name, h.Zone, line)
		}
	}
	return false, nil
}

// After an instance has been RUNNING this long without its machine
// answering, its serial port is read, at most once every consoleEvery, for
// the container agent's failure: so that an image that cannot be pulled
// fails the machine at once rather than at the start timeout, for one
// Compute call per machine that is slow to answer.
const (
	consoleAfter = 8 * time.Second
	consoleEvery = 10 * time.Second
)

// agentFailureRE matches the lines in which the container agent (konlet
// on Container-Optimized OS, and the emulator's) says that the container
// cannot start.
var agentFailureRE = regexp.MustCompile(`konlet.*(Error|error|is not known|invalid container declaration|starting container:|[Ff]ailed to (start|pull))`)

// agentFailure returns the container agent's failure line from the booting
// machine's serial port, or "" if there is none or it is not time to look.
func (s *System) agentFailure(ctx context.Context, h *Machine) string {
	now := time.Now()
	h.bootMu.Lock()
	if h.runningSince.IsZero() {
		h.runningSince = now
	}
	due := now.Sub(h.runningSince) >= consoleAfter && now.Sub(h.consoleChecked) >= consoleEvery
	if due {
		h.consoleChecked = now
	}
	h.bootMu.Unlock()
	if !due {
		return ""
	}
	c, err := s.Client(ctx)
	if err != nil {
		return ""
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := c.Instances.GetSerialPortOutput(cctx, &computepb.GetSerialPortOutputInstanceRequest{
		Project: s.cfg.Project, Zone: h.Zone, Instance: h.Name, Port: new(int32(1)), Start: new(int64(-consoleBytes)),
	})
	if err != nil {
		return ""
	}
	lines := strings.Split(out.GetContents(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if agentFailureRE.MatchString(lines[i]) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

// zoneStatus is a recent list of the run's instances in a zone.
type zoneStatus struct {
	mu     sync.Mutex
	at     time.Time
	status map[string]string
}

// bootCheckEvery is how old a zone's list may be when a machine that has
// not started yet is asked about: booting takes tens of seconds on GCE,
// and a machine lost while it boots is rare.
const bootCheckEvery = 5 * time.Second

// statuses returns the run's instances in zone by name with their status,
// from a list made no earlier than notBefore.
func (s *System) statuses(ctx context.Context, zone string, notBefore time.Time) (map[string]string, error) {
	s.mu.Lock()
	zs := s.status[zone]
	if zs == nil {
		zs = &zoneStatus{}
		s.status[zone] = zs
	}
	c := s.client
	s.mu.Unlock()
	zs.mu.Lock()
	defer zs.mu.Unlock()
	if !zs.at.Before(notBefore) {
		return zs.status, nil
	}
	at := time.Now()
	ins, err := s.list(ctx, c, zone)
	if err != nil {
		return nil, err
	}
	zs.status = map[string]string{}
	for _, in := range ins {
		zs.status[in.GetName()] = in.GetStatus()
	}
	zs.at = at // when the list was asked for: it may miss what came after
	return zs.status, nil
}

// Tail streams the machine's output over the runtime's own RPC, once the
// machine runs the driver's program: no Compute API calls, no delay. (The
// bootstrap's output stays in the instance's serial port.)
func (s *System) Tail(ctx context.Context, m *bigmachine.Machine, w io.Writer) error {
	return bigmachine.TailOutput(ctx, m, w)
}

// consoleBytes is how much of a machine's serial port ConsoleTail reads,
// and consoleLines how many of its last lines it keeps.
const (
	consoleBytes = 4 << 10
	consoleLines = 12
)

// ConsoleTail returns the last lines of the instance's serial port: on
// Container-Optimized OS, where the container runtime says why a container
// did not start (an image that cannot be pulled, a bootstrap that exited).
// It is one Compute call, made only for a machine that failed to start.
func (s *System) ConsoleTail(ctx context.Context, m *bigmachine.Machine) (string, error) {
	h, ok := m.Handle().(*Machine)
	if !ok {
		return "", nil
	}
	c, err := s.Client(ctx)
	if err != nil {
		return "", err
	}
	out, err := c.Instances.GetSerialPortOutput(ctx, &computepb.GetSerialPortOutputInstanceRequest{
		Project: s.cfg.Project, Zone: h.Zone, Instance: h.Name, Port: new(int32(1)), Start: new(int64(-consoleBytes)),
	})
	if err != nil {
		return "", fmt.Errorf("reading the serial port of %s: %w", h.Name, err)
	}
	lines := strings.Split(strings.TrimRight(out.GetContents(), "\n"), "\n")
	if out.GetStart() > 0 && len(lines) > 1 {
		lines = lines[1:] // the first is likely cut
	}
	return strings.Join(lines[max(len(lines)-consoleLines, 0):], "\n"), nil
}

// HTTPClient returns an HTTP/2 client with cfg.
func (s *System) HTTPClient(cfg *tls.Config) *http.Client { return rpc.HTTPClient(cfg) }

// Shutdown deletes the run's instances, in parallel, waits until they are
// gone, and removes the run's firewall rule. Only instances carrying this
// run's label are touched.
func (s *System) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	c := s.client
	var zones []string
	for z := range s.zones {
		zones = append(zones, z)
	}
	firewall := s.firewall
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	var errs []error
	for _, zone := range zones {
		errs = append(errs, s.deleteRun(ctx, c, zone))
	}
	if firewall {
		err := gcecompute.Retry(gcecompute.WithRetryLog(ctx, s.log), func() error {
			op, err := c.Firewalls.Delete(ctx, &computepb.DeleteFirewallRequest{Project: s.cfg.Project, Firewall: s.networkTag()})
			if err != nil {
				return err
			}
			return c.Wait(ctx, s.cfg.Project, op)
		})
		if err != nil && gcecompute.Classify(err) != gcecompute.NotFound {
			errs = append(errs, fmt.Errorf("deleting firewall rule %s: %w", s.networkTag(), err))
		}
	}
	return errors.Join(errs...)
}

// deleteRun deletes the run's instances in zone and waits until a list
// shows none, which costs fewer calls than waiting on each deletion.
func (s *System) deleteRun(ctx context.Context, c *gcecompute.Client, zone string) error {
	ins, err := s.list(ctx, c, zone)
	if err != nil {
		return err
	}
	if err := s.deleteInstances(ctx, c, zone, ins); err != nil {
		return err
	}
	backoff := 50 * time.Millisecond
	for {
		left, err := s.list(ctx, c, zone)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d instances of run %s in %s not yet deleted: %w", len(left), s.run, zone, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// deleteInstances deletes ins, instances of zone, without waiting for the
// deletions to finish. It refuses an instance that lacks gcefleet's labels.
func (s *System) deleteInstances(ctx context.Context, c *gcecompute.Client, zone string, ins []*computepb.Instance) error {
	var errs []error
	var names []string
	for _, in := range ins {
		if in.GetLabels()[RunLabel] == "" || in.GetLabels()[RoleLabel] != roleValue {
			errs = append(errs, fmt.Errorf("refusing to delete %s: it carries no %s label", in.GetName(), RunLabel))
			continue
		}
		names = append(names, in.GetName())
	}
	return errors.Join(append(errs, c.DeleteInstances(ctx, s.cfg.Project, zone, names))...)
}

var _ bigmachine.System = (*System)(nil)

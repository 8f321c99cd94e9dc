// Package emulator is a Compute Engine emulator: an HTTP server that speaks the
// Compute v1 REST API closely enough that the official Go clients cannot tell
// it from GCE, keeps state in memory, and runs each instance's container
// (its gce-container-declaration) as a local process with its own loopback
// address and metadata server.
//
// In tests, start it in-process:
//
//	emu := emulator.New(emulator.Options{Images: map[string]string{"gcr.io/p/app": "/path/to/app"}})
//	defer emu.Close()
//	srv := httptest.NewServer(emu)
//	svc, _ := compute.NewService(ctx, option.WithEndpoint(srv.URL+"/compute/v1/"), option.WithoutAuthentication())
//
// Faults (latency, rate limits, server errors, stockouts, quotas, preemption)
// are set through the admin API under /emulator/v1/ or the methods of
// Emulator. The package imports nothing else of gcefleet but the generic
// internal/netcap, which imports only the standard library.
package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	compute "google.golang.org/api/compute/v1"

	"github.com/gcefleet/gcefleet/internal/netcap"
)

// Options configure an Emulator. The zero value is a working emulator with no
// images and no faults.
type Options struct {
	// Images maps a container image to the executable that stands for it
	// when an instance's container declaration names the image. A key with a
	// tag ("gcr.io/p/app:v1") matches that tag only; a key without one
	// matches every tag.
	Images map[string]string

	// Logger receives the emulator's own log; nil discards it.
	Logger *slog.Logger

	// ProcessOutput, when set, also receives every instance process's output
	// line by line, prefixed with the instance name. Serial port output is
	// kept either way.
	ProcessOutput io.Writer

	// OperationWaitTimeout bounds how long an operations.wait call blocks
	// before answering with the operation not yet DONE. GCE's bound is about
	// two minutes, the default.
	OperationWaitTimeout time.Duration

	// StopGrace is the time between SIGTERM and SIGKILL when an instance
	// stops or is deleted. The default is 5s.
	StopGrace time.Duration

	// Latency adds time to each phase of every operation and instance boot.
	// It can be changed at run time with SetLatency.
	Latency Latency

	// RunDurationUnit is how long one second of an instance's
	// maxRunDuration lasts; the default is a second. Tests shrink it to see
	// expiry without waiting GCE's 30-second minimum.
	RunDurationUnit time.Duration

	// OperationRetention is how long a DONE operation stays readable (and
	// its requestId deduplicated); older ones are forgotten, as GCE does, so
	// that a long-running emulator does not grow with every call. The
	// default is an hour, GCE's requestId window.
	OperationRetention time.Duration

	// Now is the emulator's clock, for the timestamps it gives and the age
	// of its operations; nil is time.Now. Tests move it forward to see
	// what happens with age without waiting for it.
	Now func() time.Time

	// AddressBlock is the second octet of the loopback block 127.B.0.0/16
	// that instance addresses come from; 0 picks one at random so that
	// emulators running side by side rarely share addresses.
	AddressBlock int
}

// Latency is the time each phase of an operation or an instance boot takes.
type Latency struct {
	Pending      time.Duration `json:"pending,omitempty"`      // operation PENDING -> RUNNING
	Running      time.Duration `json:"running,omitempty"`      // operation RUNNING -> DONE
	Provisioning time.Duration `json:"provisioning,omitempty"` // instance PROVISIONING -> STAGING
	Staging      time.Duration `json:"staging,omitempty"`      // instance STAGING -> RUNNING
	// Guest is how long the guest OS takes, once the instance is RUNNING,
	// to start its container: on GCE, Container-Optimized OS boots and
	// pulls the image well after the API says RUNNING.
	Guest time.Duration `json:"guest,omitempty"`
}

// Emulator is an in-memory Compute Engine. It is an http.Handler; Close stops
// every instance process and background task.
type Emulator struct {
	opts  Options
	log   *slog.Logger
	mux   *http.ServeMux
	addrs *addrAllocator
	// metaConns caps the connections of all metadata servers together.
	metaConns *netcap.Pool

	mu       sync.Mutex
	projects map[string]*project
	faults   []*Fault
	latency  Latency
	stockout []Stockout
	closed   bool

	identity identitySigner // signs instance identity tokens

	done chan struct{}  // closed by Close
	wg   sync.WaitGroup // background goroutines, waited for by Close
}

// New returns an emulator ready to serve.
func New(opts Options) *Emulator {
	if opts.OperationRetention <= 0 {
		opts.OperationRetention = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OperationWaitTimeout <= 0 {
		opts.OperationWaitTimeout = 2 * time.Minute
	}
	if opts.RunDurationUnit <= 0 {
		opts.RunDurationUnit = time.Second
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{
		opts:     opts,
		log:      log,
		mux:      http.NewServeMux(),
		addrs:    newAddrAllocator(opts.AddressBlock),
		projects: map[string]*project{},
		latency:  opts.Latency,
		done:     make(chan struct{}),
	}
	e.routes()
	return e
}

// ServeHTTP serves the Compute v1 API under /compute/v1/, the Cloud Resource
// Manager v1 subset under /v1/ and the admin API under /emulator/v1/.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mux.ServeHTTP(w, r)
}

// Close stops every instance process (SIGTERM, then SIGKILL after the grace
// period) and every background task, and waits for them.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.done)
	var procs []*process
	for _, p := range e.projects {
		for _, z := range p.zones {
			for _, in := range z.instances {
				if in.proc != nil {
					procs = append(procs, in.proc)
				}
				in.closeMetadata()
			}
		}
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, pr := range procs {
		wg.Go(func() { pr.stop(e.opts.StopGrace) })
	}
	wg.Wait()
	e.wg.Wait()
	return nil
}

// goBackground runs f on its own goroutine, tracked so that Close waits for it.
// f must return promptly once e.done is closed.
func (e *Emulator) goBackground(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

// sleep waits for d or until the emulator closes; it reports whether the full
// time passed.
func (e *Emulator) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-e.done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.done:
		return false
	}
}

// project is one emulated project, created on first use.
type project struct {
	name       string
	number     int64
	id         uint64
	created    time.Time
	zones      map[string]*zone
	regions    map[string]*region
	templates  map[string]*compute.InstanceTemplate
	firewalls  map[string]*compute.Firewall
	globalOps  *opList
	requestIDs map[string]*operation // requestId -> the operation it started
	newOps     int                   // operations since the last pruning
	// denied lists IAM permissions that testIamPermissions withholds.
	denied map[string]bool
}

type zone struct {
	name, region string
	instances    map[string]*instance
	igms         map[string]*igm
	ops          *opList
}

type region struct {
	name   string
	quotas map[string]float64 // metric -> limit
	usage  map[string]float64 // metric -> what instances take now
	ops    *opList
}

// project returns the named project, creating it on first use. e.mu is held.
func (e *Emulator) project(name string) *project {
	if p, ok := e.projects[name]; ok {
		return p
	}
	p := &project{
		name:       name,
		number:     int64(newID() % 1_000_000_000_000),
		id:         newID(),
		created:    e.opts.Now(),
		zones:      map[string]*zone{},
		regions:    map[string]*region{},
		templates:  map[string]*compute.InstanceTemplate{},
		firewalls:  map[string]*compute.Firewall{},
		globalOps:  newOpList(),
		requestIDs: map[string]*operation{},
		denied:     map[string]bool{},
	}
	for _, rz := range regionZones {
		q := map[string]float64{}
		for k, v := range defaultQuotas {
			q[k] = v
		}
		p.regions[rz.region] = &region{name: rz.region, quotas: q, usage: map[string]float64{}, ops: newOpList()}
		for _, z := range rz.zones {
			p.zones[z] = &zone{name: z, region: rz.region, instances: map[string]*instance{}, igms: map[string]*igm{}, ops: newOpList()}
		}
	}
	e.projects[name] = p
	return p
}

// API URLs. GCE answers with these absolute URLs whatever endpoint the client
// used, and accepts them (or their relative forms) in requests.
const apiBase = "https://www.googleapis.com/compute/v1/"

func projectURL(p string) string           { return apiBase + "projects/" + p }
func zoneURL(p, z string) string           { return projectURL(p) + "/zones/" + z }
func regionURL(p, r string) string         { return projectURL(p) + "/regions/" + r }
func globalURL(p, kind, n string) string   { return projectURL(p) + "/global/" + kind + "/" + n }
func zonalURL(p, z, kind, n string) string { return zoneURL(p, z) + "/" + kind + "/" + n }

// trimAPIPrefix turns any accepted form of a resource reference into the
// relative form "projects/P/...", or leaves a relative reference as it is.
func trimAPIPrefix(ref string) string {
	for _, pre := range []string{
		"https://www.googleapis.com/compute/v1/",
		"https://compute.googleapis.com/compute/v1/",
		"http://www.googleapis.com/compute/v1/",
		"/compute/v1/",
	} {
		if s, ok := strings.CutPrefix(ref, pre); ok {
			return s
		}
	}
	return ref
}

// lastSegment is the name at the end of a resource reference.
func lastSegment(ref string) string {
	return ref[strings.LastIndexByte(ref, '/')+1:]
}

// kindOfPath names the resource kind of a reference as GCE's messages do.
func kindOfPath(path string) string {
	switch {
	case strings.Contains(path, "/instanceTemplates/"):
		return "instance_template"
	case strings.Contains(path, "/instances/"):
		return "instance"
	}
	return "resource"
}

// newID returns a random resource id; GCE ids are opaque 64-bit numbers.
func newID() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) >> 1
}

// newFingerprint returns a fresh opaque fingerprint.
func newFingerprint() string {
	var b [8]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// timestamp formats t as GCE does: RFC 3339 with milliseconds and the offset.
func timestamp(t time.Time) string {
	return t.Format("2006-01-02T15:04:05.000-07:00")
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := encode(v)
	if err != nil {
		err.write(w)
		return
	}
	writeBytes(w, b)
}

func encode(v any) ([]byte, *apiError) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &apiError{http.StatusInternalServerError, "backendError", "global", "encoding response: " + err.Error()}
	}
	return b, nil
}

func writeBytes(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Write(b)
}

// readJSON decodes a request body into v, answering errors the way GCE does.
func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		return errBadRequest("reading request body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return errInvalid("Required field 'resource' not specified")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return jsonError(err)
	}
	if at := nullElement(reflect.ValueOf(v), "resource"); at != "" {
		return &apiError{http.StatusBadRequest, "parseError", "global",
			fmt.Sprintf("Invalid JSON payload received. Unexpected token: null at '%s': an element of a list may not be null.", at)}
	}
	return nil
}

// jsonError says what is wrong with a body as GCE does, in terms of the
// request's fields rather than of the Go types it is decoded into.
func jsonError(err error) *apiError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &apiError{http.StatusBadRequest, "parseError", "global",
			fmt.Sprintf("Invalid JSON payload received. Unexpected token at offset %d.", se.Offset)}
	case errors.As(err, &te):
		field := "resource"
		if te.Field != "" {
			field += "." + te.Field
		}
		return &apiError{http.StatusBadRequest, "invalid", "global",
			fmt.Sprintf("Invalid value at '%s' (%s), a JSON %s.", field, protoType(te.Type), te.Value)}
	}
	if strings.Contains(err.Error(), ",string struct tag") {
		// GCE takes an int64 as a number too; the Go types here take only
		// the string that Google's clients send.
		return &apiError{http.StatusBadRequest, "parseError", "global",
			"Invalid JSON payload received. The emulator takes a 64-bit integer field as a decimal string, such as \"10\", as Google's clients send it."}
	}
	return &apiError{http.StatusBadRequest, "parseError", "global", "Invalid JSON payload received."}
}

// protoType names the kind of a field as GCE's messages do.
func protoType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "TYPE_STRING"
	case reflect.Bool:
		return "TYPE_BOOL"
	case reflect.Int, reflect.Int32:
		return "TYPE_INT32"
	case reflect.Int64:
		return "TYPE_INT64"
	case reflect.Uint32, reflect.Uint64:
		return "TYPE_UINT64"
	case reflect.Float32, reflect.Float64:
		return "TYPE_DOUBLE"
	case reflect.Slice:
		return "a list"
	case reflect.Map:
		return "a map"
	}
	return "TYPE_MESSAGE"
}

// nullElement returns the path of the first null element of a list below
// v, or "". GCE refuses a null in a list, and the handlers count on every
// element being there.
func nullElement(v reflect.Value, path string) string {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return ""
		}
		return nullElement(v.Elem(), path)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if at := nullElement(v.Field(i), path+"."+name); at != "" {
				return at
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			e := v.Index(i)
			at := fmt.Sprintf("%s[%d]", path, i)
			if (e.Kind() == reflect.Pointer || e.Kind() == reflect.Interface) && e.IsNil() {
				return at
			}
			if at := nullElement(e, at); at != "" {
				return at
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if at := nullElement(it.Value(), path+"."+it.Key().String()); at != "" {
				return at
			}
		}
	}
	return ""
}

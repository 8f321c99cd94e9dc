package bigmachine

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HandleDebug serves the driver's debugging pages on mux under
// /debug/bigmachine/: a status page of all machines, pprof profiles merged
// across machines (or of one, with ?machine=NAME), the machines' variables,
// and the driver's RPC metrics in Prometheus format. The facts, such as
// the run's id and zones, head the status page.
func (b *B) HandleDebug(mux *http.ServeMux, facts ...Fact) {
	started := time.Now()
	mux.HandleFunc("GET /debug/bigmachine/{$}", func(w http.ResponseWriter, r *http.Request) { b.serveStatus(w, r, started, facts) })
	mux.HandleFunc("GET /debug/bigmachine/pprof/{profile}", b.serveProfile)
	mux.HandleFunc("GET /debug/bigmachine/vars", b.serveVars)
	if b.reg != nil {
		mux.Handle("GET /debug/bigmachine/metrics", promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{}))
	}
}

// A Fact is a line of the status page's heading, such as the run's id.
type Fact struct {
	Name, Value string
}

// MachineStatus is a machine's row on the status page.
type MachineStatus struct {
	Name, Addr, State, Err string
	Maxprocs               int
	Uptime                 time.Duration
	Stats                  Stats
	LastKeepalive          time.Time
}

// Status returns the status of every machine.
func (b *B) Status() []MachineStatus {
	var out []MachineStatus
	for _, m := range b.Machines() {
		m.mu.Lock()
		st := MachineStatus{Name: m.name, Addr: m.Addr, State: m.state.String(), Maxprocs: m.Maxprocs,
			Uptime: m.stats.Uptime, Stats: m.stats, LastKeepalive: m.lastAlive}
		if m.err != nil {
			st.Err = m.err.Error()
		}
		m.mu.Unlock()
		out = append(out, st)
	}
	return out
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"mib":   func(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) },
	"round": roundDuration,
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return roundDuration(now.Sub(t)) + " ago"
	},
}).Parse(`<!DOCTYPE html>
<html><head><title>bigmachine: {{.System}}</title>
<meta http-equiv="refresh" content="{{.Refresh}}">
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}tr:nth-child(even){background:#f4f4f4}dt{font-weight:bold;float:left;clear:left;width:8em}dd{margin-left:9em}</style></head>
<body><h1>bigmachine on {{.System}}: {{len .Machines}} machines</h1>
<dl id="facts"><dt>system</dt><dd>{{.System}}</dd>{{range .Facts}}<dt>{{.Name}}</dt><dd>{{.Value}}</dd>{{end}}<dt>driver up</dt><dd>{{round .Up}}</dd><dt>machines</dt><dd>{{.Running}} running of {{len .Machines}}</dd></dl>
<p>Profiles merged across machines: <a href="pprof/heap">heap</a>, <a href="pprof/goroutine">goroutine</a>,
<a href="pprof/profile?seconds=10">CPU (10 s)</a>; <a href="vars">vars</a>, <a href="metrics">metrics</a>. This page refreshes every {{.Refresh}} s.</p>
<table id="machines"><tr><th>machine</th><th>state</th><th>address</th><th>procs</th><th>uptime</th><th>heap</th><th>sys</th><th>goroutines</th><th>load</th><th>last keepalive</th><th>profiles</th><th>error</th></tr>
{{range .Machines}}<tr><td>{{.Name}}</td><td>{{.State}}</td><td>{{.Addr}}</td><td>{{.Maxprocs}}</td><td>{{round .Uptime}}</td>
<td>{{mib .Stats.HeapAlloc}}</td><td>{{mib .Stats.Sys}}</td><td>{{.Stats.Goroutines}}</td><td>{{printf "%.2f" .Stats.Load1}}</td>
<td>{{ago $.Now .LastKeepalive}}</td><td>{{if eq .State "Running"}}<a href="pprof/heap?machine={{.Name}}">heap</a> <a href="pprof/goroutine?machine={{.Name}}">goroutine</a> <a href="pprof/profile?seconds=10&amp;machine={{.Name}}">CPU</a> <a href="vars?machine={{.Name}}">vars</a>{{else}}—{{end}}</td><td>{{.Err}}</td></tr>
{{end}}</table></body></html>
`))

// debugRefresh is how often, in seconds, the status page reloads itself.
const debugRefresh = 5

// roundDuration writes d to a precision people read: "7.8s", "3m12s",
// "2h5m".
func roundDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

func (b *B) serveStatus(w http.ResponseWriter, r *http.Request, started time.Time, facts []Fact) {
	ms := b.Status()
	running := 0
	for _, m := range ms {
		if m.State == Running.String() {
			running++
		}
	}
	now := time.Now()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	statusPage.Execute(w, map[string]any{"System": b.system.Name(), "Facts": facts, "Machines": ms, "Running": running,
		"Now": now, "Up": now.Sub(started), "Refresh": debugRefresh})
}

// selected returns the running machines a request names (all by default).
func (b *B) selected(r *http.Request) ([]*Machine, error) {
	name := r.URL.Query().Get("machine")
	var out []*Machine
	for _, m := range b.Machines() {
		if m.State() == Running && (name == "" || m.name == name) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		if name != "" {
			return nil, fmt.Errorf("no running machine %q", name)
		}
		return nil, fmt.Errorf("no running machines")
	}
	return out, nil
}

func (b *B) serveProfile(w http.ResponseWriter, r *http.Request) {
	machines, err := b.selected(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	req := ProfileRequest{Name: r.PathValue("profile")}
	req.Seconds, _ = strconv.Atoi(r.URL.Query().Get("seconds"))
	profiles := make([]*profile.Profile, len(machines))
	errs := make([]error, len(machines))
	var wg sync.WaitGroup
	for i, m := range machines {
		wg.Go(func() { profiles[i], errs[i] = fetchProfile(r.Context(), m, req) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
	}
	merged, err := profile.Merge(profiles)
	if err != nil {
		http.Error(w, "merging profiles: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", req.Name+".pb.gz"))
	merged.Write(w)
}

func fetchProfile(ctx context.Context, m *Machine, req ProfileRequest) (*profile.Profile, error) {
	var rc io.ReadCloser
	if err := m.Call(ctx, "Supervisor.Profile", req, &rc); err != nil {
		return nil, err
	}
	defer rc.Close()
	p, err := profile.Parse(rc)
	if err != nil {
		return nil, fmt.Errorf("profile from %s: %w", m.name, err)
	}
	return p, nil
}

func (b *B) serveVars(w http.ResponseWriter, r *http.Request) {
	machines, err := b.selected(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	vars := make(map[string]json.RawMessage, len(machines))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range machines {
		wg.Go(func() {
			var raw []byte
			if err := m.Call(r.Context(), "Supervisor.Vars", struct{}{}, &raw); err != nil {
				raw, _ = json.Marshal(map[string]string{"error": err.Error()})
			}
			mu.Lock()
			vars[m.name] = raw
			mu.Unlock()
		})
	}
	wg.Wait()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(vars)
}

package bigmachine

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/pprof/profile"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HandleDebug serves the driver's debugging pages on mux under
// /debug/bigmachine/: a status page of all machines, pprof profiles merged
// across machines (or of one, with ?machine=NAME), the machines' variables,
// and the driver's RPC metrics in Prometheus format.
func (b *B) HandleDebug(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/bigmachine/{$}", b.serveStatus)
	mux.HandleFunc("GET /debug/bigmachine/pprof/{profile}", b.serveProfile)
	mux.HandleFunc("GET /debug/bigmachine/vars", b.serveVars)
	if b.reg != nil {
		mux.Handle("GET /debug/bigmachine/metrics", promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{}))
	}
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
	"mib": func(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) },
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Millisecond).String() + " ago"
	},
}).Parse(`<!DOCTYPE html>
<html><head><title>bigmachine: {{.System}}</title>
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}tr:nth-child(even){background:#f4f4f4}</style></head>
<body><h1>bigmachine on {{.System}}: {{len .Machines}} machines</h1>
<p>Profiles merged across machines: <a href="pprof/heap">heap</a>, <a href="pprof/goroutine">goroutine</a>,
<a href="pprof/profile?seconds=10">CPU (10 s)</a>; add <code>?machine=NAME</code> for one. <a href="vars">vars</a>, <a href="metrics">metrics</a>.</p>
<table><tr><th>machine</th><th>state</th><th>address</th><th>procs</th><th>uptime</th><th>heap</th><th>sys</th><th>goroutines</th><th>load</th><th>last keepalive</th><th>error</th></tr>
{{range .Machines}}<tr><td>{{.Name}}</td><td>{{.State}}</td><td>{{.Addr}}</td><td>{{.Maxprocs}}</td><td>{{.Uptime}}</td>
<td>{{mib .Stats.HeapAlloc}}</td><td>{{mib .Stats.Sys}}</td><td>{{.Stats.Goroutines}}</td><td>{{printf "%.2f" .Stats.Load1}}</td>
<td>{{ago .LastKeepalive}}</td><td>{{.Err}}</td></tr>
{{end}}</table></body></html>
`))

func (b *B) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	statusPage.Execute(w, map[string]any{"System": b.system.Name(), "Machines": b.Status()})
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

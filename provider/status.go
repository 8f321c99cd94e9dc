package provider

import (
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/store"
)

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"dims":     dimsText,
	"rel":      relative,
	"waited":   waited,
	"deadline": requestDeadline,
}).Parse(`<!DOCTYPE html>
<html><head><title>gcefleet Machine Provider</title>
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width">
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}tr:nth-child(even){background:#f4f4f4}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{margin:0}.chart figcaption{font-size:12px}
.waiting{color:#b00020;font-weight:bold}form.out{display:inline}header p{margin:4px 0}</style></head>
<body><header><h1>gcefleet Machine Provider</h1>
<div id="who">Signed in as <b>{{.Who.Name}}</b> ({{.Who.Role}}){{if .Session}} <form class="out" method="post" action="logout"><button type="submit" id="signout">Sign out</button></form>{{end}}
&middot; API: <a href="v1/openapi.yaml">v1/openapi.yaml</a> &middot; metrics: <a href="metrics">/metrics</a> &middot; this page refreshes every {{.Refresh}} s (last {{.Now}})</div></header>
{{with .Charts}}<h2>The last hour</h2>
<div class="charts" id="charts">{{range .}}{{.}}{{end}}</div>
{{end}}{{if .ShowMachines}}<h2>Machines ({{.MachineCount}}{{with .MachineStates}}:{{range $i, $c := .}}{{if $i}},{{end}} {{$c}}{{end}}{{end}})</h2>
{{if lt (len .Machines) .MachineCount}}<p>The first {{len .Machines}} by hostname; <code>gcefleet machines</code> lists them all.</p>
{{end}}<table id="machines"><tr><th>hostname</th><th>backend</th><th>state</th><th>lease</th><th>dimensions</th><th>added</th></tr>
{{range .Machines}}<tr><td>{{.Hostname}}</td><td>{{.Backend}}</td><td>{{.State}}</td><td>{{.LeaseID}}</td><td>{{dims .Dimensions}}</td><td title="{{when .Added}}">{{rel $.T .Added}}</td></tr>
{{end}}</table>
{{end}}{{if .ShowMachines}}<h2>Queue by dimensions</h2>
{{if .Queue}}<table id="queue"><tr><th>requested dimensions</th><th>waiting</th><th>oldest request made</th></tr>
{{range .Queue}}<tr><td>{{dims .Dimensions}}</td><td>{{.Pending}}</td><td title="{{when .Oldest}}" class="waiting">{{rel $.T .Oldest}}</td></tr>
{{end}}</table>{{else}}<p id="queue">No request waits.</p>{{end}}
{{end}}{{if .ShowLeases}}<h2>Active leases ({{.LeaseCount}}{{with .Waiting}}: {{.}} waiting{{end}})</h2>
{{if lt (len .Leases) .LeaseCount}}<p>The newest {{len .Leases}}; <code>gcefleet leases --active</code> lists them all.</p>
{{end}}<table id="leases"><tr><th>id</th><th>client</th><th>state</th><th>machine</th><th>requested dimensions</th><th>waited</th><th>deadline</th><th>created</th><th>expires</th></tr>
{{range .Leases}}<tr><td>{{.ID}}</td><td>{{.Client}}</td><td>{{.State}}</td><td>{{.Hostname}}</td><td>{{dims .Request.Dimensions}}</td>
<td{{if eq .State "PENDING"}} class="waiting"{{end}}>{{waited $.T .}}</td><td{{with deadline .}} title="{{when .}}"{{end}}>{{if eq .State "PENDING"}}{{rel $.T (deadline .)}}{{else}}—{{end}}</td>
<td title="{{when .Created}}">{{rel $.T .Created}}</td><td{{if not .ExpiresAt.IsZero}} title="{{when .ExpiresAt}}"{{end}}>{{if .ExpiresAt.IsZero}}{{if eq .State "FULFILLED"}}never{{else}}—{{end}}{{else}}{{rel $.T .ExpiresAt}}{{end}}</td></tr>
{{end}}</table>
{{end}}{{range .Sections}}{{.}}{{end}}</body></html>
`))

// refreshSeconds is how often the status page reloads itself.
const refreshSeconds = 15

// dimsText writes dimensions as key=v1,v2 pairs in key order, without
// instance_id: a machine's own id says nothing that its hostname does not.
func dimsText(d store.Dimensions) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		if k == "instance_id" {
			continue
		}
		parts = append(parts, k+"="+strings.Join(d[k], ","))
	}
	return strings.Join(parts, " ")
}

// waited says how long a lease's request waited, or has waited so far.
func waited(now time.Time, l store.Lease) string {
	if l.State == store.Pending {
		return "waiting " + roughly(now.Sub(l.Created))
	}
	if l.Fulfilled.IsZero() {
		return "—"
	}
	return roughly(l.Fulfilled.Sub(l.Created))
}

// requestDeadline is when a request stops waiting: its deadline, or a
// api.DefaultDeadline after it was made.
func requestDeadline(l store.Lease) time.Time {
	if !l.Request.Deadline.IsZero() {
		return l.Request.Deadline
	}
	return l.Created.Add(api.DefaultDeadline)
}

// AddStatus adds a section to the status page, shown to admins: the
// services running beside the provider (the GCE Backend) report there.
func (s *Server) AddStatus(section func() template.HTML) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sections = append(s.sections, section)
}

// Store returns the server's store.
func (s *Server) Store() *store.Store { return s.st }

// Registry returns the registry that /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// statusRows is the most rows a table of the status page shows: a
// catalog of 10,000 would be megabytes of HTML that no one reads.
const statusRows = 500

// status serves a page of the fleet as the caller may see it: admins
// see everything, with charts of the last hour; a backend its machines;
// a client its leases.
func (s *Server) status(w http.ResponseWriter, r *http.Request, p Principal) error {
	now := time.Now()
	_, session := r.Context().Value(sessionKey{}).(Principal)
	data := map[string]any{"Who": p, "T": now, "Session": session, "Refresh": refreshSeconds, "Now": now.UTC().Format("15:04:05Z"),
		"ShowMachines": p.Role != Client, "ShowLeases": p.Role != Backend}
	if p.Role != Client {
		backend := ""
		if p.Role == Backend {
			backend = p.Name
		}
		ms, err := s.st.Machines(r.Context(), backend)
		if err != nil {
			return err
		}
		n := map[string]int{}
		for _, m := range ms {
			n[m.State]++
		}
		var states []string
		for _, st := range []string{store.Available, store.Leased} {
			if n[st] > 0 {
				states = append(states, fmt.Sprintf("%d %s", n[st], strings.ToLower(st)))
			}
		}
		data["MachineCount"], data["MachineStates"], data["Machines"] = len(ms), states, ms[:min(len(ms), statusRows)]
		queue, err := s.st.Demand(r.Context())
		if err != nil {
			return err
		}
		data["Queue"] = queue[:min(len(queue), statusRows)]
	}
	client := p.Name
	if p.Role == Admin {
		client = ""
	}
	if p.Role != Backend {
		ls, err := s.st.Leases(r.Context(), client, true)
		if err != nil {
			return err
		}
		waiting := 0
		for _, l := range ls {
			if l.State == store.Pending {
				waiting++
			}
		}
		data["LeaseCount"], data["Waiting"], data["Leases"] = len(ls), waiting, ls[:min(len(ls), statusRows)]
	}
	var sections []template.HTML
	if p.Role == Admin {
		data["Charts"] = s.charts(r.Context(), now)
		s.mu.Lock()
		fs := slices.Clone(s.sections)
		s.mu.Unlock()
		for _, f := range fs {
			sections = append(sections, f())
		}
	}
	data["Sections"] = sections
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	return statusPage.Execute(w, data)
}

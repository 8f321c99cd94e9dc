package provider

import (
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gcefleet/gcefleet/store"
)

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
}).Parse(`<!DOCTYPE html>
<html><head><title>gcefleet Machine Provider</title>
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}tr:nth-child(even){background:#f4f4f4}</style></head>
<body><h1>gcefleet Machine Provider</h1>
<p>Signed in as {{.Who.Name}} ({{.Who.Role}}). API: <a href="v1/openapi.yaml">v1/openapi.yaml</a>; metrics: <a href="metrics">/metrics</a>.</p>
<h2>Machines ({{.MachineCount}}{{with .MachineStates}}:{{range $i, $c := .}}{{if $i}},{{end}} {{$c}}{{end}}{{end}})</h2>
{{if lt (len .Machines) .MachineCount}}<p>The first {{len .Machines}} by hostname; <code>gcefleet machines</code> lists them all.</p>
{{end}}<table><tr><th>hostname</th><th>backend</th><th>state</th><th>lease</th><th>dimensions</th><th>added</th></tr>
{{range .Machines}}<tr><td>{{.Hostname}}</td><td>{{.Backend}}</td><td>{{.State}}</td><td>{{.LeaseID}}</td><td>{{range $k, $v := .Dimensions}}{{$k}}={{range $i, $x := $v}}{{if $i}},{{end}}{{$x}}{{end}} {{end}}</td><td>{{when .Added}}</td></tr>
{{end}}</table>
<h2>Active leases ({{.LeaseCount}})</h2>
{{if lt (len .Leases) .LeaseCount}}<p>The newest {{len .Leases}}; <code>gcefleet leases --active</code> lists them all.</p>
{{end}}<table><tr><th>id</th><th>client</th><th>state</th><th>machine</th><th>created</th><th>expires</th></tr>
{{range .Leases}}<tr><td>{{.ID}}</td><td>{{.Client}}</td><td>{{.State}}</td><td>{{.Hostname}}</td><td>{{when .Created}}</td><td>{{if .ExpiresAt.IsZero}}{{if eq .State "FULFILLED"}}never{{else}}—{{end}}{{else}}{{when .ExpiresAt}}{{end}}</td></tr>
{{end}}</table>
{{range .Sections}}{{.}}{{end}}</body></html>
`))

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

// status serves a page of the machines and active leases the caller may see.
func (s *Server) status(w http.ResponseWriter, r *http.Request, p Principal) error {
	data := map[string]any{"Who": p}
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
	} else {
		data["MachineCount"], data["Machines"] = 0, []any{}
	}
	client := p.Name
	if p.Role == Admin {
		client = ""
	}
	if p.Role == Backend {
		data["LeaseCount"], data["Leases"] = 0, []any{}
	} else {
		ls, err := s.st.Leases(r.Context(), client, true)
		if err != nil {
			return err
		}
		data["LeaseCount"], data["Leases"] = len(ls), ls[:min(len(ls), statusRows)]
	}
	var sections []template.HTML
	if p.Role == Admin {
		s.mu.Lock()
		fs := slices.Clone(s.sections)
		s.mu.Unlock()
		for _, f := range fs {
			sections = append(sections, f())
		}
	}
	data["Sections"] = sections
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	return statusPage.Execute(w, data)
}

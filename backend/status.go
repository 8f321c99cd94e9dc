package backend

import (
	"bytes"
	"html/template"
	"slices"
	"strings"
)

var statusSection = template.Must(template.New("backend").Parse(`
<h2>GCE Backend</h2>
<p>{{if .Leader}}This replica leads and runs the jobs.{{else}}This replica stands by; another leads.{{end}}
Deployment {{.Deployment}}. Configuration loaded {{.Loaded.UTC.Format "2006-01-02 15:04:05Z"}}.</p>
{{with .ConfigErr}}<p style="color:#b00"><b>The configuration file was refused; the last good one stays in force:</b><br><pre>{{.}}</pre></p>{{end}}
{{with .RevisionErr}}<p style="color:#b00"><b>The configured revisions cannot be computed; no group is rolled out or drained until they can:</b><br><pre>{{.}}</pre></p>{{end}}
<h3>Groups</h3>
<table><tr><th>group (revision)</th><th>template</th><th>project</th><th>zone</th><th>state</th><th>target</th><th>current</th><th>leased</th><th>idle</th><th>demand</th><th>problem</th><th>window in force</th><th>minimum</th><th>min_idle</th><th>next change</th><th>deleted idle</th></tr>
{{range .Groups}}<tr><td>{{.Name}}</td><td>{{.BaseName}}</td><td>{{.Project}}</td><td>{{.Zone}}</td><td>{{.State}}</td><td>{{.Target}}</td><td>{{.Current}}</td><td>{{.Leased}}</td><td>{{.Idle}}</td><td>{{.Demand}}</td><td>{{.Failing}}</td>{{with .Sched}}<td>{{.Window.Name}}</td><td>{{.Window.MinimumSize}}</td><td>{{.Window.MinIdle}}</td><td>{{if .Next.IsZero}}—{{else}}{{.Next.UTC.Format "2006-01-02 15:04Z"}} to {{.NextWindow.Name}}{{end}}</td>{{else}}<td>—</td><td></td><td></td><td></td>{{end}}<td>{{.IdleDeleted}}</td></tr>
{{end}}</table>
<p>Instances pending deletion: {{.Pending}}. Events read up to {{.Cursor}}.</p>
<h3>Jobs</h3>
<table><tr><th>job</th><th>runs</th><th>last run</th><th>last error</th></tr>
{{range .Jobs}}<tr><td>{{.Name}}</td><td>{{.Runs}}</td><td>{{if .LastRun.IsZero}}—{{else}}{{.LastRun.UTC.Format "15:04:05Z"}}{{end}}</td><td>{{.LastErr}}</td></tr>
{{end}}</table>`))

// StatusHTML renders the backend's part of the provider's status page.
func (b *Backend) StatusHTML() template.HTML {
	st := b.jobs.state()
	current := map[string]bool{}
	gs, revErr := b.jobs.groups()
	for _, g := range gs {
		current[g.record().key()] = true
	}
	type row struct {
		GroupRecord
		GroupStats
		State string
		Sched *WindowInForce // nil for a drained group
	}
	sched := map[string]*WindowInForce{}
	now := b.jobs.now()
	for _, g := range gs {
		w := g.m.inForce(now)
		sched[g.record().key()] = &w
	}
	stats := b.jobs.Stats()
	var groups []row
	for k, g := range st.Groups {
		state := "current"
		switch {
		case revErr != nil:
			state = "unknown"
		case !current[k]:
			state = "draining"
		}
		groups = append(groups, row{g, stats[k], state, sched[k]})
	}
	slices.SortFunc(groups, func(a, b row) int { return strings.Compare(a.key(), b.key()) })
	b.mu.Lock()
	data := map[string]any{"Deployment": b.jobs.Deployment(), "Leader": b.leader, "Loaded": b.loaded, "ConfigErr": b.configErr, "RevisionErr": revErr,
		"Groups": groups, "Pending": len(st.Pending), "Cursor": st.Cursor, "Jobs": b.sched.Status()}
	b.mu.Unlock()
	var buf bytes.Buffer
	if err := statusSection.Execute(&buf, data); err != nil {
		return template.HTML(template.HTMLEscapeString(err.Error()))
	}
	return template.HTML(buf.String())
}

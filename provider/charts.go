package provider

import (
	"context"
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/store"
)

// The status page's charts: the last hour of the fleet, sampled into a
// ring in memory every historyEvery (so a replica's charts start empty
// when it starts, and cost a fixed few hundred KB at most).
const (
	historyEvery  = 15 * time.Second
	historySpan   = time.Hour
	historyPoints = int(historySpan / historyEvery)
	// maxChartGroups bounds the groups charted: more would be a page
	// of charts no one reads (the Grafana dashboard has them all).
	maxChartGroups = 50
)

// point is one sample of the fleet.
type point struct {
	at              time.Time
	active, waiting int
	oldestWait      time.Duration
	// groups holds each backend group's target, current, leased and
	// idle instances, by "group (zone)".
	groups map[string][4]int
}

// history is a bounded ring of points.
type history struct {
	mu     sync.Mutex
	points []point // oldest first, at most historyPoints
}

func newHistory() *history { return &history{} }

func (h *history) add(p point) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.points) == historyPoints {
		copy(h.points, h.points[1:])
		h.points = h.points[:historyPoints-1]
	}
	h.points = append(h.points, p)
}

func (h *history) snapshot() []point {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.points)
}

// sampleHistory adds a point at once and then every historyEvery until
// ctx ends.
func (s *Server) sampleHistory(ctx context.Context) {
	t := time.NewTicker(historyEvery)
	defer t.Stop()
	for {
		if p, err := s.sample(ctx); err == nil {
			s.history.add(p)
		} else if ctx.Err() == nil {
			s.log.Warn("sampling the fleet for the status page's charts", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample reads the leases from the store and the backend's groups from
// the metrics it registers (gcefleet_backend_instances).
func (s *Server) sample(ctx context.Context) (point, error) {
	now := time.Now()
	p := point{at: now, groups: map[string][4]int{}}
	ls, err := s.st.Leases(ctx, "", true)
	if err != nil {
		return p, err
	}
	for _, l := range ls {
		switch l.State {
		case store.Fulfilled:
			p.active++
		case store.Pending:
			p.waiting++
			p.oldestWait = max(p.oldestWait, now.Sub(l.Created))
		}
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		return p, err
	}
	index := map[string]int{"target": 0, "current": 1, "leased": 2, "idle": 3}
	for _, mf := range mfs {
		if mf.GetName() != "gcefleet_backend_instances" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var group, zone, state string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "group":
					group = lp.GetValue()
				case "zone":
					zone = lp.GetValue()
				case "state":
					state = lp.GetValue()
				}
			}
			i, ok := index[state]
			key := group + " (" + zone + ")"
			if _, seen := p.groups[key]; !ok || (!seen && len(p.groups) >= maxChartGroups) {
				continue
			}
			v := p.groups[key]
			v[i] = int(m.GetGauge().GetValue())
			p.groups[key] = v
		}
	}
	return p, nil
}

// series is one line of a chart.
type series struct {
	name, color string
	values      []float64
}

// charts draws the history as small SVG charts: leases active, requests
// waiting, the oldest wait and one chart a group. The last point is the
// fleet as it is now, so that the charts end where the tables do.
func (s *Server) charts(ctx context.Context, now time.Time) []template.HTML {
	pts := s.history.snapshot()
	if p, err := s.sample(ctx); err == nil {
		pts = append(pts, p)
	}
	at := make([]time.Time, len(pts))
	active, waiting, oldest := make([]float64, len(pts)), make([]float64, len(pts)), make([]float64, len(pts))
	groups := map[string]bool{}
	for i, p := range pts {
		at[i] = p.at
		active[i], waiting[i], oldest[i] = float64(p.active), float64(p.waiting), p.oldestWait.Seconds()
		for g := range p.groups {
			groups[g] = true
		}
	}
	out := []template.HTML{
		chart("Leases active", now, at, "", series{"active", "#1a73e8", active}),
		chart("Requests waiting", now, at, "", series{"waiting", "#e8710a", waiting}),
		chart("Oldest wait", now, at, "s", series{"oldest wait", "#d93025", oldest}),
	}
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		var ss [4]series
		for j, n := range [4]struct{ name, color string }{{"target", "#5f6368"}, {"current", "#1a73e8"}, {"leased", "#188038"}, {"idle", "#e8710a"}} {
			ss[j] = series{n.name, n.color, make([]float64, len(pts))}
			for i, p := range pts {
				ss[j].values[i] = float64(p.groups[g][j])
			}
		}
		out = append(out, chart("Group "+g, now, at, "", ss[:]...))
	}
	return out
}

// chart draws series sampled at times at over the hour before now, with
// the top of the scale, the latest values and a legend as text.
func chart(title string, now time.Time, at []time.Time, unit string, ss ...series) template.HTML {
	const w, h, left, top, bottom = 320.0, 90.0, 4.0, 18.0, 16.0
	top1 := 0.0
	for _, s := range ss {
		for _, v := range s.values {
			top1 = max(top1, v)
		}
	}
	scale := niceCeil(top1)
	x := func(t time.Time) float64 {
		return left + (w-2*left)*(1-float64(now.Sub(t))/float64(historySpan))
	}
	y := func(v float64) float64 { return top + (h-top-bottom)*(1-v/scale) }
	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="%s">`, w, h, w, h, esc(title))
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="#fafafa" stroke="#ddd"/>`, left, top, w-2*left, h-top-bottom)
	fmt.Fprintf(&b, `<text x="%g" y="12" font-size="12" font-weight="bold">%s</text>`, left, esc(title))
	fmt.Fprintf(&b, `<text x="%g" y="12" font-size="10" text-anchor="end" fill="#555">max %s</text>`, w-left, esc(fmtValue(scale, unit)))
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="10" fill="#555">1 h ago</text>`, left, h-3)
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="10" text-anchor="end" fill="#555">now</text>`, w-left, h-3)
	var legend []string
	for _, s := range ss {
		var pts []string
		for i, v := range s.values {
			if now.Sub(at[i]) > historySpan {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(at[i]), y(v)))
		}
		switch len(pts) {
		case 0:
		case 1:
			xy := strings.Split(pts[0], ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`, xy[0], xy[1], s.color)
		default:
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
		}
		last := "—"
		if n := len(s.values); n > 0 {
			last = fmtValue(s.values[n-1], unit)
		}
		legend = append(legend, fmt.Sprintf(`<span style="color:%s">■</span> %s <b>%s</b>`, s.color, esc(s.name), esc(last)))
	}
	if len(at) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="11" text-anchor="middle" fill="#888">no samples yet</text>`, w/2, h/2+4)
	}
	fmt.Fprintf(&b, `</svg><figcaption>%s</figcaption></figure>`, strings.Join(legend, " &nbsp; "))
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1):
// a scale people read at a glance.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	for p := 1.0; ; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

func fmtValue(v float64, unit string) string {
	if unit == "s" {
		return roughly(time.Duration(v * float64(time.Second)))
	}
	return fmt.Sprintf("%g", v)
}

// roughly writes d as people say it: "45 s", "3 min", "2 h 5 min", "3 d".
func roughly(d time.Duration) string {
	d = d.Abs()
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		h, m := int(d.Hours()), int(d.Minutes())%60
		if m == 0 {
			return fmt.Sprintf("%d h", h)
		}
		return fmt.Sprintf("%d h %d min", h, m)
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// relative writes t against now: "3 min ago", "in 5 min".
func relative(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	if t.After(now) {
		return "in " + roughly(t.Sub(now))
	}
	return roughly(now.Sub(t)) + " ago"
}

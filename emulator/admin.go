package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// The admin API under /emulator/v1/ sets faults at run time. Bodies and
// answers are JSON; durations are Go duration strings ("250ms"). See
// docs/emulator.md for the reference.

type faultJSON struct {
	Fault
	Latency string `json:"latency,omitempty"`
}

type latencyJSON struct {
	Pending      string `json:"pending,omitempty"`
	Running      string `json:"running,omitempty"`
	Provisioning string `json:"provisioning,omitempty"`
	Staging      string `json:"staging,omitempty"`
	Guest        string `json:"guest,omitempty"`
}

func (e *Emulator) adminRoutes() {
	const a = "/emulator/v1"
	e.mux.HandleFunc("GET "+a+"/faults", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		out := []faultJSON{}
		for _, f := range e.faults {
			fj := faultJSON{Fault: *f}
			fj.limiter = nil
			if f.Latency > 0 {
				fj.Latency = f.Latency.String()
			}
			out = append(out, fj)
		}
		e.mu.Unlock()
		adminJSON(w, map[string]any{"faults": out})
	})
	e.mux.HandleFunc("POST "+a+"/faults", func(w http.ResponseWriter, r *http.Request) {
		var fj faultJSON
		if !adminRead(w, r, &fj) {
			return
		}
		f := fj.Fault
		if fj.Latency != "" {
			d, err := time.ParseDuration(fj.Latency)
			if err != nil {
				adminError(w, fmt.Errorf("latency %q: %v", fj.Latency, err))
				return
			}
			f.Latency = d
		}
		if err := e.AddFault(f); err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, map[string]string{"status": "added"})
	})
	e.mux.HandleFunc("DELETE "+a+"/faults", func(w http.ResponseWriter, r *http.Request) {
		e.ClearFaults()
		adminJSON(w, map[string]string{"status": "cleared"})
	})
	e.mux.HandleFunc("PUT "+a+"/latency", func(w http.ResponseWriter, r *http.Request) {
		var lj latencyJSON
		if !adminRead(w, r, &lj) {
			return
		}
		var l Latency
		for _, f := range []struct {
			name string
			s    string
			d    *time.Duration
		}{{"pending", lj.Pending, &l.Pending}, {"running", lj.Running, &l.Running}, {"provisioning", lj.Provisioning, &l.Provisioning}, {"staging", lj.Staging, &l.Staging}, {"guest", lj.Guest, &l.Guest}} {
			if f.s == "" {
				continue
			}
			d, err := time.ParseDuration(f.s)
			if err != nil || d < 0 {
				adminError(w, fmt.Errorf("%s %q: want a duration such as 250ms", f.name, f.s))
				return
			}
			*f.d = d
		}
		e.SetLatency(l)
		adminJSON(w, map[string]string{"status": "set"})
	})
	e.mux.HandleFunc("POST "+a+"/stockouts", func(w http.ResponseWriter, r *http.Request) {
		var s Stockout
		if !adminRead(w, r, &s) {
			return
		}
		if err := e.AddStockout(s); err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, map[string]string{"status": "added"})
	})
	e.mux.HandleFunc("PUT "+a+"/projects/{project}/regions/{region}/quotas/{metric}", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Limit *float64 `json:"limit"`
		}
		if !adminRead(w, r, &body) {
			return
		}
		if body.Limit == nil {
			adminError(w, fmt.Errorf(`the body needs "limit", e.g. {"limit": 8}`))
			return
		}
		if err := e.SetQuota(r.PathValue("project"), r.PathValue("region"), r.PathValue("metric"), *body.Limit); err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, map[string]string{"status": "set"})
	})
	e.mux.HandleFunc("POST "+a+"/projects/{project}/zones/{zone}/instances/{name}/preempt", func(w http.ResponseWriter, r *http.Request) {
		if err := e.Preempt(r.PathValue("project"), r.PathValue("zone"), r.PathValue("name")); err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, map[string]string{"status": "preempted"})
	})
	e.mux.HandleFunc("PUT "+a+"/projects/{project}/permissions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Denied []string `json:"denied"`
		}
		if !adminRead(w, r, &body) {
			return
		}
		e.DenyPermissions(r.PathValue("project"), body.Denied...)
		adminJSON(w, map[string]string{"status": "set"})
	})
	e.mux.HandleFunc(a+"/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "no admin endpoint " + r.Method + " " + r.URL.Path + "; see docs/emulator.md"})
	})
}

func adminRead(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		adminError(w, fmt.Errorf("bad request body: %v", err))
		return false
	}
	return true
}

func adminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func adminError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func newURL() *url.URL { return &url.URL{} }

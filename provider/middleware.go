package provider

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// wrap authenticates, authorizes, times and answers a route.
func (s *Server) wrap(route string, roles []string, h func(http.ResponseWriter, *http.Request, Principal) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.m.inFlight.Inc()
		defer s.m.inFlight.Dec()
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		err := s.authorize(r, roles)
		refuseEarly(rec, err)
		if err == nil {
			var p Principal
			p, _ = s.principal(r)
			err = ownScope(r, p)
			// Only an authenticated caller's long poll outlasts the
			// server's timeouts; queryWait's error is the handler's to give.
			if strings.Contains(r.URL.RawQuery, "wait=") {
				if wait, err := queryWait(r.URL.Query()); err == nil {
					holdOpen(rec, wait)
				}
			}
			if err == nil {
				err = h(rec, r, p)
			}
		}
		if err != nil && rec.wrote {
			// The answer was begun (a client that went away mid-body):
			// there is no other to give.
			err = nil
		}
		if err != nil {
			ae := s.classify(err)
			rec.Header().Set("Content-Type", "application/json")
			rec.WriteHeader(ae.Status)
			json.NewEncoder(rec).Encode(map[string]any{"error": ae})
			if ae.id != "" {
				s.log.Error("request failed", "route", route, "id", ae.id, "err", err)
			}
		}
		s.m.latency.WithLabelValues(route, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool // the status line was sent
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status, r.wrote = code, true
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

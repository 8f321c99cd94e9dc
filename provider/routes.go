package provider

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the HTTP handler of the API, the OpenAPI document,
// /metrics and the status page.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, roles []string, h func(w http.ResponseWriter, r *http.Request, p Principal) error) {
		mux.Handle(pattern, s.wrap(pattern, roles, h))
	}
	all := []string{Admin, Backend, Client}
	route("GET /v1/machines", []string{Admin, Backend}, s.listMachines)
	route("POST /v1/machines", []string{Admin, Backend}, s.addMachine)
	route("POST /v1/machines:batchAdd", []string{Admin, Backend}, s.addMachines)
	route("GET /v1/machines/{hostname}", []string{Admin, Backend}, s.getMachine)
	route("DELETE /v1/machines/{hostname}", []string{Admin, Backend}, s.deleteMachine)
	route("POST /v1/machines/{hostname}/gone", []string{Admin, Backend}, s.machineGone)
	route("POST /v1/leases", []string{Admin, Client}, s.requestLease)
	route("GET /v1/leases", []string{Admin, Client}, s.listLeases)
	route("GET /v1/leases/{id}", []string{Admin, Client}, s.getLease)
	route("POST /v1/leases/{id}/extend", []string{Admin, Client}, s.extendLease)
	route("POST /v1/leases/{id}/release", []string{Admin, Client}, s.releaseLease)
	route("GET /v1/events", []string{Admin, Backend}, s.events)
	route("GET /v1/claim-key", []string{Admin, Backend}, s.getClaimKey)
	// The pages take a browser's session cookie too (see page); the
	// API above does not.
	mux.Handle("GET /{$}", s.page(true, s.wrap("GET /{$}", all, s.status)))
	mux.Handle("GET /metrics", s.page(false, s.wrap("/metrics", all, func(w http.ResponseWriter, r *http.Request, _ Principal) error {
		promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return nil
	})))
	s.handlePages(mux)
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	return mux
}

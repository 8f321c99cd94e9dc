package provider

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gcefleet/gcefleet/provider/api"
)

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "backend")
	if err != nil {
		return err
	}
	backend := q.Get("backend")
	if p.Role == Backend {
		backend = p.Name
	}
	ms, err := s.st.Machines(r.Context(), backend)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"machines": nonNil(ms)})
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := checkPath(r, "hostname"); err != nil {
		return err
	}
	m, err := s.st.Machine(r.Context(), r.PathValue("hostname"))
	if err != nil {
		return err
	}
	if p.Role == Backend && m.Backend != p.Name {
		return fmt.Errorf("machine %s: %w", m.Hostname, api.ErrNotFound)
	}
	return writeJSON(w, http.StatusOK, m)
}

func (s *Server) addMachine(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var m api.Machine
	if err := readJSON(r, &m); err != nil {
		return err
	}
	fields := map[string]string{}
	checkMachine(fields, "", &m, p)
	if err := s.checkPool(r.Context(), fields, "", &m); err != nil {
		return err
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	m, err := s.st.AddMachine(r.Context(), m)
	if err != nil {
		return err
	}
	s.added(r.Context(), m)
	return writeJSON(w, http.StatusOK, m)
}

// maxBatchAdd bounds a batch of machines: a backend catalogs a group's
// new instances at once, and groups hold at most 1,000.
const maxBatchAdd = 1000

// addMachines catalogs a batch of machines, each as addMachine would:
// one refused does not stop the others. A batch costs the store about
// one transaction instead of one a machine.
func (s *Server) addMachines(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var req struct {
		Machines []api.Machine `json:"machines"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	fields := map[string]string{}
	if len(req.Machines) == 0 || len(req.Machines) > maxBatchAdd {
		fields["machines"] = fmt.Sprintf("1 to %d machines", maxBatchAdd)
	}
	for i := range req.Machines {
		checkMachine(fields, fmt.Sprintf("machines[%d].", i), &req.Machines[i], p)
		if err := s.checkPool(r.Context(), fields, fmt.Sprintf("machines[%d].", i), &req.Machines[i]); err != nil {
			return err
		}
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	ms, errs := s.st.AddMachines(r.Context(), req.Machines)
	type result struct {
		Machine *api.Machine `json:"machine,omitempty"`
		Error   *apiError    `json:"error,omitempty"`
	}
	out := make([]result, len(ms))
	for i, m := range ms {
		if errs[i] != nil {
			out[i].Error = s.classify(errs[i])
			if out[i].Error.id != "" {
				s.log.Error("adding a machine failed", "hostname", req.Machines[i].Hostname, "id", out[i].Error.id, "err", errs[i])
			}
			continue
		}
		s.added(r.Context(), m)
		out[i].Machine = &ms[i]
	}
	return writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

// checkMachine adds m's problems to fields, each under prefix, and sets
// a backend's machine's backend to the caller's name.
func checkMachine(fields map[string]string, prefix string, m *api.Machine, p Principal) {
	checkHostname(fields, prefix+"hostname", m.Hostname)
	if p := textProblem(m.Backend, maxName); p != "" {
		fields[prefix+"backend"] = p
	}
	switch {
	case p.Role == Backend && m.Backend == "":
		m.Backend = p.Name
	case p.Role == Backend && m.Backend != p.Name:
		fields[prefix+"backend"] = fmt.Sprintf("a backend catalogs only its own machines: %q, not %q", p.Name, m.Backend)
	case m.Backend == "":
		fields[prefix+"backend"] = "name the backend the machine belongs to"
	}
	checkDims(fields, prefix+"dimensions", m.Dimensions, false)
	if m.Policies.OnReclaim != "" && m.Policies.OnReclaim != "DELETE" && m.Policies.OnReclaim != "RECYCLE" {
		fields[prefix+"policies.on_reclaim"] = "DELETE or RECYCLE"
	}
	if m.Connection.Port < 0 || m.Connection.Port > 65535 {
		fields[prefix+"connection.port"] = "a port, 1 to 65535"
	}
	checkAddress(fields, prefix+"connection.address", m.Connection.Address)
	checkCACert(fields, prefix+"connection.ca_cert", m.Connection.CACert)
	if m.State != "" || m.LeaseID != "" {
		fields[prefix+"state"] = "state and lease_id are the provider's to set"
	}
}

// added counts a machine that went at once to a waiting request, and
// answers that request's long polls with the lease read here, once.
func (s *Server) added(ctx context.Context, m api.Machine) {
	if m.LeaseID == "" {
		return
	}
	l, err := s.st.Lease(ctx, m.LeaseID)
	if err != nil {
		s.leaseTouched(m.LeaseID)
		s.eventsAdded(m.Backend)
		s.demandChanged()
		return
	}
	if l.Hostname == m.Hostname {
		s.m.outcomes.WithLabelValues("fulfilled_from_queue").Inc()
		s.m.wait.Observe(l.Fulfilled.Sub(l.Created).Seconds())
		s.due(l.ExpiresAt)
	}
	s.leased(l)
	s.demandChanged() // the request left the queue
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := checkPath(r, "hostname"); err != nil {
		return err
	}
	backend := ""
	if p.Role == Backend {
		backend = p.Name
	}
	if err := s.st.DeleteMachine(r.Context(), backend, r.PathValue("hostname")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

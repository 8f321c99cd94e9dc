package provider

import "net/http"

// machineGone is POST /v1/machines/{hostname}/gone: a backend reports that
// its machine's instance is gone (deleted behind its back, or preempted),
// so it leaves the catalog even if leased, and its lease ends RECLAIMED
// for its client to learn. DELETE refuses a leased machine: a backend
// must not take a machine from its client, except one that no longer
// exists.
func (s *Server) machineGone(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := checkPath(r, "hostname"); err != nil {
		return err
	}
	backend := ""
	if p.Role == Backend {
		backend = p.Name
	}
	lease, err := s.st.MachineGone(r.Context(), backend, r.PathValue("hostname"))
	if err != nil {
		return err
	}
	if lease != "" {
		s.m.outcomes.WithLabelValues("reclaimed_gone").Inc()
		if l, err := s.st.Lease(r.Context(), lease); err == nil {
			s.leaseChanged(l)
		} else {
			s.leaseTouched(lease)
		}
	}
	return writeJSON(w, http.StatusOK, struct {
		Lease string `json:"lease_id"`
	}{lease})
}

package provider

import (
	"net/http"

	"github.com/gcefleet/gcefleet/provider/api"
)

func (s *Server) events(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "backend", "after", "wait")
	if err != nil {
		return err
	}
	if _, err := queryWait(q); err != nil {
		return err
	}
	backend := q.Get("backend")
	if p.Role == Backend {
		backend = p.Name
	}
	after, err := queryCursor(q, "after")
	if err != nil {
		return err
	}
	var evs []api.Event
	err = s.longPoll(r, &poll{backend: backend}, func(*api.Lease) (bool, error) {
		var err error
		evs, err = s.st.Events(r.Context(), backend, after, 500)
		return len(evs) > 0, err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"events": nonNil(evs)})
}

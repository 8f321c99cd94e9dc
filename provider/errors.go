package provider

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/gcefleet/gcefleet/store"
)

// apiError is an error answer: {"error": {...}}.
type apiError struct {
	Status  int               `json:"-"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
	id      string            // of an internal error, in the log and the message
}

func (e *apiError) Error() string { return e.Message }

func invalid(fields map[string]string) error {
	keys := slices.Sorted(maps.Keys(fields))
	var more string
	// A body of a thousand bad fields is answered with the first few,
	// not echoed back whole.
	if len(keys) > maxFieldErrors {
		more = fmt.Sprintf("; and %d more", len(keys)-maxFieldErrors)
		keys = keys[:maxFieldErrors]
		kept := make(map[string]string, len(keys))
		for _, k := range keys {
			kept[k] = fields[k]
		}
		fields = kept
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+": "+fields[k])
	}
	return &apiError{Status: http.StatusBadRequest, Code: "invalid", Message: "invalid request: " + strings.Join(parts, "; ") + more, Fields: fields}
}

// classify turns err into its answer. An error the API does not know is
// answered with an id and nothing of its text, which is the log's (with
// the id): it may hold SQL, a driver's message or a path.
func (s *Server) classify(err error) *apiError {
	var ae *apiError
	// The store's sentinels' messages are for the client; its layer's
	// prefix is not.
	msg := strings.TrimPrefix(err.Error(), "store: ")
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
	case errors.Is(err, store.ErrConflict):
		return &apiError{Status: http.StatusConflict, Code: "conflict", Message: msg}
	case errors.Is(err, store.ErrLeased):
		return &apiError{Status: http.StatusConflict, Code: "leased", Message: msg}
	case errors.Is(err, store.ErrNotActive):
		return &apiError{Status: http.StatusConflict, Code: "not_active", Message: msg}
	case errors.Is(err, store.ErrRequestIDReuse):
		return &apiError{Status: http.StatusConflict, Code: "request_id_reuse", Message: msg}
	case errors.Is(err, store.ErrReclaimed):
		return &apiError{Status: http.StatusConflict, Code: "reclaimed", Message: msg}
	case errors.Is(err, context.Canceled):
		return &apiError{Status: 499, Code: "canceled", Message: "the request was canceled"}
	}
	id := errorID()
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error (id " + id + ")", id: id}
}

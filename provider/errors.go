package provider

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gcefleet/gcefleet/provider/api"
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
	e := newError("invalid", "invalid request: "+strings.Join(parts, "; ")+more)
	e.Fields = fields
	return e
}

// classify turns err into its answer, with the code and status of api's
// table. An error the API does not know is answered with an id and
// nothing of its text, which is the log's (with the id): it may hold SQL,
// a driver's message or a path.
func (s *Server) classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	switch c := api.CodeOf(err); c.Code {
	case "internal":
		id := errorID()
		return &apiError{Status: c.Status, Code: c.Code, Message: "internal error (id " + id + ")", id: id}
	case "canceled":
		return &apiError{Status: c.Status, Code: c.Code, Message: "the request was canceled"}
	default:
		// The store's sentinels' messages are for the client; its
		// layer's prefix is not.
		return &apiError{Status: c.Status, Code: c.Code, Message: strings.TrimPrefix(err.Error(), "store: ")}
	}
}

// newError returns the answer of code, with the status of api's table.
func newError(code, msg string) *apiError {
	c, ok := api.Lookup(code)
	if !ok {
		panic("provider: error code " + code + " is not in api.Codes")
	}
	return &apiError{Status: c.Status, Code: code, Message: msg}
}

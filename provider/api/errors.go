package api

import (
	"context"
	"errors"
	"net/http"
)

// Errors of the API. The server answers each with its code (see Codes),
// and the client's errors match them with errors.Is.
var (
	ErrInvalid         = errors.New("invalid request")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("conflict")
	ErrRequestIDReuse  = errors.New("request id reused with another request")
	ErrLeased          = errors.New("machine is leased")
	ErrNotActive       = errors.New("lease is not active")
	// ErrReclaimed refuses to catalog again a machine whose lease was
	// reclaimed: its backend deletes it and makes a fresh one.
	ErrReclaimed = errors.New("machine was reclaimed")
	// ErrQueueFull refuses a request that would queue beyond the client's
	// cap of pending requests.
	ErrQueueFull = errors.New("too many pending requests")
	ErrTooLarge  = errors.New("request body too large")
	// ErrUnsatisfiable refuses a request for dimensions that no cataloged
	// machine has and no backend offers to make, while some backend
	// offers something: it would wait out its deadline.
	ErrUnsatisfiable = errors.New("no machine or offer satisfies the request")
	// ErrUnsupportedMediaType: a body sent encoded, or as another type than JSON.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
)

// A Code is one kind of error answer: its code in the body, its HTTP
// status, and the error it stands for (nil for none).
type Code struct {
	Code   string
	Status int
	Err    error
}

// Codes returns the table of the API's error codes, the one place that
// ties a code to its status and error.
func Codes() []Code {
	return []Code{
		{"invalid", http.StatusBadRequest, ErrInvalid},
		{"unauthenticated", http.StatusUnauthorized, ErrUnauthenticated},
		{"forbidden", http.StatusForbidden, ErrForbidden},
		{"not_found", http.StatusNotFound, ErrNotFound},
		{"conflict", http.StatusConflict, ErrConflict},
		{"leased", http.StatusConflict, ErrLeased},
		{"not_active", http.StatusConflict, ErrNotActive},
		{"request_id_reuse", http.StatusConflict, ErrRequestIDReuse},
		{"reclaimed", http.StatusConflict, ErrReclaimed},
		{"too_large", http.StatusRequestEntityTooLarge, ErrTooLarge},
		{"unsupported_media_type", http.StatusUnsupportedMediaType, ErrUnsupportedMediaType},
		{"queue_full", http.StatusTooManyRequests, ErrQueueFull},
		{"unsatisfiable", http.StatusUnprocessableEntity, ErrUnsatisfiable},
		// A client that went away; nginx's status for it.
		{"canceled", 499, context.Canceled},
		{"internal", http.StatusInternalServerError, nil},
	}
}

// CodeOf returns the entry for err: the first whose error err matches
// (errors.Is), or internal's.
func CodeOf(err error) Code {
	cs := Codes()
	for _, c := range cs {
		if c.Err != nil && errors.Is(err, c.Err) {
			return c
		}
	}
	return cs[len(cs)-1]
}

// Lookup returns the entry of code, and false for a code not in the table.
func Lookup(code string) (Code, bool) {
	for _, c := range Codes() {
		if c.Code == code {
			return c, true
		}
	}
	return Code{}, false
}

package rpc

import (
	"errors"
	"fmt"
)

// Kind says what a failed call means for the caller: whether the method ran,
// and whether trying again can help.
type Kind int

const (
	// Remote: the method ran and returned an error. Retrying repeats the work.
	Remote Kind = iota + 1
	// Network: the call failed in transit; it may or may not have run.
	// Retrying is the usual answer.
	Network
	// Invalid: the call can never succeed as made: no such method, an
	// argument that does not decode, a caller that is not allowed, or a
	// method that says its input is bad. Do not retry.
	Invalid
	// Unavailable: the machine is stopped; no call to it will succeed.
	Unavailable
)

func (k Kind) String() string {
	switch k {
	case Remote:
		return "remote error"
	case Network:
		return "network error"
	case Invalid:
		return "invalid call"
	case Unavailable:
		return "machine unavailable"
	}
	return fmt.Sprintf("rpc.Kind(%d)", int(k))
}

// Error makes a Kind an error, so that errors.Is(err, rpc.Network) classifies
// any error a call returns.
func (k Kind) Error() string { return k.String() }

// Error is the error a call returns.
type Error struct {
	Kind   Kind
	Method string // "Service.Method"
	// Message is the remote side's account of the failure, if it gave one.
	Message string
	// Err is the local cause, such as the transport's error, if any.
	Err error
}

func (e *Error) Error() string {
	s := e.Kind.String()
	if e.Method != "" {
		s = e.Method + ": " + s
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the Kind and the local cause, so that errors.Is matches
// both rpc.Network and, say, context.DeadlineExceeded.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// Errorf returns an error of the given kind. A service method returns
// Errorf(Invalid, ...) to tell its callers that retrying will not help.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err, or 0 when err is not a call's error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var k Kind
	if errors.As(err, &k) {
		return k
	}
	return 0
}

// wireError is how a failure crosses the wire.
type wireError struct {
	Kind    Kind
	Message string
}

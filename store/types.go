package store

import "github.com/gcefleet/gcefleet/provider/api"

// Errors the store returns; callers classify them with errors.Is. They
// are the API's (package api), which answers each with its code.
var (
	ErrNotFound       = api.ErrNotFound
	ErrConflict       = api.ErrConflict
	ErrRequestIDReuse = api.ErrRequestIDReuse
	ErrLeased         = api.ErrLeased
	ErrNotActive      = api.ErrNotActive
	// ErrReclaimed refuses to catalog again a machine whose lease was
	// reclaimed: its backend deletes it and makes a fresh one. It holds
	// while the reclamation's event is kept (see PruneEvents).
	ErrReclaimed = api.ErrReclaimed
	// ErrQueueFull refuses a request that would queue beyond the client's
	// MaxPending.
	ErrQueueFull = api.ErrQueueFull
)

// The store keeps the API's types (package api) as they are.
type (
	Dimensions   = api.Dimensions
	Policies     = api.Policies
	Connection   = api.Connection
	Machine      = api.Machine
	Term         = api.Term
	LeaseRequest = api.LeaseRequest
	Lease        = api.Lease
	Event        = api.Event
)

// Machine and lease states, and the longest lease that is not indefinite.
const (
	Available   = api.Available
	Leased      = api.Leased
	Pending     = api.Pending
	Fulfilled   = api.Fulfilled
	Released    = api.Released
	Expired     = api.Expired
	Denied      = api.Denied
	Reclaimed   = api.Reclaimed
	MaxDuration = api.MaxDuration
)

// defaultDeadline is how long a request without a deadline waits.
const defaultDeadline = api.DefaultDeadline

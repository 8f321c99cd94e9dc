package client_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// TestErrorMatchesItsCode checks that an answer with each code of api's
// table matches that code's error and no other, and that the store's
// errors are the same values.
func TestErrorMatchesItsCode(t *testing.T) {
	for _, c := range api.Codes() {
		var err error = fmt.Errorf("calling: %w", &client.Error{Status: c.Status, Code: c.Code, Message: "m"})
		for _, o := range api.Codes() {
			if o.Err == nil {
				continue
			}
			if got, want := errors.Is(err, o.Err), o.Code == c.Code; got != want {
				t.Errorf("answer %s: errors.Is(err, error of %s) = %v, want %v", c.Code, o.Code, got, want)
			}
		}
	}
	for code, e := range map[string]error{
		"not_found": store.ErrNotFound, "conflict": store.ErrConflict, "leased": store.ErrLeased,
		"not_active": store.ErrNotActive, "request_id_reuse": store.ErrRequestIDReuse,
		"reclaimed": store.ErrReclaimed, "queue_full": store.ErrQueueFull,
	} {
		if !errors.Is(&client.Error{Code: code}, e) {
			t.Errorf("answer %s does not match the store's %v", code, e)
		}
		if got := api.CodeOf(fmt.Errorf("store: x: %w", e)).Code; got != code {
			t.Errorf("the store's %v is answered %s, want %s", e, got, code)
		}
	}
}

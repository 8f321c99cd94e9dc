package api_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gcefleet/gcefleet/provider/api"
)

func TestCodesAreOneTable(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range api.Codes() {
		if seen[c.Code] {
			t.Errorf("code %s twice in the table", c.Code)
		}
		seen[c.Code] = true
		if got, ok := api.Lookup(c.Code); !ok || got.Status != c.Status || got.Err != c.Err {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", c.Code, got, ok, c)
		}
		if c.Err == nil {
			continue
		}
		if got := api.CodeOf(fmt.Errorf("wrapped: %w", c.Err)); got.Code != c.Code {
			t.Errorf("CodeOf(%v) = %s, want %s", c.Err, got.Code, c.Code)
		}
	}
	if got := api.CodeOf(errors.New("disk on fire")); got.Code != "internal" || got.Status != 500 {
		t.Errorf("an unknown error is %+v, want internal 500", got)
	}
	if _, ok := api.Lookup("nonsense"); ok {
		t.Error("Lookup found a code not in the table")
	}
}

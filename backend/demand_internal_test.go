package backend

import (
	"maps"
	"testing"

	"github.com/gcefleet/gcefleet/provider/api"
)

func TestAssignGivesEachRequestToOneGroup(t *testing.T) {
	linux := func(zone string) api.Dimensions {
		return api.Dimensions{"os": {"linux"}, "zone": {zone}, "project": {"p"}}
	}
	set := func(n int, d api.Dimensions) api.DemandSet { return api.DemandSet{Dimensions: d, Pending: n} }
	for _, c := range []struct {
		name string
		sets []api.DemandSet
		cs   []candidate
		want map[string]int
	}{
		{"one request grows one group of several that match",
			[]api.DemandSet{set(1, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5}, {key: "b", dims: linux("b"), room: 5}, {key: "c", dims: linux("c"), room: 5}},
			map[string]int{"a": 1}},
		{"the zones take turns among equals",
			[]api.DemandSet{set(7, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 9}, {key: "b", dims: linux("b"), room: 9}, {key: "c", dims: linux("c"), room: 9}},
			map[string]int{"a": 3, "b": 2, "c": 2}},
		{"only groups whose dimensions satisfy the set",
			[]api.DemandSet{set(2, api.Dimensions{"zone": {"b"}}), set(1, api.Dimensions{"os": {"windows"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5}, {key: "b", dims: linux("b"), room: 5}},
			map[string]int{"b": 2}},
		{"a stocked-out zone gets nothing while another can grow",
			[]api.DemandSet{set(4, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5, failing: true}, {key: "b", dims: linux("b"), room: 5}, {key: "c", dims: linux("c"), room: 5}},
			map[string]int{"b": 2, "c": 2}},
		{"groups with room first, then all in turn",
			[]api.DemandSet{set(4, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 1}, {key: "b", dims: linux("b"), room: 0}},
			map[string]int{"a": 2, "b": 2}},
		{"a group with room before one that has room but fails",
			[]api.DemandSet{set(2, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5, failing: true}, {key: "b", dims: linux("b"), room: 1}},
			map[string]int{"a": 1, "b": 1}},
		{"every group failing: demand still goes to one each",
			[]api.DemandSet{set(2, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5, failing: true}, {key: "b", dims: linux("b"), room: 5, failing: true}},
			map[string]int{"a": 1, "b": 1}},
		{"requests stay with the groups already making machines for them",
			[]api.DemandSet{set(3, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5}, {key: "b", dims: linux("b"), room: 5, coming: 1}, {key: "c", dims: linux("c"), room: 5, coming: 1}},
			map[string]int{"a": 1, "b": 1, "c": 1}},
		{"machines on their way first, then growth in turn",
			[]api.DemandSet{set(4, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5}, {key: "b", dims: linux("b"), room: 5, coming: 2}, {key: "c", dims: linux("c"), room: 5}},
			map[string]int{"a": 1, "b": 2, "c": 1}},
		{"fewer requests than machines on their way: no growth elsewhere",
			[]api.DemandSet{set(2, api.Dimensions{"os": {"linux"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5}, {key: "b", dims: linux("b"), room: 5, coming: 3}},
			map[string]int{"b": 2}},
		{"no group matches: nobody's",
			[]api.DemandSet{set(3, api.Dimensions{"gpu": {"t4"}})},
			[]candidate{{key: "a", dims: linux("a"), room: 5}},
			map[string]int{}},
	} {
		if got := assign(c.sets, c.cs); !maps.Equal(got, c.want) {
			t.Errorf("%s: assign = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestTargetCountsPending(t *testing.T) {
	for _, c := range []struct {
		n    Need
		want int
	}{
		{Need{Size: 2, Minimum: 2, Maximum: 300, Pending: 66}, 66},
		{Need{Size: 2, Leased: 2, Minimum: 2, Maximum: 300, Pending: 1}, 4},
		{Need{Size: 10, Minimum: 2, Maximum: 300, Pending: 3}, 10},
		{Need{Size: 2, Minimum: 2, Maximum: 50, Pending: 100}, 50},
	} {
		if got := Target(c.n); got != c.want {
			t.Errorf("Target(%+v) = %d, want %d", c.n, got, c.want)
		}
	}
}

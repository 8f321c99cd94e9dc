package backend

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/gcefleet/gcefleet/provider/client"
	"github.com/gcefleet/gcefleet/store"
)

// SetDemand puts the provider's demand summary in force: the next resize
// pass assigns its requests to groups.
func (j *Jobs) SetDemand(d api.Demand) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.demand = d
}

// Demand returns the demand summary in force.
func (j *Jobs) Demand() api.Demand {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.demand
}

// dims are the dimensions the catalog gives g's machines, but for the
// instance's own (instance_id), with the machine type's size when it was
// read already.
func (j *Jobs) dims(g group) store.Dimensions {
	d := g.groupDims()
	j.mu.Lock()
	mt := j.machineTypes[g.m.Zone+"/"+g.t.MachineType]
	j.mu.Unlock()
	set := func(k, v string) {
		if _, ok := d[k]; !ok {
			d[k] = []string{v}
		}
	}
	if mt != nil {
		set("cpus", strconv.Itoa(int(mt.GetGuestCpus())))
		set("memory_gb", strconv.FormatFloat(float64(mt.GetMemoryMb())/1024, 'f', -1, 64))
	}
	if g.t.Disk.SizeGB > 0 {
		set("disk_gb", strconv.FormatInt(g.t.Disk.SizeGB, 10))
	}
	return d.Normalize()
}

// candidate is a group as the assignment of demand sees it.
type candidate struct {
	key  string
	zone string
	dims store.Dimensions
	// room is how many more machines the group may have beyond what it
	// holds or grows to anyway.
	room    int
	failing bool
	// coming is how many of its instances are on their way to the
	// catalog (its target less its cataloged machines): the requests a
	// group is making machines for stay its own from pass to pass.
	coming int
}

// assign gives each waiting request of sets to exactly one candidate
// whose dimensions satisfy it, request by request: a group already
// making a machine not yet given to a request first, then a group with
// room before one without, one that can create instances (no stockout or
// quota failure) before one that cannot, and among equals the one given
// the fewest so far (the zones take turns). It returns the requests
// assigned by candidate key; a request no candidate satisfies is
// nobody's.
func assign(sets []api.DemandSet, cs []candidate) map[string]int {
	out := map[string]int{}
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b candidate) int { return cmp.Compare(a.key, b.key) })
	for _, s := range sets {
		var match []int
		for i, c := range cs {
			if s.Dimensions.Matches(c.dims) {
				match = append(match, i)
			}
		}
		if len(match) == 0 {
			continue
		}
		for range s.Pending {
			best := -1
			for _, i := range match {
				if best < 0 || better(cs[i], cs[best], out) {
					best = i
				}
			}
			c := &cs[best]
			out[c.key]++
			c.room--
		}
	}
	return out
}

// better says whether a should take the next request rather than b.
func better(a, b candidate, given map[string]int) bool {
	if ca, cb := given[a.key] < a.coming, given[b.key] < b.coming; ca != cb {
		return ca
	}
	if ra, rb := a.room > 0, b.room > 0; ra != rb {
		return ra
	}
	if a.failing != b.failing {
		return !a.failing
	}
	return given[a.key] < given[b.key]
}

// assignDemand assigns the demand in force to the configured groups gs,
// from what the last passes saw of them and their leased machines.
func (j *Jobs) assignDemand(gs []group, leased map[string]int) map[string]int {
	d := j.Demand()
	if len(d.Sets) == 0 {
		return map[string]int{}
	}
	stats := j.Stats()
	st := j.state()
	var cs []candidate
	for _, g := range gs {
		key := g.record().key()
		if _, made := st.Groups[key]; !made {
			continue
		}
		s := stats[key]
		anyway := max(s.Target, s.Current, Target(g.need(s.Current, leased[key], 0, 0)))
		c := candidate{key: key, zone: g.m.Zone, dims: j.dims(g), room: g.m.MaximumSize - anyway, failing: s.Failing != ""}
		if !c.failing {
			// The leased count read now: the last catalog pass's may be
			// older than machines leased since, which would count them
			// as still to come.
			c.coming = max(0, s.Target-leased[key]-s.Idle)
		}
		cs = append(cs, c)
	}
	return assign(d.Sets, cs)
}

// offerTTL is how long the backend's offers stand: three intervals, at
// least a minute and at most an hour (the provider's bound). They are
// published again when a third of it passed (or they changed), so that
// a backend that stops publishing has its offers expire.
func offerTTL(interval time.Duration) time.Duration {
	return min(max(3*interval, time.Minute), time.Hour)
}

// demandGap is the least time between two resizes that changes of the
// demand run: a queue that changes all the time does not keep the job
// (and its read of the catalog) running back to back.
const demandGap = 250 * time.Millisecond

// publishOffers tells the provider what the configured groups gs can
// make, when that changed or a third of their ttl passed (see offerTTL).
func (j *Jobs) publishOffers(ctx context.Context, gs []group) {
	if j.Provider == nil {
		return
	}
	stats := j.Stats()
	offers := []api.Offer{}
	for _, g := range gs {
		s := stats[g.record().key()]
		d := j.dims(g)
		// The machine type's size, read once per zone and type, so that a
		// request for cpus is not refused before the first machine.
		if err := j.sizeDims(ctx, g, d); err != nil {
			j.Log.Warn("offers: the machine type's size is unknown; offered without it", "group", g.rev, "zone", g.m.Zone, "err", err)
		}
		offers = append(offers, api.Offer{Dimensions: d.Normalize(), Room: max(0, g.m.MaximumSize-max(s.Target, s.Current))})
	}
	b, _ := json.Marshal(offers)
	ttl := offerTTL(j.Config().Settings.Interval)
	j.mu.Lock()
	same := string(b) == j.offered && j.now().Sub(j.offeredAt) < ttl/3
	j.mu.Unlock()
	if same {
		return
	}
	if err := j.Provider.PutOffers(ctx, offers, ttl); err != nil {
		var ae *client.Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return // a provider from before offers
		}
		j.Log.Warn("publishing the backend's offers to the provider", "err", err)
		return
	}
	j.mu.Lock()
	j.offered, j.offeredAt = string(b), j.now()
	j.mu.Unlock()
}

// followDemand long-polls the provider's demand while this replica
// leads, and kicks resize-instance-groups each time it changes, so that a
// queued request grows a group within a second rather than at the next
// interval.
func (b *Backend) followDemand(ctx context.Context) {
	prov := b.jobs.Provider
	if prov == nil {
		return
	}
	version, backoff := "", time.Second
	for ctx.Err() == nil {
		d, err := prov.Demand(ctx, version, 30*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ae *client.Error
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				backoff = time.Minute // a provider from before demand: look now and then
			}
			b.log.Warn("following the provider's demand; resizes wait for the interval until this recovers", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		if gs, err := b.jobs.groups(); err == nil {
			b.jobs.publishOffers(ctx, gs) // if a third of their ttl passed
		}
		if d.Version != version {
			version = d.Version
			b.jobs.SetDemand(d)
			b.sched.Kick("resize-instance-groups")
			t := time.NewTimer(demandGap)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// bootingForDemand says whether a group with waiting requests assigned
// has instances not yet running.
func (j *Jobs) bootingForDemand() bool {
	for _, s := range j.Stats() {
		if s.Demand > 0 && s.Booting > 0 {
			return true
		}
	}
	return false
}

// failingGroups names the groups the last passes saw failing, sorted.
func (j *Jobs) failingGroups() string {
	var out []string
	for k, s := range j.Stats() {
		if s.Failing != "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

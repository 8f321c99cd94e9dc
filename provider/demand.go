package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gcefleet/gcefleet/provider/api"
)

const (
	// maxOffers is how many offers one backend may publish at once.
	maxOffers = 1000
	// defaultOfferTTL is how long offers stand unless published again,
	// when their publication says nothing.
	defaultOfferTTL = 10 * time.Minute
	// offersFresh is how long the provider answers requests from the
	// offers it last read (its own publications refresh it at once).
	offersFresh = time.Second
	// closestOffers is how many offers a refusal lists.
	closestOffers = 3
)

// offerCache holds the live offers as last read, for the refusal check
// that every lease request makes.
type offerCache struct {
	mu     sync.Mutex
	read   time.Time
	offers []api.Offer
}

// liveOffers returns every backend's live offers, read at most once a
// second.
func (s *Server) liveOffers(ctx context.Context) ([]api.Offer, error) {
	c := &s.offers
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.read.IsZero() && time.Since(c.read) < offersFresh {
		return c.offers, nil
	}
	os, err := s.st.Offers(ctx)
	if err != nil {
		return nil, err
	}
	c.offers, c.read = os, time.Now()
	return os, nil
}

// getDemand answers with the demand summary. With ?wait= and ?version=,
// a summary whose version is the one given is answered when it changes
// (a request queued, fulfilled, withdrawn or denied) or the wait passes.
func (s *Server) getDemand(w http.ResponseWriter, r *http.Request, p Principal) error {
	q, err := query(r, "wait", "version")
	if err != nil {
		return err
	}
	if _, err := queryWait(q); err != nil {
		return err
	}
	version := q.Get("version")
	if len(version) > 64 {
		return invalid(map[string]string{"query.version": "the version of the last demand read, as it gave it"})
	}
	var d api.Demand
	err = s.longPoll(r, &poll{demand: true}, func(*api.Lease) (bool, error) {
		sets, err := s.st.Demand(r.Context())
		if err != nil {
			return false, err
		}
		if p.Role == Backend {
			sets = poolDemand(sets, p.Name)
		}
		d = api.Demand{Version: demandVersion(sets), Sets: nonNil(sets)}
		return d.Version != version, nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

// demandVersion is a summary's version: a hash of what it says.
func demandVersion(sets []api.DemandSet) string {
	h := fnv.New64a()
	b, _ := json.Marshal(sets)
	h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}

// putOffers replaces the calling backend's offers.
func (s *Server) putOffers(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	var body api.Offers
	if err := readJSON(r, &body); err != nil {
		return err
	}
	fields := map[string]string{}
	ttl := defaultOfferTTL
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil || d < time.Second || d > time.Hour {
			fields["ttl"] = "a duration from 1s to 1h, such as 10m"
		}
		ttl = d
	}
	if len(body.Offers) > maxOffers {
		fields["offers"] = fmt.Sprintf("%d offers: a backend publishes at most %d", len(body.Offers), maxOffers)
	} else {
		for i, o := range body.Offers {
			at := fmt.Sprintf("offers[%d]", i)
			checkDims(fields, at+".dimensions", o.Dimensions, true)
			if o.Room < 0 {
				fields[at+".room"] = "how many more machines of the kind may be made: 0 or more"
			}
			if o.Backend != "" && o.Backend != p.Name {
				fields[at+".backend"] = "the provider sets it to the caller; leave it out"
			}
		}
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	offers := slices.Clone(body.Offers)
	for i, o := range offers {
		// As on its machines' catalog entries (checkPool), so that a
		// request for them is not refused as unsatisfiable.
		if slices.Contains(o.Dimensions[PoolDimension], "true") && s.poolBackends[p.Name] {
			offers[i].Dimensions = maps.Clone(o.Dimensions)
			offers[i].Dimensions[PoolBackendDimension] = []string{p.Name}
		}
	}
	if err := s.st.PutOffers(r.Context(), p.Name, offers, ttl); err != nil {
		return err
	}
	s.offers.mu.Lock()
	s.offers.read = time.Time{} // read them again at the next request
	s.offers.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getOffers answers with every backend's live offers.
func (s *Server) getOffers(w http.ResponseWriter, r *http.Request, p Principal) error {
	if _, err := query(r); err != nil {
		return err
	}
	os, err := s.st.Offers(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"offers": nonNil(os)})
}

// satisfiable refuses a request for dimensions that no cataloged machine
// has and no live offer makes. While no backend offers anything (a
// provider whose machines are added by hand, or whose backends predate
// offers), nothing is refused: what may come is unknown.
func (s *Server) satisfiable(ctx context.Context, want api.Dimensions) error {
	offers, err := s.liveOffers(ctx)
	if err != nil || len(offers) == 0 {
		return err
	}
	for _, o := range offers {
		if want.Matches(o.Dimensions) {
			return nil
		}
	}
	if ok, err := s.st.AnyMachine(ctx, want); err != nil || ok {
		return err
	}
	return newError("unsatisfiable", unsatisfiableMessage(want, offers))
}

// unsatisfiableMessage says which of the dimensions asked for nothing
// offers, and the offers that come closest (the most of them matched).
func unsatisfiableMessage(want api.Dimensions, offers []api.Offer) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range want {
		for _, v := range vs {
			pairs = append(pairs, pair{k, v})
		}
	}
	sort.Slice(pairs, func(a, b int) bool { return pairs[a].k+"="+pairs[a].v < pairs[b].k+"="+pairs[b].v })
	has := func(o api.Offer, p pair) bool { return slices.Contains(o.Dimensions[p.k], p.v) }
	var none []string
	for _, p := range pairs {
		if !slices.ContainsFunc(offers, func(o api.Offer) bool { return has(o, p) }) {
			none = append(none, p.k+"="+p.v)
		}
	}
	// Offers alike but for their zone, or for what names a revision and
	// that the request does not ask about, read as one: the list is to
	// show what else may be asked for.
	type scored struct {
		text, backend string
		zones         []string
		n             int
	}
	var ss []scored
	byText := map[string]int{}
	for _, o := range offers {
		n := 0
		for _, p := range pairs {
			if has(o, p) {
				n++
			}
		}
		shown := api.Dimensions{}
		for k, vs := range o.Dimensions {
			if _, asked := want[k]; asked || !foldedKeys[k] {
				shown[k] = vs
			}
		}
		key := dimText(shown) + "\x00" + o.Backend
		i, ok := byText[key]
		if !ok {
			i = len(ss)
			byText[key] = i
			ss = append(ss, scored{text: dimText(shown), backend: o.Backend, n: n})
		}
		if _, asked := want["zone"]; !asked {
			for _, z := range o.Dimensions["zone"] {
				if !slices.Contains(ss[i].zones, z) {
					ss[i].zones = append(ss[i].zones, z)
				}
			}
		}
	}
	sort.SliceStable(ss, func(a, b int) bool { return ss[a].n > ss[b].n })
	var b strings.Builder
	if len(none) > 0 {
		fmt.Fprintf(&b, "no cataloged machine or backend's offer has %s", strings.Join(none, ", "))
	} else {
		b.WriteString("no cataloged machine or backend's offer has all of " + dimText(want))
	}
	b.WriteString(": the request would wait out its deadline. Ask for dimensions a backend offers; the closest offers: ")
	for i, s := range ss[:min(len(ss), closestOffers)] {
		if i > 0 {
			b.WriteString("; ")
		}
		where := ""
		if len(s.zones) > 0 {
			sort.Strings(s.zones)
			where = "in " + strings.Join(s.zones, ", ") + "; "
		}
		fmt.Fprintf(&b, "%s (%sbackend %s; has %d of the %d asked)", s.text, where, s.backend, s.n, len(pairs))
	}
	return b.String()
}

// foldedKeys are the dimensions that closest offers leave out unless the
// request asks for them: the zone, given apart, and what tells a
// template's revisions and projects apart.
var foldedKeys = map[string]bool{"zone": true, "revision": true, "template": true, "project": true}

// dimText writes d as sorted key=value pairs.
func dimText(d api.Dimensions) string {
	var out []string
	for k, vs := range d {
		for _, v := range vs {
			out = append(out, k+"="+v)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

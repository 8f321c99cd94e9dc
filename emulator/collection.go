package emulator

import (
	"fmt"
	"net/http"
	"strings"

	compute "google.golang.org/api/compute/v1"
)

// collection is one kind of resource in one scope, as its get, list and
// delete handlers see it: the stored entries S by name and the wire
// resource T of each. get and list apply GCE's notFound error and its
// filter, orderBy and paging the same way for every resource; each resource
// states only its path and which entries it hides.
type collection[S, T any] struct {
	path     string         // the collection's path, "projects/P/zones/Z/instances"
	items    map[string]S   // the stored entries by name
	api      func(S) T      // the wire resource of an entry
	name     func(T) string // the paging key of a wire resource
	missing  func(S) bool   // get answers notFound for such an entry; nil when none
	unlisted func(S) bool   // list leaves such an entry out; nil when none

	// page is the resource's list type holding one page.
	page func(items []T, next string) any
}

// get returns the entry named name, or GCE's notFound error naming the
// resource's path.
func (c collection[S, T]) get(name string) (S, error) {
	s, ok := c.items[name]
	if !ok || (c.missing != nil && c.missing(s)) {
		var zero S
		return zero, errNotFound(c.path + "/" + name)
	}
	return s, nil
}

// list returns the page of wire resources the request's filter, orderBy,
// maxResults and pageToken select, and the next page's token.
func (c collection[S, T]) list(r *http.Request) ([]T, string, error) {
	lp, err := parseListParams(r)
	if err != nil {
		return nil, "", err
	}
	items, next := page(lp, c.appendListed(make([]T, 0, len(c.items))), c.name)
	return items, next, nil
}

// appendListed appends the wire resources list shows to all.
func (c collection[S, T]) appendListed(all []T) []T {
	for _, s := range c.items {
		if c.unlisted == nil || !c.unlisted(s) {
			all = append(all, c.api(s))
		}
	}
	return all
}

// serveGet answers a get of the entry named name.
func (c collection[S, T]) serveGet(name string) (any, error) {
	s, err := c.get(name)
	if err != nil {
		return nil, err
	}
	return c.api(s), nil
}

// serveList answers a list request with one page.
func (c collection[S, T]) serveList(r *http.Request) (any, error) {
	items, next, err := c.list(r)
	if err != nil {
		return nil, err
	}
	return c.page(items, next), nil
}

// aggregate lists the entries of the collection in gives for each zone of
// the project, paged together by zone and name as GCE's aggregatedList
// pages them; zoneOf names a wire resource's zone.
func aggregate[S, T any](c *call, in func(p *project, zone string) collection[S, T], zoneOf func(T) string) ([]T, string, error) {
	lp, err := parseListParams(c.r)
	if err != nil {
		return nil, "", err
	}
	var all []T
	var name func(T) string
	for z := range c.p.zones {
		col := in(c.p, z)
		name = col.name
		all = col.appendListed(all)
	}
	items, next := page(lp, all, func(t T) string { return zoneOf(t) + "/" + name(t) })
	return items, next, nil
}

// self is the api of a collection that stores its wire resources as they are.
func self[T any](t T) T { return t }

// instances is the call's zone's instances. An instance whose delete has
// stopped it is gone for get, as in GCE, but still listed until removed.
func (e *Emulator) instances(c *call) collection[*instance, *compute.Instance] {
	return instancesIn(c.p, c.zone)
}

// instancesIn is the instances of zone in p.
func instancesIn(p *project, zone string) collection[*instance, *compute.Instance] {
	path := fmt.Sprintf("projects/%s/zones/%s/instances", p.name, zone)
	return collection[*instance, *compute.Instance]{
		path:    path,
		items:   p.zones[zone].instances,
		api:     func(in *instance) *compute.Instance { return in.api },
		name:    func(i *compute.Instance) string { return i.Name },
		missing: func(in *instance) bool { return in.deleting && in.api.Status == "TERMINATED" },
		page: func(items []*compute.Instance, next string) any {
			return &compute.InstanceList{
				Kind:          "compute#instanceList",
				Id:            path,
				Items:         items,
				NextPageToken: next,
				SelfLink:      apiBase + path,
			}
		},
	}
}

// igms is the call's zone's instance group managers; a group being deleted
// is gone at once.
func (e *Emulator) igms(c *call) collection[*igm, *compute.InstanceGroupManager] {
	return igmsIn(c.p, c.zone)
}

// igmsIn is the instance group managers of zone in p.
func igmsIn(p *project, zone string) collection[*igm, *compute.InstanceGroupManager] {
	deleting := func(g *igm) bool { return g.deleting }
	path := fmt.Sprintf("projects/%s/zones/%s/instanceGroupManagers", p.name, zone)
	return collection[*igm, *compute.InstanceGroupManager]{
		path:     path,
		items:    p.zones[zone].igms,
		api:      func(g *igm) *compute.InstanceGroupManager { return g.api },
		name:     func(g *compute.InstanceGroupManager) string { return g.Name },
		missing:  deleting,
		unlisted: deleting,
		page: func(items []*compute.InstanceGroupManager, next string) any {
			return &compute.InstanceGroupManagerList{
				Kind: "compute#instanceGroupManagerList", Id: path,
				Items: items, NextPageToken: next, SelfLink: apiBase + path,
			}
		},
	}
}

// templates is the project's instance templates.
func (e *Emulator) templates(c *call) collection[*compute.InstanceTemplate, *compute.InstanceTemplate] {
	path := "projects/" + c.p.name + "/global/instanceTemplates"
	return collection[*compute.InstanceTemplate, *compute.InstanceTemplate]{
		path:  path,
		items: c.p.templates,
		api:   self[*compute.InstanceTemplate],
		name:  func(t *compute.InstanceTemplate) string { return t.Name },
		page: func(items []*compute.InstanceTemplate, next string) any {
			return &compute.InstanceTemplateList{Kind: "compute#instanceTemplateList", Id: path, Items: items, NextPageToken: next, SelfLink: apiBase + path}
		},
	}
}

// firewalls is the project's firewall rules.
func (e *Emulator) firewalls(c *call) collection[*compute.Firewall, *compute.Firewall] {
	path := "projects/" + c.p.name + "/global/firewalls"
	return collection[*compute.Firewall, *compute.Firewall]{
		path:  path,
		items: c.p.firewalls,
		api:   self[*compute.Firewall],
		name:  func(f *compute.Firewall) string { return f.Name },
		page: func(items []*compute.Firewall, next string) any {
			return &compute.FirewallList{Kind: "compute#firewallList", Id: path, Items: items, NextPageToken: next, SelfLink: apiBase + path}
		},
	}
}

// ops is the operations of scope s of the call. path is the collection's
// path as the request spelled it, which GCE's answers repeat.
func (e *Emulator) ops(c *call, s scope, path string) collection[*operation, *compute.Operation] {
	return collection[*operation, *compute.Operation]{
		path:  path,
		items: e.opsOf(c, s).byName,
		api:   func(op *operation) *compute.Operation { return op.api },
		name:  func(o *compute.Operation) string { return o.Name },
		page: func(items []*compute.Operation, next string) any {
			return &compute.OperationList{
				Kind:          "compute#operationList",
				Id:            path,
				Items:         items,
				NextPageToken: next,
				SelfLink:      apiBase + path,
			}
		},
	}
}

// opPath is the path of the operations collection a request on one
// operation names.
func opPath(c *call) string {
	return strings.TrimSuffix(trimAPIPrefix(c.urlPath), "/"+c.param("name"))
}

package emulator

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	compute "google.golang.org/api/compute/v1"
)

// igm is a zonal managed instance group. A reconciler goroutine per group
// converges its members on targetSize from its template, recreating members
// that were deleted or stopped behind its back.
type igm struct {
	api      *compute.InstanceGroupManager
	project  string
	zone     string
	members  map[string]*member
	kick     chan struct{}
	deleting bool
	deleted  chan struct{} // closed once the group is gone
}

type member struct {
	action  string // CREATING, RECREATING, DELETING, NONE
	lastErr *opError
	id      uint64
}

// igmRetry is how soon a group tries again after a failed creation, as a MIG
// keeps retrying on stockouts and quota errors.
const igmRetry = 200 * time.Millisecond

func (e *Emulator) kickIGM(p *project, in *instance) {
	if in.igm == "" || p == nil {
		return
	}
	if g, ok := p.zones[in.zone].igms[in.igm]; ok {
		g.poke()
	}
}

func (g *igm) poke() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (e *Emulator) insertIGM(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	var req compute.InstanceGroupManager
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	if err := validName("resource.name", req.Name); err != nil {
		return nil, err
	}
	z := c.p.zones[c.zone]
	if _, ok := z.igms[req.Name]; ok {
		return nil, errAlreadyExists(fmt.Sprintf("projects/%s/zones/%s/instanceGroupManagers/%s", c.p.name, c.zone, req.Name))
	}
	tmplRef := req.InstanceTemplate
	if tmplRef == "" && len(req.Versions) > 0 {
		tmplRef = req.Versions[0].InstanceTemplate
	}
	tmpl, err := e.templateRef(c.p, tmplRef, "resource.instanceTemplate")
	if err != nil {
		return nil, err
	}
	if req.BaseInstanceName == "" {
		req.BaseInstanceName = req.Name
	}
	if len(req.BaseInstanceName) > 58 || !nameRE.MatchString(req.BaseInstanceName) {
		return nil, errInvalidField("resource.baseInstanceName", req.BaseInstanceName, "Must be a valid instance name of at most 58 characters.")
	}
	if req.TargetSize < 0 || req.TargetSize > 1000 {
		return nil, errInvalidField("resource.targetSize", req.TargetSize, "Must be between 0 and 1000 for a zonal managed instance group.")
	}
	switch req.ListManagedInstancesResults {
	case "":
		req.ListManagedInstancesResults = "PAGELESS"
	case "PAGELESS", "PAGINATED":
	default:
		return nil, errInvalidField("resource.listManagedInstancesResults", req.ListManagedInstancesResults, "Must be PAGELESS or PAGINATED.")
	}
	api := &req
	api.Kind = "compute#instanceGroupManager"
	api.Id = newID()
	api.CreationTimestamp = timestamp(e.opts.Now())
	api.Zone = zoneURL(c.p.name, c.zone)
	api.SelfLink = zonalURL(c.p.name, c.zone, "instanceGroupManagers", req.Name)
	api.InstanceGroup = zonalURL(c.p.name, c.zone, "instanceGroups", req.Name)
	api.InstanceTemplate = tmpl.SelfLink
	api.Versions = []*compute.InstanceGroupManagerVersion{{InstanceTemplate: tmpl.SelfLink}}
	api.Fingerprint = newFingerprint()
	api.ForceSendFields = append(api.ForceSendFields, "TargetSize")
	g := &igm{api: api, project: c.p.name, zone: c.zone, members: map[string]*member{}, kick: make(chan struct{}, 1), deleted: make(chan struct{})}
	e.summarize(g)
	z.igms[req.Name] = g
	op := e.newOp(c, zoneScope, "insert", api.SelfLink, api.Id)
	e.runOp(op, func() *opError { return nil })
	e.goBackground(func() { e.runIGM(c.p, g) })
	return op.api, nil
}

// runIGM is a group's reconciler: it converges whenever it is kicked, and
// retries on its own while the group is not stable.
func (e *Emulator) runIGM(p *project, g *igm) {
	g.poke()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-g.kick:
		case <-retry.C:
		case <-e.done:
			return
		}
		e.mu.Lock()
		stable, gone := e.reconcile(p, g)
		e.mu.Unlock()
		if gone {
			return
		}
		if !stable {
			retry.Reset(igmRetry)
		}
	}
}

// reconcile takes one step towards the group's target. It reports whether
// the group is stable and whether it is gone. e.mu is held.
func (e *Emulator) reconcile(p *project, g *igm) (stable, gone bool) {
	z := p.zones[g.zone]
	for name, m := range g.members {
		in, exists := z.instances[name]
		switch {
		case m.action == "DELETING":
			if !exists {
				delete(g.members, name)
			} else if !in.deleting {
				e.beginDelete(p, in, nil)
			}
		case !exists:
			if g.deleting {
				delete(g.members, name)
				continue
			}
			e.createMember(p, g, name, m)
		case in.deleting:
			// On its way out behind the group's back; recreate once gone.
			m.action = "RECREATING"
		case in.api.Status == "TERMINATED" || in.api.Status == "STOPPING":
			if m.action != "RECREATING" {
				m.action = "RECREATING"
				e.serialf(in, "emulator: managed instance group %s recreates this instance\n", g.api.Name)
				e.beginDelete(p, in, nil)
			}
		case in.api.Status == "RUNNING":
			m.action = "NONE"
			m.lastErr = nil
			m.id = in.api.Id
		}
	}
	if g.deleting {
		for name, m := range g.members {
			m.action = "DELETING"
			if in, ok := z.instances[name]; ok && !in.deleting {
				e.beginDelete(p, in, nil)
			}
		}
		if len(g.members) == 0 {
			delete(z.igms, g.api.Name)
			close(g.deleted)
			return true, true
		}
		e.summarize(g)
		return false, false
	}
	live := 0
	for _, m := range g.members {
		if m.action != "DELETING" {
			live++
		}
	}
	for ; live < int(g.api.TargetSize); live++ {
		name := e.memberName(z, g)
		m := &member{action: "CREATING"}
		g.members[name] = m
		e.createMember(p, g, name, m)
	}
	if live > int(g.api.TargetSize) {
		// Shrink: the newest names that are not running go first.
		names := make([]string, 0, len(g.members))
		for name, m := range g.members {
			if m.action != "DELETING" {
				names = append(names, name)
			}
		}
		slices.SortFunc(names, func(a, b string) int {
			ra, rb := g.members[a].action == "NONE", g.members[b].action == "NONE"
			if ra != rb {
				if ra {
					return 1
				}
				return -1
			}
			return -cmpString(a, b)
		})
		for _, name := range names[:live-int(g.api.TargetSize)] {
			g.members[name].action = "DELETING"
			if in, ok := z.instances[name]; ok && !in.deleting {
				e.beginDelete(p, in, nil)
			}
		}
	}
	e.summarize(g)
	return g.api.Status.IsStable, false
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// createMember creates the instance of a member from the group's template.
// A failure is kept as the member's last attempt and retried. e.mu is held.
func (e *Emulator) createMember(p *project, g *igm, name string, m *member) {
	if m.action == "NONE" {
		m.action = "RECREATING"
	}
	tmpl, ok := p.templates[lastSegment(g.api.InstanceTemplate)]
	if !ok {
		m.lastErr = opNotFound(g.api.InstanceTemplate)
		return
	}
	req := instanceFromProperties(tmpl.Properties, g.zone)
	req.Name = name
	in, err := e.buildInstance(p, g.zone, req, "instanceTemplate.properties")
	if err != nil {
		m.lastErr = opInvalid(err.Error())
		return
	}
	in.igm = g.api.Name
	if in.api.Metadata != nil {
		v := g.api.SelfLink
		in.api.Metadata.Items = append(in.api.Metadata.Items,
			&compute.MetadataItems{Key: "created-by", Value: &v})
	}
	if _, oerr := e.admit(p, g.zone, []*instance{in}, 1); oerr != nil {
		m.lastErr = oerr
		return
	}
	m.lastErr = nil
	m.id = in.api.Id
	e.goBackground(func() {
		e.boot(in)
		e.mu.Lock()
		g.poke()
		e.mu.Unlock()
	})
}

// memberName makes a new instance name: the base name and four random
// characters, as GCE names group members.
func (e *Emulator) memberName(z *zone, g *igm) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	for {
		b := []byte(g.api.BaseInstanceName + "-xxxx")
		for i := len(b) - 4; i < len(b); i++ {
			b[i] = chars[rand.IntN(len(chars))]
		}
		name := string(b)
		if _, taken := z.instances[name]; taken {
			continue
		}
		if _, taken := g.members[name]; taken {
			continue
		}
		return name
	}
}

// summarize refreshes the group's currentActions and status. e.mu is held.
func (e *Emulator) summarize(g *igm) {
	s := &compute.InstanceGroupManagerActionsSummary{}
	for _, m := range g.members {
		switch m.action {
		case "CREATING":
			s.Creating++
		case "RECREATING":
			s.Recreating++
		case "DELETING":
			s.Deleting++
		default:
			s.None++
		}
	}
	s.ForceSendFields = []string{"Abandoning", "Creating", "CreatingWithoutRetries", "Deleting", "None", "Recreating", "Refreshing", "Restarting", "Verifying"}
	g.api.CurrentActions = s
	stable := s.Creating == 0 && s.Recreating == 0 && s.Deleting == 0 && int(s.None) == int(g.api.TargetSize)
	g.api.Status = &compute.InstanceGroupManagerStatus{
		IsStable:        stable,
		VersionTarget:   &compute.InstanceGroupManagerStatusVersionTarget{IsReached: true, ForceSendFields: []string{"IsReached"}},
		ForceSendFields: []string{"IsStable"},
	}
}

func (e *Emulator) lookupIGM(c *call) (*igm, error) {
	return e.igms(c).get(c.param("name"))
}

func (e *Emulator) getIGM(c *call) (any, error) {
	return e.igms(c).serveGet(c.param("name"))
}

func (e *Emulator) listIGMs(c *call) (any, error) {
	return e.igms(c).serveList(c.r)
}

// aggregatedListIGMs lists the project's groups in every zone, paged
// across zones as instances.aggregatedList is.
func (e *Emulator) aggregatedListIGMs(c *call) (any, error) {
	items, next, err := aggregate(c, igmsIn, func(g *compute.InstanceGroupManager) string { return lastSegment(g.Zone) })
	if err != nil {
		return nil, err
	}
	scoped := byZone(c.p, items, func(g *compute.InstanceGroupManager) string { return lastSegment(g.Zone) },
		func(l *compute.InstanceGroupManagersScopedList, g *compute.InstanceGroupManager) {
			l.InstanceGroupManagers = append(l.InstanceGroupManagers, g)
		},
		func(scope, msg string) compute.InstanceGroupManagersScopedList {
			return compute.InstanceGroupManagersScopedList{Warning: &compute.InstanceGroupManagersScopedListWarning{
				Code: "NO_RESULTS_ON_PAGE", Message: msg, Data: []*compute.InstanceGroupManagersScopedListWarningData{{Key: "scope", Value: scope}},
			}}
		})
	return &compute.InstanceGroupManagerAggregatedList{
		Kind:          "compute#instanceGroupManagerAggregatedList",
		Id:            "projects/" + c.p.name + "/aggregated/instanceGroupManagers",
		Items:         scoped,
		NextPageToken: next,
		SelfLink:      projectURL(c.p.name) + "/aggregated/instanceGroupManagers",
	}, nil
}

func (e *Emulator) deleteIGM(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	g, err := e.lookupIGM(c)
	if err != nil {
		return nil, err
	}
	g.deleting = true
	g.poke()
	op := e.newOp(c, zoneScope, "delete", g.api.SelfLink, g.api.Id)
	e.runOp(op, func() *opError {
		select {
		case <-g.deleted:
		case <-e.done:
		}
		return nil
	})
	return op.api, nil
}

func (e *Emulator) resizeIGM(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	g, err := e.lookupIGM(c)
	if err != nil {
		return nil, err
	}
	size, perr := strconv.ParseInt(c.r.URL.Query().Get("size"), 10, 64)
	if perr != nil || size < 0 || size > 1000 {
		return nil, errInvalidField("size", c.r.URL.Query().Get("size"), "Must be between 0 and 1000 for a zonal managed instance group.")
	}
	g.api.TargetSize = size
	g.api.Fingerprint = newFingerprint()
	e.summarize(g)
	g.poke()
	op := e.newOp(c, zoneScope, "compute.instanceGroupManagers.resize", g.api.SelfLink, g.api.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

func (e *Emulator) createIGMInstances(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	g, err := e.lookupIGM(c)
	if err != nil {
		return nil, err
	}
	var req compute.InstanceGroupManagersCreateInstancesRequest
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	z := c.p.zones[c.zone]
	for i, pic := range req.Instances {
		if pic == nil {
			return nil, errInvalidField(fmt.Sprintf("instances[%d]", i), "", "Must not be empty.")
		}
		if err := validName(fmt.Sprintf("instances[%d].name", i), pic.Name); err != nil {
			return nil, err
		}
		if _, ok := z.instances[pic.Name]; ok {
			return nil, errAlreadyExists(fmt.Sprintf("projects/%s/zones/%s/instances/%s", c.p.name, c.zone, pic.Name))
		}
		if _, ok := g.members[pic.Name]; ok {
			return nil, errAlreadyExists(fmt.Sprintf("projects/%s/zones/%s/instances/%s", c.p.name, c.zone, pic.Name))
		}
	}
	if int(g.api.TargetSize)+len(req.Instances) > 1000 {
		return nil, errInvalidField("instances", len(req.Instances), "The group would exceed 1000 instances.")
	}
	for _, pic := range req.Instances {
		g.members[pic.Name] = &member{action: "CREATING"}
	}
	g.api.TargetSize += int64(len(req.Instances))
	e.summarize(g)
	g.poke()
	op := e.newOp(c, zoneScope, "compute.instanceGroupManagers.createInstances", g.api.SelfLink, g.api.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

func (e *Emulator) deleteIGMInstances(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	g, err := e.lookupIGM(c)
	if err != nil {
		return nil, err
	}
	var req compute.InstanceGroupManagersDeleteInstancesRequest
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	var names []string
	for i, ref := range req.Instances {
		name := lastSegment(ref)
		m, ok := g.members[name]
		if !ok || m.action == "DELETING" {
			if req.SkipInstancesOnValidationError {
				continue
			}
			return nil, errInvalidField(fmt.Sprintf("instances[%d]", i), ref, "The instance is not a member of the managed instance group '"+g.api.Name+"'.")
		}
		names = append(names, name)
	}
	for _, name := range names {
		g.members[name].action = "DELETING"
	}
	g.api.TargetSize -= int64(len(names))
	e.summarize(g)
	g.poke()
	op := e.newOp(c, zoneScope, "compute.instanceGroupManagers.deleteInstances", g.api.SelfLink, g.api.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

func (e *Emulator) listManagedInstances(c *call) (any, error) {
	g, err := e.lookupIGM(c)
	if err != nil {
		return nil, err
	}
	lp, lerr := parseListParams(c.r)
	if lerr != nil {
		return nil, lerr
	}
	if g.api.ListManagedInstancesResults != "PAGINATED" {
		lp.maxResults = 1 << 30
		lp.after = nil
	}
	z := c.p.zones[c.zone]
	var all []*compute.ManagedInstance
	for name, m := range g.members {
		mi := &compute.ManagedInstance{
			Name:          name,
			Instance:      zonalURL(c.p.name, c.zone, "instances", name),
			CurrentAction: m.action,
			Version:       &compute.ManagedInstanceVersion{InstanceTemplate: g.api.InstanceTemplate},
		}
		if in, ok := z.instances[name]; ok {
			mi.Id = in.api.Id
			mi.InstanceStatus = in.api.Status
		}
		if m.lastErr != nil {
			mi.LastAttempt = &compute.ManagedInstanceLastAttempt{Errors: &compute.ManagedInstanceLastAttemptErrors{
				Errors: []*compute.ManagedInstanceLastAttemptErrorsErrors{{Code: m.lastErr.code, Message: m.lastErr.message}},
			}}
		}
		all = append(all, mi)
	}
	items, next := page(lp, all, func(m *compute.ManagedInstance) string { return m.Name })
	return &compute.InstanceGroupManagersListManagedInstancesResponse{ManagedInstances: items, NextPageToken: next}, nil
}

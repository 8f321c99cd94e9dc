package emulator

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	compute "google.golang.org/api/compute/v1"
)

// instance is one emulated VM.
type instance struct {
	api     *compute.Instance
	project string
	zone    string
	region  string
	cpus    int64
	igm     string // the managing group's name, "" when unmanaged

	deleting  bool
	gone      chan struct{} // closed once the instance is removed
	preempted bool
	proc      *process      // the container's process while RUNNING
	runs      int           // times it has been RUNNING, to tell one run from the next
	serial    *serialBuffer // created on first output
	meta      *metadataSrv  // the instance's metadata server while RUNNING
	metaGen   chan struct{} // closed and replaced when metadata changes
	expiry    *time.Timer   // maxRunDuration
	booting   chan struct{} // closed when a boot sequence ends
	addrIP    string        // networkIP, kept across stop and start
}

func (in *instance) usage() map[string]float64 {
	u := map[string]float64{"INSTANCES": 1}
	if in.api.Status != "TERMINATED" {
		u["CPUS"] = float64(in.cpus)
		for _, ni := range in.api.NetworkInterfaces {
			u["IN_USE_ADDRESSES"] += float64(len(ni.AccessConfigs))
		}
	}
	return u
}

// account adds (sign 1) or removes (sign -1) what in takes of its region's
// quotas in its current state. Callers remove before a change of status that
// alters usage and add after it. e.mu is held.
func (p *project) account(in *instance, sign float64) {
	u := p.regions[in.region].usage
	for k, v := range in.usage() {
		u[k] += sign * v
	}
}

// setStatus changes in's status, keeping quota usage right. e.mu is held.
func (p *project) setStatus(in *instance, status string) {
	p.account(in, -1)
	in.api.Status = status
	p.account(in, 1)
}

// checkQuota says whether the region has room for want on top of its usage.
// e.mu is held.
func checkQuota(p *project, regionName string, usage, want map[string]float64) *opError {
	r := p.regions[regionName]
	for _, metric := range []string{"CPUS", "INSTANCES", "IN_USE_ADDRESSES"} {
		if want[metric] == 0 {
			continue
		}
		if usage[metric]+want[metric] > r.quotas[metric] {
			return opQuotaExceeded(metric, regionName, r.quotas[metric], usage[metric], want[metric])
		}
	}
	return nil
}

// admit checks quota and capacity for new instances and records them in
// their zone, PROVISIONING. It returns how many of ins fit (all or nothing
// below min) and the error that kept the rest out. e.mu is held.
func (e *Emulator) admit(p *project, zoneName string, ins []*instance, min int) (int, *opError) {
	z := p.zones[zoneName]
	for _, in := range ins {
		if e.stockedOut(p.name, zoneName, in.api) {
			return 0, opStockout(p.name, zoneName)
		}
	}
	usage := maps.Clone(p.regions[z.region].usage)
	n := 0
	var qerr *opError
	for _, in := range ins {
		if err := checkQuota(p, z.region, usage, in.usage()); err != nil {
			qerr = err
			break
		}
		for k, v := range in.usage() {
			usage[k] += v
		}
		n++
	}
	if n < min {
		return 0, qerr
	}
	for _, in := range ins[:n] {
		in.addrIP = e.addrs.next()
		for _, ni := range in.api.NetworkInterfaces {
			ni.NetworkIP = in.addrIP
			for _, ac := range ni.AccessConfigs {
				ac.NatIP = in.addrIP
			}
		}
		in.booting = make(chan struct{})
		z.instances[in.api.Name] = in
		p.account(in, 1)
	}
	return n, qerr
}

func (e *Emulator) insertInstance(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	var req compute.Instance
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	if t := c.r.URL.Query().Get("sourceInstanceTemplate"); t != "" {
		tmpl, err := e.templateRef(c.p, t, "sourceInstanceTemplate")
		if err != nil {
			return nil, err
		}
		merged := instanceFromProperties(tmpl.Properties, c.zone)
		overlay(merged, &req)
		req = *merged
	}
	z := c.p.zones[c.zone]
	if _, ok := z.instances[req.Name]; ok {
		return nil, errAlreadyExists(fmt.Sprintf("projects/%s/zones/%s/instances/%s", c.p.name, c.zone, req.Name))
	}
	in, err := e.buildInstance(c.p, c.zone, &req, "resource")
	if err != nil {
		return nil, err
	}
	op := e.newOp(c, zoneScope, "insert", in.api.SelfLink, in.api.Id)
	if _, oerr := e.admit(c.p, c.zone, []*instance{in}, 1); oerr != nil {
		e.runOp(op, func() *opError { return oerr })
		return op.api, nil
	}
	e.runOp(op, func() *opError { return e.boot(in) })
	return op.api, nil
}

func opResult(op *operation, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return op.api, nil
}

// instanceFromProperties turns template or bulk-insert properties into an
// instance request in zone; the JSON field names of the two types match.
func instanceFromProperties(props *compute.InstanceProperties, zone string) *compute.Instance {
	in := &compute.Instance{}
	if props == nil {
		return in
	}
	b, _ := json.Marshal(props)
	json.Unmarshal(b, in)
	if in.MachineType != "" && !strings.Contains(in.MachineType, "/") {
		in.MachineType = "zones/" + zone + "/machineTypes/" + in.MachineType
	}
	return in
}

// overlay sets on dst every field that src sets, as GCE applies an insert
// body on top of its sourceInstanceTemplate.
func overlay(dst, src *compute.Instance) {
	b, _ := json.Marshal(src)
	json.Unmarshal(b, dst)
}

// boot moves a PROVISIONING instance to RUNNING, taking the configured
// time, and starts its container. It runs without e.mu held.
func (e *Emulator) boot(in *instance) *opError {
	lat := e.currentLatency()
	defer func() {
		e.mu.Lock()
		if in.booting != nil {
			close(in.booting)
			in.booting = nil
		}
		e.mu.Unlock()
	}()
	if !e.sleep(lat.Provisioning) {
		return nil
	}
	e.mu.Lock()
	if in.deleting {
		e.mu.Unlock()
		return nil
	}
	in.api.Status = "STAGING"
	e.mu.Unlock()
	if !e.sleep(lat.Staging) {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if in.deleting || in.api.Status != "STAGING" {
		return nil
	}
	e.setRunning(in)
	return nil
}

// setRunning marks in RUNNING and starts what runs on it. e.mu is held.
func (e *Emulator) setRunning(in *instance) {
	now := e.opts.Now()
	in.api.Status = "RUNNING"
	in.preempted = false
	in.api.CpuPlatform = "Intel Cascade Lake"
	in.api.LastStartTimestamp = timestamp(now)
	if s := in.api.Scheduling; s != nil && s.MaxRunDuration != nil {
		d := time.Duration(s.MaxRunDuration.Seconds)*time.Second + time.Duration(s.MaxRunDuration.Nanos)
		s.TerminationTime = timestamp(now.Add(d))
		d = time.Duration(float64(d) / float64(time.Second) * float64(e.opts.RunDurationUnit))
		action := s.InstanceTerminationAction
		in.expiry = time.AfterFunc(d, func() { e.expire(in, action) })
	}
	in.runs++
	g := e.latency.Guest
	if g <= 0 {
		e.startContainer(in)
		return
	}
	e.serialf(in, "emulator: the guest OS boots (%v)\n", g)
	run := in.runs
	e.goBackground(func() {
		if !e.sleep(g) {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		// Not if the instance stopped, went or started again meanwhile.
		if !in.deleting && in.api.Status == "RUNNING" && in.runs == run {
			e.startContainer(in)
		}
	})
}

// expire ends an instance whose maxRunDuration has passed.
func (e *Emulator) expire(in *instance, action string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || in.deleting || in.api.Status != "RUNNING" {
		return
	}
	p := e.projects[in.project]
	e.serialf(in, "emulator: maxRunDuration reached; instanceTerminationAction %s\n", action)
	if action == "DELETE" {
		e.beginDelete(p, in, nil)
		return
	}
	e.beginStop(in, "TERMINATED", nil)
}

// halt stops what runs on in (timer, metadata server, process) and returns
// the process so that the caller can wait for it outside e.mu. e.mu is held.
func (e *Emulator) halt(in *instance) *process {
	if in.expiry != nil {
		in.expiry.Stop()
		in.expiry = nil
	}
	in.closeMetadata()
	pr := in.proc
	in.proc = nil
	return pr
}

// beginStop moves in to STOPPING and, in the background, to final
// (TERMINATED or SUSPENDED) once its process has exited; then it calls after,
// if set, with e.mu held. e.mu is held.
func (e *Emulator) beginStop(in *instance, final string, after func()) {
	in.api.Status = "STOPPING"
	pr := e.halt(in)
	e.goBackground(func() {
		if pr != nil {
			pr.stop(e.opts.StopGrace)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if in.api.Status == "STOPPING" {
			e.projects[in.project].setStatus(in, final)
			in.api.LastStopTimestamp = timestamp(e.opts.Now())
		}
		if after != nil {
			after()
		}
		e.kickIGM(e.projects[in.project], in)
	})
}

// beginDelete stops in and removes it; done, if set, is called with e.mu held
// once it is gone. e.mu is held.
func (e *Emulator) beginDelete(p *project, in *instance, done func()) {
	in.deleting = true
	e.beginStop(in, "TERMINATED", func() {
		z := p.zones[in.zone]
		if z.instances[in.api.Name] == in {
			delete(z.instances, in.api.Name)
			p.account(in, -1)
			close(in.gone)
		}
		if done != nil {
			done()
		}
	})
}

func (e *Emulator) lookupInstance(c *call) (*instance, error) {
	return e.instances(c).get(c.param("name"))
}

func (e *Emulator) getInstance(c *call) (any, error) {
	return e.instances(c).serveGet(c.param("name"))
}

func (e *Emulator) listInstances(c *call) (any, error) {
	return e.instances(c).serveList(c.r)
}

func (e *Emulator) aggregatedListInstances(c *call) (any, error) {
	items, next, err := aggregate(c, instancesIn, func(i *compute.Instance) string { return lastSegment(i.Zone) })
	if err != nil {
		return nil, err
	}
	scoped := byZone(c.p, items, func(in *compute.Instance) string { return lastSegment(in.Zone) },
		func(l *compute.InstancesScopedList, in *compute.Instance) { l.Instances = append(l.Instances, in) },
		func(scope, msg string) compute.InstancesScopedList {
			return compute.InstancesScopedList{Warning: &compute.InstancesScopedListWarning{
				Code: "NO_RESULTS_ON_PAGE", Message: msg, Data: []*compute.InstancesScopedListWarningData{{Key: "scope", Value: scope}},
			}}
		})
	return &compute.InstanceAggregatedList{
		Kind:          "compute#instanceAggregatedList",
		Id:            "projects/" + c.p.name + "/aggregated/instances",
		Items:         scoped,
		NextPageToken: next,
		SelfLink:      projectURL(c.p.name) + "/aggregated/instances",
	}, nil
}

func (e *Emulator) deleteInstance(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	in, err := e.lookupInstance(c)
	if err != nil {
		return nil, err
	}
	op := e.newOp(c, zoneScope, "delete", in.api.SelfLink, in.api.Id)
	e.deleteWithOp(c.p, in, op)
	return op.api, nil
}

// deleteWithOp deletes in, finishing op when it is gone. e.mu is held.
func (e *Emulator) deleteWithOp(p *project, in *instance, op *operation) {
	// A second delete of the same instance waits for the first.
	if !in.deleting {
		e.beginDelete(p, in, nil)
	}
	e.runOp(op, func() *opError {
		select {
		case <-in.gone:
		case <-e.done:
		}
		return nil
	})
}

func (e *Emulator) stopInstance(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	in, err := e.lookupInstance(c)
	if err != nil {
		return nil, err
	}
	op := e.newOp(c, zoneScope, "stop", in.api.SelfLink, in.api.Id)
	stopped := make(chan struct{})
	switch in.api.Status {
	case "TERMINATED", "STOPPING":
		close(stopped)
	default:
		e.beginStop(in, "TERMINATED", func() { close(stopped) })
	}
	e.runOp(op, func() *opError {
		select {
		case <-stopped:
		case <-e.done:
		}
		return nil
	})
	return op.api, nil
}

func (e *Emulator) startInstance(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	in, err := e.lookupInstance(c)
	if err != nil {
		return nil, err
	}
	op := e.newOp(c, zoneScope, "start", in.api.SelfLink, in.api.Id)
	if in.api.Status != "TERMINATED" {
		e.runOp(op, func() *opError { return nil })
		return op.api, nil
	}
	if e.stockedOut(c.p.name, c.zone, in.api) {
		oerr := opStockout(c.p.name, c.zone)
		e.runOp(op, func() *opError { return oerr })
		return op.api, nil
	}
	want := map[string]float64{"CPUS": float64(in.cpus)}
	if oerr := checkQuota(c.p, in.region, c.p.regions[in.region].usage, want); oerr != nil {
		e.runOp(op, func() *opError { return oerr })
		return op.api, nil
	}
	c.p.setStatus(in, "PROVISIONING")
	in.booting = make(chan struct{})
	e.runOp(op, func() *opError { return e.boot(in) })
	return op.api, nil
}

func (e *Emulator) setInstanceMetadata(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	in, err := e.lookupInstance(c)
	if err != nil {
		return nil, err
	}
	var md compute.Metadata
	if err := readJSON(c.r, &md); err != nil {
		return nil, err
	}
	if md.Fingerprint != in.api.Metadata.Fingerprint {
		return nil, errConditionNotMet("metadata")
	}
	if err := validMetadata("metadata", &md); err != nil {
		return nil, err
	}
	in.api.Metadata = &compute.Metadata{Kind: "compute#metadata", Items: md.Items, Fingerprint: newFingerprint()}
	in.metadataChanged()
	op := e.newOp(c, zoneScope, "setMetadata", in.api.SelfLink, in.api.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

func (e *Emulator) setInstanceLabels(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	in, err := e.lookupInstance(c)
	if err != nil {
		return nil, err
	}
	var req compute.InstancesSetLabelsRequest
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	if req.LabelFingerprint != in.api.LabelFingerprint {
		return nil, errConditionNotMet("label")
	}
	if err := validLabels("labels", req.Labels); err != nil {
		return nil, err
	}
	in.api.Labels = req.Labels
	in.api.LabelFingerprint = newFingerprint()
	in.metadataChanged()
	op := e.newOp(c, zoneScope, "setLabels", in.api.SelfLink, in.api.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

func (e *Emulator) getSerialPortOutput(c *call) (any, error) {
	in, err := e.lookupInstance(c)
	if err != nil {
		return nil, err
	}
	q := c.r.URL.Query()
	port := int64(1)
	if s := q.Get("port"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 || n > 4 {
			return nil, errInvalidField("port", s, "Must be between 1 and 4.")
		}
		port = n
	}
	var start int64
	if s := q.Get("start"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, errInvalidField("start", s, "Must be an integer.")
		}
		start = n
	}
	out := &compute.SerialPortOutput{
		Kind:     "compute#serialPortOutput",
		SelfLink: in.api.SelfLink + "/serialPort",
	}
	if port == 1 && in.serial != nil {
		out.Contents, out.Start, out.Next = in.serial.read(start)
	} else {
		start = max(start, 0) // nothing written: a negative start reads it all
		out.Start, out.Next = start, start
	}
	// GCE sends start and next even when they are zero.
	out.ForceSendFields = []string{"Start", "Next", "Contents"}
	return out, nil
}

// bulkInsertInstances creates count instances (at least minCount, or none)
// named from namePattern and perInstanceProperties.
func (e *Emulator) bulkInsertInstances(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	var req compute.BulkInsertInstanceResource
	if err := readJSON(c.r, &req); err != nil {
		return nil, err
	}
	if req.Count < 1 || req.Count > 1000 {
		return nil, errInvalidField("resource.count", req.Count, "Must be between 1 and 1000.")
	}
	minCount := req.MinCount
	if minCount == 0 {
		minCount = req.Count
	}
	if minCount < 0 || minCount > req.Count {
		return nil, errInvalidField("resource.minCount", minCount, "Must be between 1 and count.")
	}
	if int64(len(req.PerInstanceProperties)) > req.Count {
		return nil, errInvalidField("resource.perInstanceProperties", len(req.PerInstanceProperties), "Must not name more instances than count.")
	}
	var props *compute.Instance
	switch {
	case req.SourceInstanceTemplate != "":
		tmpl, err := e.templateRef(c.p, req.SourceInstanceTemplate, "resource.sourceInstanceTemplate")
		if err != nil {
			return nil, err
		}
		props = instanceFromProperties(tmpl.Properties, c.zone)
		if req.InstanceProperties != nil {
			overlay(props, instanceFromProperties(req.InstanceProperties, c.zone))
		}
	case req.InstanceProperties != nil:
		props = instanceFromProperties(req.InstanceProperties, c.zone)
	default:
		return nil, errInvalidField("resource.instanceProperties", "", "Either instanceProperties or sourceInstanceTemplate is required.")
	}
	z := c.p.zones[c.zone]
	names := make([]string, 0, req.Count)
	for name := range req.PerInstanceProperties {
		names = append(names, name)
	}
	slices.Sort(names)
	if int64(len(names)) < req.Count {
		existing := slices.Clone(names)
		for n := range z.instances {
			existing = append(existing, n)
		}
		gen, err := patternNames(req.NamePattern, int(req.Count)-len(names), existing)
		if err != nil {
			return nil, err
		}
		names = append(names, gen...)
	}
	ins := make([]*instance, 0, len(names))
	for _, name := range names {
		if _, ok := z.instances[name]; ok {
			return nil, errAlreadyExists(fmt.Sprintf("projects/%s/zones/%s/instances/%s", c.p.name, c.zone, name))
		}
		req := *props
		b, _ := json.Marshal(props)
		json.Unmarshal(b, &req)
		req.Name = name
		in, err := e.buildInstance(c.p, c.zone, &req, "resource.instanceProperties")
		if err != nil {
			return nil, err
		}
		ins = append(ins, in)
	}
	op := e.newOp(c, zoneScope, "bulkInsert", zoneURL(c.p.name, c.zone)+"/instances/"+names[0], 0)
	n, oerr := e.admit(c.p, c.zone, ins, int(minCount))
	status := compute.BulkInsertOperationStatus{TargetVmCount: req.Count, CreatedVmCount: int64(n), FailedToCreateVmCount: req.Count - int64(n), Status: "DONE"}
	op.api.InstancesBulkInsertOperationMetadata = &compute.InstancesBulkInsertOperationMetadata{
		PerLocationStatus: map[string]compute.BulkInsertOperationStatus{"zones/" + c.zone: status},
	}
	if n == 0 {
		e.runOp(op, func() *opError { return oerr })
		return op.api, nil
	}
	created := ins[:n]
	e.runOp(op, func() *opError {
		for _, in := range created {
			e.goBackground(func() { e.boot(in) })
		}
		for _, in := range created {
			e.mu.Lock()
			b := in.booting
			e.mu.Unlock()
			if b != nil {
				select {
				case <-b:
				case <-e.done:
				}
			}
		}
		return nil
	})
	return op.api, nil
}

// patternNames makes n names from a bulkInsert namePattern: the run of '#'
// becomes a zero-padded sequence number. As GCE documents, numbering starts
// after the highest number of an existing name that matches the pattern
// (inst-0050 makes the next inst-0051), so gaps are not filled.
func patternNames(pattern string, n int, existing []string) ([]string, error) {
	i := strings.IndexByte(pattern, '#')
	if i < 0 {
		return nil, errInvalidField("resource.namePattern", pattern, "Must contain a sequence of '#' characters, e.g. 'inst-####'.")
	}
	j := i
	for j < len(pattern) && pattern[j] == '#' {
		j++
	}
	if strings.IndexByte(pattern[j:], '#') >= 0 {
		return nil, errInvalidField("resource.namePattern", pattern, "Must contain only one sequence of '#' characters.")
	}
	width := j - i
	if width > 18 {
		return nil, errInvalidField("resource.namePattern", pattern, "The '#' placeholder can have at most 18 characters.")
	}
	prefix, suffix := pattern[:i], pattern[j:]
	var highest uint64
	for _, name := range existing {
		num, okp := strings.CutPrefix(name, prefix)
		num, oks := strings.CutSuffix(num, suffix)
		if !okp || !oks || len(num) != width {
			continue
		}
		if k, err := strconv.ParseUint(num, 10, 64); err == nil && k > highest {
			highest = k
		}
	}
	var limit uint64 = 1
	for range width {
		limit *= 10
	}
	if highest+uint64(n) >= limit {
		return nil, errInvalidField("resource.namePattern", pattern, fmt.Sprintf("Has too few '#' characters for %d more instances after %s%0*d%s.", n, prefix, width, highest, suffix))
	}
	names := make([]string, 0, n)
	for k := highest + 1; len(names) < n; k++ {
		name := fmt.Sprintf("%s%0*d%s", prefix, width, k, suffix)
		if err := validName("resource.namePattern", name); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

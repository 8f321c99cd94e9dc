package emulator

import (
	"fmt"
	"strconv"
	"strings"

	compute "google.golang.org/api/compute/v1"
)

// Locations, the machine type catalogue, images, instance templates and
// firewalls: the resources that need no background work.

func (e *Emulator) zoneResource(p *project, name string) *compute.Zone {
	region := zoneRegion(name)
	return &compute.Zone{
		Kind:                  "compute#zone",
		Id:                    zoneID(name),
		CreationTimestamp:     "2014-05-30T18:35:16.514-07:00",
		Name:                  name,
		Description:           name,
		Status:                "UP",
		Region:                regionURL(p.name, region),
		SelfLink:              zoneURL(p.name, name),
		AvailableCpuPlatforms: []string{"Intel Cascade Lake", "Intel Ice Lake", "Intel Sapphire Rapids", "AMD Milan"},
		SupportsPzs:           false,
	}
}

// zoneID gives each zone a stable id, as GCE's zones have.
func zoneID(name string) uint64 {
	var h uint64 = 2000
	for _, c := range name {
		h = h*31 + uint64(c)
	}
	return h % 10000
}

func (e *Emulator) listZones(c *call) (any, error) {
	lp, err := parseListParams(c.r)
	if err != nil {
		return nil, err
	}
	var all []*compute.Zone
	for _, rz := range regionZones {
		for _, z := range rz.zones {
			all = append(all, e.zoneResource(c.p, z))
		}
	}
	items, next := page(lp, all, func(z *compute.Zone) string { return z.Name })
	return &compute.ZoneList{Kind: "compute#zoneList", Id: "projects/" + c.p.name + "/zones", Items: items, NextPageToken: next, SelfLink: projectURL(c.p.name) + "/zones"}, nil
}

func (e *Emulator) getZone(c *call) (any, error) {
	return e.zoneResource(c.p, c.zone), nil
}

func (e *Emulator) regionResource(p *project, name string) *compute.Region {
	r := p.regions[name]
	var zones []string
	for _, rz := range regionZones {
		if rz.region == name {
			for _, z := range rz.zones {
				zones = append(zones, zoneURL(p.name, z))
			}
		}
	}
	var quotas []*compute.Quota
	for _, metric := range []string{"CPUS", "DISKS_TOTAL_GB", "INSTANCES", "IN_USE_ADDRESSES"} {
		q := &compute.Quota{Metric: metric, Limit: r.quotas[metric], Usage: r.usage[metric]}
		q.ForceSendFields = []string{"Usage", "Limit"}
		quotas = append(quotas, q)
	}
	return &compute.Region{
		Kind:              "compute#region",
		Id:                zoneID(name) + 1000,
		CreationTimestamp: "2014-05-30T18:35:16.514-07:00",
		Name:              name,
		Description:       name,
		Status:            "UP",
		Zones:             zones,
		Quotas:            quotas,
		SelfLink:          regionURL(p.name, name),
	}
}

func (e *Emulator) listRegions(c *call) (any, error) {
	lp, err := parseListParams(c.r)
	if err != nil {
		return nil, err
	}
	var all []*compute.Region
	for _, rz := range regionZones {
		all = append(all, e.regionResource(c.p, rz.region))
	}
	items, next := page(lp, all, func(r *compute.Region) string { return r.Name })
	return &compute.RegionList{Kind: "compute#regionList", Id: "projects/" + c.p.name + "/regions", Items: items, NextPageToken: next, SelfLink: projectURL(c.p.name) + "/regions"}, nil
}

func (e *Emulator) getRegion(c *call) (any, error) {
	return e.regionResource(c.p, c.region), nil
}

func machineTypeResource(p, zone string, mt machineType) *compute.MachineType {
	return &compute.MachineType{
		Kind:                         "compute#machineType",
		Id:                           zoneID(mt.name) + 100000,
		CreationTimestamp:            "2015-01-16T09:25:43.314-08:00",
		Name:                         mt.name,
		Description:                  fmt.Sprintf("%d vCPUs, %g GB RAM", mt.cpus, float64(mt.memoryMb)/1024),
		GuestCpus:                    mt.cpus,
		MemoryMb:                     mt.memoryMb,
		ImageSpaceGb:                 0,
		MaximumPersistentDisks:       128,
		MaximumPersistentDisksSizeGb: 263168,
		Zone:                         zone,
		IsSharedCpu:                  mt.shared,
		Architecture:                 "X86_64",
		SelfLink:                     zonalURL(p, zone, "machineTypes", mt.name),
	}
}

func (e *Emulator) listMachineTypes(c *call) (any, error) {
	lp, err := parseListParams(c.r)
	if err != nil {
		return nil, err
	}
	var all []*compute.MachineType
	for _, mt := range machineTypes {
		all = append(all, machineTypeResource(c.p.name, c.zone, mt))
	}
	items, next := page(lp, all, func(m *compute.MachineType) string { return m.Name })
	return &compute.MachineTypeList{Kind: "compute#machineTypeList", Id: fmt.Sprintf("projects/%s/zones/%s/machineTypes", c.p.name, c.zone), Items: items, NextPageToken: next, SelfLink: zoneURL(c.p.name, c.zone) + "/machineTypes"}, nil
}

// aggregatedListMachineTypes lists the catalogue in every zone of the
// project, paged across zones as instances.aggregatedList is.
func (e *Emulator) aggregatedListMachineTypes(c *call) (any, error) {
	lp, err := parseListParams(c.r)
	if err != nil {
		return nil, err
	}
	var all []*compute.MachineType
	for z := range c.p.zones {
		for _, mt := range machineTypes {
			all = append(all, machineTypeResource(c.p.name, z, mt))
		}
	}
	items, next := page(lp, all, func(m *compute.MachineType) string { return m.Zone + "/" + m.Name })
	scoped := byZone(c.p, items, func(m *compute.MachineType) string { return m.Zone },
		func(l *compute.MachineTypesScopedList, m *compute.MachineType) {
			l.MachineTypes = append(l.MachineTypes, m)
		},
		func(scope, msg string) compute.MachineTypesScopedList {
			return compute.MachineTypesScopedList{Warning: &compute.MachineTypesScopedListWarning{
				Code: "NO_RESULTS_ON_PAGE", Message: msg, Data: []*compute.MachineTypesScopedListWarningData{{Key: "scope", Value: scope}},
			}}
		})
	return &compute.MachineTypeAggregatedList{
		Kind:          "compute#machineTypeAggregatedList",
		Id:            "projects/" + c.p.name + "/aggregated/machineTypes",
		Items:         scoped,
		NextPageToken: next,
		SelfLink:      projectURL(c.p.name) + "/aggregated/machineTypes",
	}, nil
}

func (e *Emulator) getMachineType(c *call) (any, error) {
	mt, ok := findMachineType(c.param("name"))
	if !ok {
		return nil, errNotFound(fmt.Sprintf("projects/%s/zones/%s/machineTypes/%s", c.p.name, c.zone, c.param("name")))
	}
	return machineTypeResource(c.p.name, c.zone, mt), nil
}

func imageResource(im image) *compute.Image {
	return &compute.Image{
		Kind:              "compute#image",
		Id:                zoneID(im.name) + 200000,
		CreationTimestamp: "2026-11-11T10:00:00.000-08:00",
		Name:              im.name,
		Description:       im.description,
		Family:            im.family,
		SourceType:        "RAW",
		Status:            "READY",
		Architecture:      "X86_64",
		DiskSizeGb:        im.diskSizeGb,
		ArchiveSizeBytes:  1 << 30,
		SelfLink:          globalURL(im.project, "images", im.name),
	}
}

func (e *Emulator) listImages(c *call) (any, error) {
	lp, err := parseListParams(c.r)
	if err != nil {
		return nil, err
	}
	var all []*compute.Image
	for _, im := range images {
		if im.project == c.p.name {
			all = append(all, imageResource(im))
		}
	}
	items, next := page(lp, all, func(i *compute.Image) string { return i.Name })
	return &compute.ImageList{Kind: "compute#imageList", Id: "projects/" + c.p.name + "/global/images", Items: items, NextPageToken: next, SelfLink: projectURL(c.p.name) + "/global/images"}, nil
}

func (e *Emulator) getImage(c *call) (any, error) {
	im, ok := findImage(c.p.name, c.param("name"))
	if !ok {
		return nil, errNotFound(fmt.Sprintf("projects/%s/global/images/%s", c.p.name, c.param("name")))
	}
	return imageResource(im), nil
}

func (e *Emulator) getImageFromFamily(c *call) (any, error) {
	im, ok := findImageFamily(c.p.name, c.param("family"))
	if !ok {
		return nil, errNotFound(fmt.Sprintf("projects/%s/global/images/family/%s", c.p.name, c.param("family")))
	}
	return imageResource(im), nil
}

func (e *Emulator) getProject(c *call) (any, error) {
	var quotas []*compute.Quota
	for _, m := range []string{"INSTANCE_TEMPLATES", "FIREWALLS", "NETWORKS"} {
		quotas = append(quotas, &compute.Quota{Metric: m, Limit: 1000, ForceSendFields: []string{"Usage"}})
	}
	quotas[0].Usage = float64(len(c.p.templates))
	quotas[1].Usage = float64(len(c.p.firewalls))
	return &compute.Project{
		Kind:                  "compute#project",
		Id:                    c.p.id,
		Name:                  c.p.name,
		CreationTimestamp:     timestamp(c.p.created),
		DefaultServiceAccount: fmt.Sprintf("%d-compute@developer.gserviceaccount.com", c.p.number),
		XpnProjectStatus:      "UNSPECIFIED_XPN_PROJECT_STATUS",
		DefaultNetworkTier:    "PREMIUM",
		CommonInstanceMetadata: &compute.Metadata{
			Kind:        "compute#metadata",
			Fingerprint: "emulator=",
		},
		Quotas:   quotas,
		SelfLink: projectURL(c.p.name),
	}, nil
}

// Instance templates.

func (e *Emulator) insertTemplate(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	var t compute.InstanceTemplate
	if err := readJSON(c.r, &t); err != nil {
		return nil, err
	}
	if err := validName("resource.name", t.Name); err != nil {
		return nil, err
	}
	if _, ok := c.p.templates[t.Name]; ok {
		return nil, errAlreadyExists("projects/" + c.p.name + "/global/instanceTemplates/" + t.Name)
	}
	if t.Properties == nil {
		return nil, errInvalidField("resource.properties", "", "Required field 'properties' not specified.")
	}
	if t.Properties.MachineType == "" {
		return nil, errInvalidField("resource.properties.machineType", "", "Required field 'machineType' not specified.")
	}
	if _, ok := findMachineType(lastSegment(t.Properties.MachineType)); !ok {
		return nil, errInvalidField("resource.properties.machineType", t.Properties.MachineType, "Machine type with name '"+lastSegment(t.Properties.MachineType)+"' does not exist.")
	}
	// A template must describe an instance that could be created; check
	// it as one, in any zone.
	probe := instanceFromProperties(t.Properties, "us-central1-a")
	probe.Name = "template-probe"
	if _, err := e.buildInstance(c.p, "us-central1-a", probe, "resource.properties"); err != nil {
		return nil, err
	}
	if err := validLabels("resource.properties.labels", t.Properties.Labels); err != nil {
		return nil, err
	}
	t.Kind = "compute#instanceTemplate"
	t.Id = newID()
	t.CreationTimestamp = timestamp(e.opts.Now())
	t.SelfLink = globalURL(c.p.name, "instanceTemplates", t.Name)
	if t.Properties.Metadata != nil {
		t.Properties.Metadata.Kind = "compute#metadata"
		t.Properties.Metadata.Fingerprint = newFingerprint()
	}
	c.p.templates[t.Name] = &t
	op := e.newOp(c, globalScope, "compute.instanceTemplates.insert", t.SelfLink, t.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

// templateRef resolves a reference to one of p's instance templates.
func (e *Emulator) templateRef(p *project, ref, field string) (*compute.InstanceTemplate, error) {
	path := trimAPIPrefix(ref)
	parts := strings.Split(path, "/")
	if len(parts) >= 2 && parts[len(parts)-2] == "instanceTemplates" {
		if len(parts) >= 5 && parts[0] == "projects" && parts[1] != p.name {
			return nil, errInvalidField(field, ref, "Templates of other projects cannot be used.")
		}
		if t, ok := p.templates[parts[len(parts)-1]]; ok {
			return t, nil
		}
	}
	return nil, errInvalidField(field, ref, "The referenced instance template resource cannot be found.")
}

func (e *Emulator) listTemplates(c *call) (any, error) {
	return e.templates(c).serveList(c.r)
}

func (e *Emulator) getTemplate(c *call) (any, error) {
	return e.templates(c).serveGet(c.param("name"))
}

func (e *Emulator) deleteTemplate(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	name := c.param("name")
	t, err := e.templates(c).get(name)
	if err != nil {
		return nil, err
	}
	for _, z := range c.p.zones {
		for _, g := range z.igms {
			if lastSegment(g.api.InstanceTemplate) == name {
				return nil, errInUse("projects/"+c.p.name+"/global/instanceTemplates/"+name,
					fmt.Sprintf("projects/%s/zones/%s/instanceGroupManagers/%s", c.p.name, z.name, g.api.Name))
			}
		}
	}
	delete(c.p.templates, name)
	op := e.newOp(c, globalScope, "compute.instanceTemplates.delete", t.SelfLink, t.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

// Firewalls.

func (e *Emulator) insertFirewall(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	var f compute.Firewall
	if err := readJSON(c.r, &f); err != nil {
		return nil, err
	}
	if err := validName("resource.name", f.Name); err != nil {
		return nil, err
	}
	if _, ok := c.p.firewalls[f.Name]; ok {
		return nil, errAlreadyExists("projects/" + c.p.name + "/global/firewalls/" + f.Name)
	}
	if len(f.Allowed) == 0 && len(f.Denied) == 0 {
		return nil, errInvalidField("resource.allowed", "", "A firewall rule must allow or deny something.")
	}
	for i, a := range f.Allowed {
		switch strings.ToLower(a.IPProtocol) {
		case "tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all":
		default:
			if _, err := strconv.Atoi(a.IPProtocol); err != nil {
				return nil, errInvalidField(fmt.Sprintf("resource.allowed[%d].IPProtocol", i), a.IPProtocol, "Must be a protocol name or number.")
			}
		}
	}
	if f.Network == "" {
		f.Network = "global/networks/default"
	}
	if f.Direction == "" {
		f.Direction = "INGRESS"
	}
	if f.Priority == 0 {
		f.Priority = 1000
	}
	if f.Direction == "INGRESS" && len(f.SourceRanges) == 0 && len(f.SourceTags) == 0 && len(f.SourceServiceAccounts) == 0 {
		f.SourceRanges = []string{"0.0.0.0/0"}
	}
	f.Network = globalURL(c.p.name, "networks", lastSegment(f.Network))
	f.Kind = "compute#firewall"
	f.Id = newID()
	f.CreationTimestamp = timestamp(e.opts.Now())
	f.SelfLink = globalURL(c.p.name, "firewalls", f.Name)
	f.ForceSendFields = append(f.ForceSendFields, "Disabled")
	c.p.firewalls[f.Name] = &f
	op := e.newOp(c, globalScope, "insert", f.SelfLink, f.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

func (e *Emulator) listFirewalls(c *call) (any, error) {
	return e.firewalls(c).serveList(c.r)
}

func (e *Emulator) getFirewall(c *call) (any, error) {
	return e.firewalls(c).serveGet(c.param("name"))
}

func (e *Emulator) deleteFirewall(c *call) (any, error) {
	if op, err := e.replay(c); err != nil || op != nil {
		return opResult(op, err)
	}
	f, err := e.firewalls(c).get(c.param("name"))
	if err != nil {
		return nil, err
	}
	delete(c.p.firewalls, f.Name)
	op := e.newOp(c, globalScope, "delete", f.SelfLink, f.Id)
	e.runOp(op, func() *opError { return nil })
	return op.api, nil
}

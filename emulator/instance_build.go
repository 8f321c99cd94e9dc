package emulator

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"

	compute "google.golang.org/api/compute/v1"
)

var nameRE = regexp.MustCompile(`^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$`)

// The label patterns hold large Unicode classes, which cost megabytes to
// compile: compile them when first used, not in every program that links
// the emulator.
var (
	labelKeyRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$`) })
	labelValueRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$`) })
)
var metadataKeyRE = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,128}$`)

const nameRegexText = "(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)"

func validName(field, name string) error {
	if !nameRE.MatchString(name) {
		return errInvalidField(field, name, "Must be a match of regex '"+nameRegexText+"'")
	}
	return nil
}

func validLabels(field string, labels map[string]string) error {
	if len(labels) > 64 {
		return errInvalidField(field, len(labels), "Resources may have at most 64 labels.")
	}
	for k, v := range labels {
		if !labelKeyRE().MatchString(k) {
			return errInvalidField(field+"."+k, k, "Label keys must start with a lowercase letter and contain only lowercase letters, digits, '_' and '-', at most 63 characters.")
		}
		if !labelValueRE().MatchString(v) {
			return errInvalidField(field+"."+k, v, "Label values may contain only lowercase letters, digits, '_' and '-', at most 63 characters.")
		}
	}
	return nil
}

func validMetadata(field string, md *compute.Metadata) error {
	if md == nil {
		return nil
	}
	seen := map[string]bool{}
	size := 0
	for i, it := range md.Items {
		if it == nil || !metadataKeyRE.MatchString(it.Key) {
			key := ""
			if it != nil {
				key = it.Key
			}
			return errInvalidField(fmt.Sprintf("%s.items[%d].key", field, i), key, "Must be a match of regex '[a-zA-Z0-9-_]{1,128}'")
		}
		if seen[it.Key] {
			return errInvalidField(fmt.Sprintf("%s.items[%d].key", field, i), it.Key, "Duplicate metadata key.")
		}
		seen[it.Key] = true
		if it.Value != nil {
			size += len(*it.Value)
		}
		size += len(it.Key)
	}
	if size > 512*1024 {
		return errInvalidField(field, size, "Metadata is limited to 512 KB in total.")
	}
	return nil
}

// buildInstance validates a requested instance and fills in what GCE fills
// in. field names the request field in error messages ("resource").
// The steps run in GCE's order, so that a request with several faults gets
// the error GCE gives first.
func (e *Emulator) buildInstance(p *project, zone string, req *compute.Instance, field string) (*instance, error) {
	if err := validName(field+".name", req.Name); err != nil {
		return nil, err
	}
	mt, err := resolveMachineType(zone, req.MachineType, field)
	if err != nil {
		return nil, err
	}
	if err := validLabels(field+".labels", req.Labels); err != nil {
		return nil, err
	}
	if err := validMetadata(field+".metadata", req.Metadata); err != nil {
		return nil, err
	}
	in := e.newInstanceResource(p, zone, req, mt)
	if err := buildDisks(p, zone, in, field); err != nil {
		return nil, err
	}
	if err := buildNetworkInterfaces(p, zone, in, field); err != nil {
		return nil, err
	}
	if err := buildScheduling(in, field); err != nil {
		return nil, err
	}
	defaultServiceAccounts(p, in)
	return &instance{
		api:     in,
		project: p.name,
		zone:    zone,
		region:  zoneRegion(zone),
		cpus:    mt.cpus,
		metaGen: make(chan struct{}),
		gone:    make(chan struct{}),
	}, nil
}

// resolveMachineType finds the machine type a request names by
// zones/ZONE/machineTypes/TYPE (a full URL or a partial one), which must be
// in the instance's own zone.
func resolveMachineType(zone, mtRef, field string) (machineType, error) {
	if mtRef == "" {
		return machineType{}, errInvalidField(field+".machineType", "", "Required field 'machineType' not specified.")
	}
	mtPath := trimAPIPrefix(mtRef)
	parts := strings.Split(mtPath, "/")
	if len(parts) >= 4 && parts[len(parts)-2] == "machineTypes" && parts[len(parts)-4] == "zones" {
		if parts[len(parts)-3] != zone {
			return machineType{}, errInvalidField(field+".machineType", mtRef, "Cross-zone references are not allowed: the machine type must be in zone '"+zone+"'.")
		}
	} else {
		return machineType{}, errInvalidField(field+".machineType", mtRef, "The URL is malformed: use zones/ZONE/machineTypes/TYPE.")
	}
	mt, ok := findMachineType(parts[len(parts)-1])
	if !ok {
		return machineType{}, errInvalidField(field+".machineType", mtRef, fmt.Sprintf("Machine type with name '%s' does not exist in zone '%s'.", parts[len(parts)-1], zone))
	}
	return mt, nil
}

// newInstanceResource copies the request and sets the output-only fields
// GCE sets on every new instance.
func (e *Emulator) newInstanceResource(p *project, zone string, req *compute.Instance, mt machineType) *compute.Instance {
	in := &compute.Instance{}
	// Start from a copy of the request so that every field the client set
	// and we do not interpret is kept, as GCE keeps it.
	b, _ := json.Marshal(req)
	json.Unmarshal(b, in)

	now := e.opts.Now()
	in.Kind = "compute#instance"
	in.Id = newID()
	in.CreationTimestamp = timestamp(now)
	in.Zone = zoneURL(p.name, zone)
	in.SelfLink = zonalURL(p.name, zone, "instances", in.Name)
	in.MachineType = zonalURL(p.name, zone, "machineTypes", mt.name)
	in.Status = "PROVISIONING"
	in.CpuPlatform = "Unknown CPU Platform"
	in.Fingerprint = newFingerprint()
	in.LabelFingerprint = newFingerprint()
	in.StartRestricted = false
	if in.Metadata == nil {
		in.Metadata = &compute.Metadata{}
	}
	in.Metadata.Kind = "compute#metadata"
	in.Metadata.Fingerprint = newFingerprint()
	if in.Tags == nil {
		in.Tags = &compute.Tags{}
	}
	in.Tags.Fingerprint = newFingerprint()
	return in
}

// buildDisks checks the attached disks (exactly one boot disk from a known
// image, each created by initializeParams) and turns each into the attached
// disk GCE reports.
func buildDisks(p *project, zone string, in *compute.Instance, field string) error {
	if len(in.Disks) == 0 {
		return errInvalidField(field+".disks", "", "At least one disk, the boot disk, is required.")
	}
	boots := 0
	for i, d := range in.Disks {
		f := fmt.Sprintf("%s.disks[%d]", field, i)
		if d.Source != "" {
			return errInvalidField(f+".source", d.Source, "The emulator has no disks resource: create the disk with initializeParams.")
		}
		if d.InitializeParams == nil {
			return errInvalidField(f+".initializeParams", "", "Required field 'initializeParams' not specified.")
		}
		ip := d.InitializeParams
		if i == 0 {
			d.Boot = true
		}
		if d.Boot {
			boots++
			img, ok := resolveImage(p.name, ip.SourceImage)
			if !ok {
				return errInvalidField(f+".initializeParams.sourceImage", ip.SourceImage, "The referenced image resource cannot be found.")
			}
			ip.SourceImage = globalURL(img.project, "images", img.name)
			if ip.DiskSizeGb == 0 {
				ip.DiskSizeGb = img.diskSizeGb
			}
			if ip.DiskSizeGb < img.diskSizeGb {
				return errInvalidField(f+".initializeParams.diskSizeGb", ip.DiskSizeGb, fmt.Sprintf("Requested disk size cannot be smaller than the image size (%d GB).", img.diskSizeGb))
			}
			d.Licenses = nil
		} else if ip.DiskSizeGb == 0 {
			ip.DiskSizeGb = 10
		}
		diskName := ip.DiskName
		if diskName == "" {
			diskName = in.Name
			if i > 0 {
				diskName = fmt.Sprintf("%s-%d", in.Name, i)
			}
		}
		diskType := lastSegment(ip.DiskType)
		if diskType == "" {
			diskType = "pd-standard"
		}
		d.Kind = "compute#attachedDisk"
		d.Type = "PERSISTENT"
		if d.Mode == "" {
			d.Mode = "READ_WRITE"
		}
		if d.DeviceName == "" {
			d.DeviceName = fmt.Sprintf("persistent-disk-%d", i)
		}
		d.Index = int64(i)
		d.Interface = "SCSI"
		d.DiskSizeGb = ip.DiskSizeGb
		d.Architecture = "X86_64"
		d.Source = zonalURL(p.name, zone, "disks", diskName)
		ip.DiskType = zonalURL(p.name, zone, "diskTypes", diskType)
		// GCE does not echo initializeParams back on a created instance.
		d.InitializeParams = nil
	}
	if boots != 1 {
		return errInvalidField(field+".disks", boots, "Exactly one boot disk is required.")
	}
	return nil
}

// buildNetworkInterfaces requires at least one network interface and fills
// in each one's network, subnetwork and access configs as GCE does.
func buildNetworkInterfaces(p *project, zone string, in *compute.Instance, field string) error {
	if len(in.NetworkInterfaces) == 0 {
		return errInvalidField(field+".networkInterfaces", "", "At least one network interface is required.")
	}
	for i, ni := range in.NetworkInterfaces {
		ni.Kind = "compute#networkInterface"
		ni.Name = fmt.Sprintf("nic%d", i)
		if ni.Network == "" {
			ni.Network = "global/networks/default"
		}
		ni.Network = globalURL(p.name, "networks", lastSegment(ni.Network))
		if ni.Subnetwork == "" {
			ni.Subnetwork = regionURL(p.name, zoneRegion(zone)) + "/subnetworks/" + lastSegment(ni.Network)
		} else {
			ni.Subnetwork = regionURL(p.name, zoneRegion(zone)) + "/subnetworks/" + lastSegment(ni.Subnetwork)
		}
		ni.StackType = "IPV4_ONLY"
		ni.Fingerprint = newFingerprint()
		for _, ac := range ni.AccessConfigs {
			ac.Kind = "compute#accessConfig"
			if ac.Type == "" {
				ac.Type = "ONE_TO_ONE_NAT"
			}
			if ac.Name == "" {
				ac.Name = "External NAT"
			}
			if ac.NetworkTier == "" {
				ac.NetworkTier = "PREMIUM"
			}
		}
	}
	return nil
}

// buildScheduling checks the scheduling options (provisioning model,
// termination action, maxRunDuration) and fills in each model's defaults.
func buildScheduling(in *compute.Instance, field string) error {
	s := in.Scheduling
	if s == nil {
		s = &compute.Scheduling{}
		in.Scheduling = s
	}
	if s.ProvisioningModel == "" {
		s.ProvisioningModel = "STANDARD"
		if s.Preemptible {
			s.ProvisioningModel = "SPOT"
		}
	}
	switch s.ProvisioningModel {
	case "STANDARD":
		if s.OnHostMaintenance == "" {
			s.OnHostMaintenance = "MIGRATE"
		}
		if s.AutomaticRestart == nil {
			t := true
			s.AutomaticRestart = &t
		}
	case "SPOT":
		if s.AutomaticRestart != nil && *s.AutomaticRestart {
			return errInvalidField(field+".scheduling.automaticRestart", true, "Spot VMs do not support automatic restart.")
		}
		f := false
		s.AutomaticRestart = &f
		s.OnHostMaintenance = "TERMINATE"
		if s.InstanceTerminationAction == "" {
			s.InstanceTerminationAction = "STOP"
		}
	default:
		return errInvalidField(field+".scheduling.provisioningModel", s.ProvisioningModel, "Must be STANDARD or SPOT.")
	}
	switch s.InstanceTerminationAction {
	case "", "STOP", "DELETE":
	default:
		return errInvalidField(field+".scheduling.instanceTerminationAction", s.InstanceTerminationAction, "Must be STOP or DELETE.")
	}
	if s.MaxRunDuration != nil {
		if s.InstanceTerminationAction == "" {
			return errInvalidField(field+".scheduling.instanceTerminationAction", "", "instanceTerminationAction must be set when maxRunDuration is set.")
		}
		if s.MaxRunDuration.Seconds < 30 || s.MaxRunDuration.Seconds > 120*24*3600 {
			return errInvalidField(field+".scheduling.maxRunDuration.seconds", s.MaxRunDuration.Seconds, "Must be between 30 seconds and 120 days.")
		}
		if s.MaxRunDuration.Nanos < 0 || s.MaxRunDuration.Nanos > 999_999_999 {
			return errInvalidField(field+".scheduling.maxRunDuration.nanos", s.MaxRunDuration.Nanos, "Must be between 0 and 999,999,999.")
		}
	}
	return nil
}

// defaultServiceAccounts names the project's default compute service
// account where the request says "default" or leaves the email empty.
func defaultServiceAccounts(p *project, in *compute.Instance) {
	for _, sa := range in.ServiceAccounts {
		if sa.Email == "default" || sa.Email == "" {
			sa.Email = fmt.Sprintf("%d-compute@developer.gserviceaccount.com", p.number)
		}
	}
}

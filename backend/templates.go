package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"cloud.google.com/go/compute/apiv1/computepb"

	gceapi "github.com/gcefleet/gcefleet/gce"
)

// Labels the backend puts on what it makes; it deletes nothing without
// them.
const (
	TemplateLabel = "gcefleet-template" // the template's base_name
	RevisionLabel = "gcefleet-revision" // the content hash
)

// Revision is the name of t's current revision: its base_name and a hash
// of everything that goes into the GCE template. GCE templates are
// immutable, so a changed template is a new revision, and the old one is
// drained.
func (t Template) Revision() string {
	c := t
	c.Line = 0
	c.MetadataFromFiles = nil
	// What files say is part of the content; where they are is not.
	md := map[string]string{}
	for k, v := range t.Metadata {
		md[k] = v
	}
	for k, path := range t.MetadataFromFiles {
		b, _ := os.ReadFile(path)
		md[k] = string(b)
	}
	c.Metadata = md
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return t.BaseName + "-" + hex.EncodeToString(sum[:4])
}

func (t Template) hash() string {
	r := t.Revision()
	return r[len(r)-8:]
}

// resource returns the GCE instance template of t's revision.
func (t Template) resource() (*computepb.InstanceTemplate, error) {
	labels := map[string]string{TemplateLabel: t.BaseName, RevisionLabel: t.hash()}
	for k, v := range t.Labels {
		labels[k] = v
	}
	var items []*computepb.Items
	keys := make([]string, 0, len(t.Metadata)+len(t.MetadataFromFiles))
	values := map[string]string{}
	for k, v := range t.Metadata {
		keys, values[k] = append(keys, k), v
	}
	for k, path := range t.MetadataFromFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("template %s: metadata %s: %w", t.BaseName, k, err)
		}
		keys, values[k] = append(keys, k), string(b)
	}
	image := t.Image
	if t.ContainerImage != "" {
		image = "projects/cos-cloud/global/images/family/cos-stable"
		decl := fmt.Sprintf("spec:\n  containers:\n  - name: %s\n    image: %s\n  restartPolicy: Always\n", t.BaseName, t.ContainerImage)
		keys, values["gce-container-declaration"] = append(keys, "gce-container-declaration"), decl
	}
	sort.Strings(keys)
	for _, k := range keys {
		items = append(items, &computepb.Items{Key: new(k), Value: new(values[k])})
	}
	disk := &computepb.AttachedDiskInitializeParams{SourceImage: new(image)}
	if t.Disk.Type != "" {
		disk.DiskType = new(t.Disk.Type)
	}
	if t.Disk.SizeGB > 0 {
		disk.DiskSizeGb = new(t.Disk.SizeGB)
	}
	nic := &computepb.NetworkInterface{}
	if t.Network != "" {
		nic.Network = new(t.Network)
	}
	if t.Subnetwork != "" {
		nic.Subnetwork = new(t.Subnetwork)
	}
	if t.ExternalIP {
		nic.AccessConfigs = []*computepb.AccessConfig{{Name: new("External NAT"), Type: new("ONE_TO_ONE_NAT")}}
	}
	props := &computepb.InstanceProperties{
		MachineType:       new(t.MachineType),
		Labels:            labels,
		Metadata:          &computepb.Metadata{Items: items},
		Disks:             []*computepb.AttachedDisk{{Boot: new(true), AutoDelete: new(true), InitializeParams: disk}},
		NetworkInterfaces: []*computepb.NetworkInterface{nic},
	}
	if len(t.Tags) > 0 {
		props.Tags = &computepb.Tags{Items: t.Tags}
	}
	for _, sa := range t.ServiceAccounts {
		props.ServiceAccounts = append(props.ServiceAccounts, &computepb.ServiceAccount{Email: new(sa.Email), Scopes: sa.Scopes})
	}
	if t.MinCPUPlatform != "" {
		props.MinCpuPlatform = new(t.MinCPUPlatform)
	}
	if t.Spot {
		props.Scheduling = &computepb.Scheduling{ProvisioningModel: new("SPOT"), InstanceTerminationAction: new("DELETE")}
	}
	return &computepb.InstanceTemplate{
		Name:        new(t.Revision()),
		Description: new("gcefleet backend template " + t.BaseName),
		Properties:  props,
	}, nil
}

// Jobs are the backend's reconcile steps, each idempotent: run again, it
// makes no change once GCE matches the configuration.
type Jobs struct {
	Compute *gceapi.Client
	Config  Config
	Log     *slog.Logger
}

// CreateInstanceTemplates makes the GCE template of each configured
// template's current revision, where it does not exist yet.
func (j *Jobs) CreateInstanceTemplates(ctx context.Context) error {
	var errs []error
	for _, t := range j.Config.Templates {
		res, err := t.resource()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		req := &computepb.InsertInstanceTemplateRequest{Project: t.Project, InstanceTemplateResource: res, RequestId: new(gceapi.RequestID())}
		err = gceapi.Retry(ctx, func() error {
			op, err := j.Compute.Templates.Insert(ctx, req)
			if err != nil {
				return err
			}
			return j.Compute.Wait(ctx, t.Project, op)
		})
		switch {
		case err == nil:
			j.Log.Info("created instance template", "template", res.GetName(), "project", t.Project)
		case gceapi.Classify(err) == gceapi.Exists:
		default:
			errs = append(errs, fmt.Errorf("instance template %s: %w", res.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// CreateInstanceGroupManagers makes, for each configured manager, the
// managed instance group of its template's current revision in its zone,
// once that revision's template exists; the group starts at the
// manager's minimum size, and resize-instance-groups takes it from there.
func (j *Jobs) CreateInstanceGroupManagers(ctx context.Context) error {
	var errs []error
	for _, g := range j.groups() {
		m, t, rev := g.m, g.t, g.rev
		tmpl, err := j.Compute.Templates.Get(ctx, &computepb.GetInstanceTemplateRequest{Project: t.Project, InstanceTemplate: rev})
		if err != nil {
			if gceapi.Classify(err) != gceapi.NotFound {
				errs = append(errs, fmt.Errorf("instance template %s: %w", rev, err))
			}
			continue // create-instance-templates has not made it yet
		}
		req := &computepb.InsertInstanceGroupManagerRequest{Project: t.Project, Zone: m.Zone, RequestId: new(gceapi.RequestID()),
			InstanceGroupManagerResource: &computepb.InstanceGroupManager{
				Name:             new(rev),
				BaseInstanceName: new(rev),
				InstanceTemplate: tmpl.SelfLink,
				TargetSize:       new(int32(m.MinimumSize)),
				Description:      new("gcefleet backend manager of " + t.BaseName),
			}}
		err = gceapi.Retry(ctx, func() error {
			op, err := j.Compute.Groups.Insert(ctx, req)
			if err != nil {
				return err
			}
			return j.Compute.Wait(ctx, t.Project, op)
		})
		switch {
		case err == nil:
			j.Log.Info("created instance group manager", "group", rev, "zone", m.Zone, "size", m.MinimumSize)
		case gceapi.Classify(err) == gceapi.Exists:
		default:
			errs = append(errs, fmt.Errorf("instance group manager %s in %s: %w", rev, m.Zone, err))
		}
	}
	return errors.Join(errs...)
}

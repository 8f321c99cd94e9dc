package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"

	"cloud.google.com/go/compute/apiv1/computepb"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// Labels the backend puts on what it makes, beside DeploymentLabel; it
// deletes nothing without them.
const (
	TemplateLabel = "gcefleet-template" // the template's base_name
	RevisionLabel = "gcefleet-revision" // the content hash
)

// Revision is the name of t's current revision in deployment: its
// base_name and a hash of the deployment and of everything that goes into
// the GCE template. GCE templates are immutable, so a changed template is
// a new revision, and the old one is drained. Template names are global
// in a project: two deployments with the same template compute different
// names, so neither adopts the other's. The deployment "" gives the names
// of the backend from before deployments had identities (legacy).
//
// A metadata file that cannot be read is an error naming it: what it
// says is part of the revision, so a revision computed without it would
// be a new one, rolled out in place of the fleet.
func (t Template) Revision(deployment string) (string, error) {
	c := t
	c.Line = 0
	c.MetadataFromFiles = nil
	// What files say is part of the content; where they are is not.
	md := map[string]string{}
	for k, v := range t.Metadata {
		md[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(t.MetadataFromFiles)) {
		b, err := os.ReadFile(t.MetadataFromFiles[k])
		if err != nil {
			return "", fmt.Errorf("template %s: metadata_from_files %s: %w; its revision cannot be computed, so its groups are neither rolled out nor drained: restore the file, or change the configuration", t.BaseName, k, err)
		}
		md[k] = string(b)
	}
	if t.GceBoot {
		if t.pool == nil {
			return "", fmt.Errorf("template %s: gceboot: the provider's claim key and the fleet CA are not loaded yet, so its revision cannot be computed (serve loads them from the provider and its database: is the provider, settings.provider, reachable? gcefleet plan needs --database)", t.BaseName)
		}
		maps.Copy(md, t.pool)
	}
	c.Metadata = md
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("template %s: %w", t.BaseName, err)
	}
	if deployment != "" {
		// A label value holds no NUL: no two deployments hash alike.
		b = append([]byte(deployment+"\x00"), b...)
	}
	sum := sha256.Sum256(b)
	return t.BaseName + "-" + hex.EncodeToString(sum[:4]), nil
}

// revisionHash is the hash a revision's name ends with, the value of its
// RevisionLabel.
func revisionHash(rev string) string { return rev[len(rev)-8:] }

// resource returns the GCE instance template of t's revision in
// deployment, whose provider database is database; its instances get its
// labels. The database is not part of the revision: a template made before
// databases had identities is the same revision.
func (t Template) resource(deployment, database string) (*computepb.InstanceTemplate, error) {
	rev, err := t.Revision(deployment)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	for k, v := range t.Labels {
		labels[k] = v
	}
	// Ours win (the configuration may not set them; see check).
	labels[TemplateLabel], labels[RevisionLabel], labels[DeploymentLabel] = t.BaseName, revisionHash(rev), deployment
	if database != "" {
		labels[DatabaseLabel] = database
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
	if t.GceBoot {
		for k, v := range t.pool {
			keys, values[k] = append(keys, k), v
		}
	}
	image := t.Image
	if t.ContainerImage != "" {
		image = "projects/cos-cloud/global/images/family/cos-stable"
		restart := gcecompute.RestartAlways
		if t.GceBoot {
			// A pool machine serves one lease: gceboot ends it, deleting
			// the instance; one that fails is replaced by its group, not
			// restarted with a new key on the old certificate's name.
			restart = gcecompute.RestartNever
		}
		decl := gcecompute.ContainerDeclaration(t.BaseName, t.ContainerImage, restart)
		keys, values[gcecompute.ContainerDeclarationKey] = append(keys, gcecompute.ContainerDeclarationKey), decl
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
		Name:        new(rev),
		Description: new("gcefleet backend template " + t.BaseName + " in deployment " + deployment),
		Properties:  props,
	}, nil
}

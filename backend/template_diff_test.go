package backend

import (
	"reflect"
	"testing"

	"cloud.google.com/go/compute/apiv1/computepb"
	"google.golang.org/protobuf/proto"
)

// TestTemplateDiff: a template as Compute Engine answers for one the
// backend made (full URLs, output-only fields and the defaults it fills
// in) is the backend's; anything else it carries, or lacks, is named.
func TestTemplateDiff(t *testing.T) {
	tmpl := Template{BaseName: "pool", Project: "my-project", MachineType: "e2-standard-2", Image: "projects/debian-cloud/global/images/family/debian-12",
		Dimensions: map[string]string{"os": "linux"}, Metadata: map[string]string{"startup": "echo hi"}, Tags: []string{"ci"}, ExternalIP: true,
		Disk: Disk{Type: "pd-balanced", SizeGB: 50}, ServiceAccounts: []ServiceAccount{{Email: "ci@my-project.iam.gserviceaccount.com", Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"}}}}
	want, err := tmpl.resource("d-1", "db-1")
	if err != nil {
		t.Fatal(err)
	}
	answer := func() *computepb.InstanceTemplate {
		got := proto.Clone(want).(*computepb.InstanceTemplate)
		p := got.Properties
		p.Metadata.Kind, p.Metadata.Fingerprint = new("compute#metadata"), new("dI4f8CxopaQ=")
		p.Tags.Fingerprint = new("abc")
		d := p.Disks[0]
		d.Kind, d.Type, d.Mode, d.DeviceName, d.Interface, d.Index = new("compute#attachedDisk"), new("PERSISTENT"), new("READ_WRITE"), new("persistent-disk-0"), new("SCSI"), new(int32(0))
		d.InitializeParams.SourceImage = new("https://www.googleapis.com/compute/v1/projects/debian-cloud/global/images/family/debian-12")
		n := p.NetworkInterfaces[0]
		n.Kind, n.Name, n.StackType = new("compute#networkInterface"), new("nic0"), new("IPV4_ONLY")
		n.Network = new("https://www.googleapis.com/compute/v1/projects/my-project/global/networks/default")
		n.AccessConfigs[0].Kind, n.AccessConfigs[0].NetworkTier = new("compute#accessConfig"), new("PREMIUM")
		p.Scheduling = &computepb.Scheduling{OnHostMaintenance: new("MIGRATE"), AutomaticRestart: new(true), Preemptible: new(false), ProvisioningModel: new("STANDARD")}
		p.CanIpForward = new(false)
		return got
	}
	if d := templateDiff(want, answer()); len(d) != 0 {
		t.Errorf("the backend's own template as GCE answers: differs in %v", d)
	}
	for _, tc := range []struct {
		name   string
		change func(*computepb.InstanceProperties)
		want   []string
	}{
		{"machine type and a startup script", func(p *computepb.InstanceProperties) {
			p.MachineType = new("e2-micro")
			p.Metadata.Items = append(p.Metadata.Items, &computepb.Items{Key: new("evil"), Value: new("x")})
		}, []string{"machineType", "metadata.evil"}},
		{"metadata changed and dropped", func(p *computepb.InstanceProperties) {
			p.Metadata.Items = nil
		}, []string{"metadata.startup"}},
		{"a label", func(p *computepb.InstanceProperties) { p.Labels["x"] = "y" }, []string{"labels.x"}},
		{"a service account and scopes", func(p *computepb.InstanceProperties) {
			p.ServiceAccounts[0].Scopes = append(p.ServiceAccounts[0].Scopes, "https://www.googleapis.com/auth/compute")
			p.ServiceAccounts = append(p.ServiceAccounts, &computepb.ServiceAccount{Email: new("owner@evil.example")})
		}, []string{"serviceAccounts"}},
		{"scopes", func(p *computepb.InstanceProperties) { p.ServiceAccounts[0].Scopes = []string{"x"} }, []string{"serviceAccounts.scopes"}},
		{"another image and network", func(p *computepb.InstanceProperties) {
			p.Disks[0].InitializeParams.SourceImage = new("projects/evil/global/images/backdoor")
			p.NetworkInterfaces[0].Network = new("global/networks/exfil")
		}, []string{"disks.initializeParams.sourceImage", "networkInterfaces.network"}},
		{"a second disk", func(p *computepb.InstanceProperties) { p.Disks = append(p.Disks, p.Disks[0]) }, []string{"disks"}},
		{"tags, accelerators, scheduling", func(p *computepb.InstanceProperties) {
			p.Tags.Items = []string{"open-to-the-world"}
			p.GuestAccelerators = []*computepb.AcceleratorConfig{{AcceleratorType: new("nvidia-h100-80gb"), AcceleratorCount: new(int32(8))}}
			p.Scheduling.ProvisioningModel = new("SPOT")
		}, []string{"guestAccelerators", "scheduling", "tags.items"}},
	} {
		got := answer()
		tc.change(got.Properties)
		if d := templateDiff(want, got); !reflect.DeepEqual(d, tc.want) {
			t.Errorf("%s: differs in %v; want %v", tc.name, d, tc.want)
		}
	}
}

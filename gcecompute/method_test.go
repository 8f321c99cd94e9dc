package gcecompute

import "testing"

func TestMethodOf(t *testing.T) {
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/compute/v1/projects/p/zones/us-central1-a/instanceGroupManagers/g/listManagedInstances", "instanceGroupManagers.listManagedInstances"},
		{"POST", "/compute/v1/projects/p/zones/us-central1-a/instanceGroupManagers/g/deleteInstances", "instanceGroupManagers.deleteInstances"},
		{"GET", "/compute/v1/projects/p/zones/us-central1-a/instances/i", "instances.get"},
		{"GET", "/compute/v1/projects/p/zones/us-central1-a/instances", "instances.list"},
		{"POST", "/compute/v1/projects/p/zones/us-central1-a/instances", "instances.insert"},
		{"DELETE", "/compute/v1/projects/p/global/instanceTemplates/t", "instanceTemplates.delete"},
		{"POST", "/compute/v1/projects/p/global/operations/op/wait", "operations.wait"},
		{"GET", "/compute/v1/projects/p/aggregated/instances", "aggregated.instances"},
		{"GET", "/compute/v1/projects/p", "projects.get"},
		{"GET", "/other", "other"},
	} {
		if got := methodOf(c.method, c.path); got != c.want {
			t.Errorf("methodOf(%s %s) = %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

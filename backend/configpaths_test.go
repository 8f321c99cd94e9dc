package backend_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gcefleet/gcefleet/backend"
)

// TestMetadataFilesAreRelativeToTheConfig: metadata_from_files names files
// beside the configuration, wherever serve is started.
func TestMetadataFilesAreRelativeToTheConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "startup.sh"), []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(conf, []byte(`templates:
  - base_name: pool
    project: my-project
    dimensions: {os: linux}
    machine_type: e2-standard-2
    image: projects/debian-cloud/global/images/family/debian-12
    metadata_from_files: {startup-script: startup.sh}
managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 0, maximum_size: 2}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // somewhere else
	cfg, err := backend.LoadConfig(conf)
	if err != nil {
		t.Fatalf("a config read from another directory: %v", err)
	}
	if got, want := cfg.Templates[0].MetadataFromFiles["startup-script"], filepath.Join(dir, "startup.sh"); got != want {
		t.Errorf("metadata_from_files: %q, want %q", got, want)
	}
}

package gcecompute_test

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/gcefleet/gcefleet/gcecompute"
)

// cosSpec is the shape of a container declaration as Container-Optimized
// OS's konlet reads it (a Kubernetes pod spec, the fields it knows).
type cosSpec struct {
	Spec struct {
		Containers []struct {
			Name    string   `yaml:"name"`
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Args    []string `yaml:"args"`
			Env     []struct {
				Name  string `yaml:"name"`
				Value string `yaml:"value"`
			} `yaml:"env"`
			Stdin           bool `yaml:"stdin"`
			TTY             bool `yaml:"tty"`
			SecurityContext struct {
				Privileged bool `yaml:"privileged"`
			} `yaml:"securityContext"`
			VolumeMounts []map[string]any `yaml:"volumeMounts"`
		} `yaml:"containers"`
		RestartPolicy string           `yaml:"restartPolicy"`
		Volumes       []map[string]any `yaml:"volumes"`
	} `yaml:"spec"`
}

// parse reads decl as konlet would, refusing a field it does not know.
func parse(t *testing.T, decl string) cosSpec {
	t.Helper()
	var s cosSpec
	dec := yaml.NewDecoder(bytes.NewReader([]byte(decl)))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("declaration does not parse as a COS spec: %v\n%s", err, decl)
	}
	return s
}

// TestContainerDeclaration: the declaration is the text instances have
// always carried (so no running template or instance changes), and it
// parses into the COS spec as one container with the name, image and
// restart policy asked for, even when they hold YAML's special characters.
func TestContainerDeclaration(t *testing.T) {
	const before = "spec:\n  containers:\n  - name: workers\n    image: gcr.io/p/worker:v1\n  restartPolicy: Always\n"
	if got := gcecompute.ContainerDeclaration("workers", "gcr.io/p/worker:v1", gcecompute.RestartAlways); got != before {
		t.Errorf("declaration:\n%s\nwant:\n%s", got, before)
	}
	for _, tc := range []struct {
		name, image string
		restart     gcecompute.RestartPolicy
	}{
		{"gceboot", "us-docker.pkg.dev/p/r/gceboot@sha256:0123abcd", gcecompute.RestartNever},
		{"a: b", "gcr.io/p/i:v1 # not a comment", gcecompute.RestartOnFailure},
		{"- x", "'quoted' \"twice\"\nrestartPolicy: Always", gcecompute.RestartNever},
		{"", "*alias", gcecompute.RestartAlways},
	} {
		s := parse(t, gcecompute.ContainerDeclaration(tc.name, tc.image, tc.restart))
		if len(s.Spec.Containers) != 1 || s.Spec.Containers[0].Name != tc.name || s.Spec.Containers[0].Image != tc.image || s.Spec.RestartPolicy != string(tc.restart) {
			t.Errorf("ContainerDeclaration(%q, %q, %s) parses as %+v", tc.name, tc.image, tc.restart, s.Spec)
		}
	}
}

// FuzzContainerDeclaration: whatever the name and image, the declaration
// parses back into exactly them.
func FuzzContainerDeclaration(f *testing.F) {
	f.Add("workers", "gcr.io/p/worker:v1")
	f.Add("a: b", "x\n- y: [z]")
	f.Fuzz(func(t *testing.T, name, image string) {
		if !utf8.ValidString(name) || !utf8.ValidString(image) {
			return // a name or image GCE's metadata (UTF-8) cannot hold
		}
		s := parse(t, gcecompute.ContainerDeclaration(name, image, gcecompute.RestartNever))
		if len(s.Spec.Containers) != 1 || s.Spec.Containers[0].Name != name || s.Spec.Containers[0].Image != image || s.Spec.RestartPolicy != "Never" {
			t.Errorf("ContainerDeclaration(%q, %q) parses as %+v", name, image, s.Spec)
		}
	})
}

package gcecompute

import (
	"bytes"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// ContainerDeclarationKey is the instance metadata key whose value, a
// ContainerDeclaration, tells Container-Optimized OS which container to run.
const ContainerDeclarationKey = "gce-container-declaration"

// RestartPolicy is when Container-Optimized OS restarts the container of a
// declaration that exits.
type RestartPolicy string

// The restart policies Container-Optimized OS knows.
const (
	RestartAlways    RestartPolicy = "Always"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartNever     RestartPolicy = "Never"
)

// containerDeclaration is the part of Container-Optimized OS's container
// declaration (a Kubernetes pod spec, as its konlet reads it) that gcefleet
// writes.
type containerDeclaration struct {
	Spec struct {
		Containers    []container   `yaml:"containers"`
		RestartPolicy RestartPolicy `yaml:"restartPolicy"`
	} `yaml:"spec"`
}

type container struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
}

// ContainerDeclaration returns the value of ContainerDeclarationKey that has
// Container-Optimized OS run image as the one container, named name,
// restarted under restart.
func ContainerDeclaration(name, image string, restart RestartPolicy) string {
	var d containerDeclaration
	d.Spec.Containers = []container{{Name: name, Image: image}}
	d.Spec.RestartPolicy = restart
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	// The layout COS's documentation shows, which gcefleet always wrote.
	enc.SetIndent(2)
	enc.CompactSeqIndent()
	if err := enc.Encode(&d); err != nil {
		// A struct of strings always encodes.
		panic(fmt.Sprintf("gcecompute: encoding a container declaration: %v", err))
	}
	if err := enc.Close(); err != nil {
		panic(fmt.Sprintf("gcecompute: encoding a container declaration: %v", err))
	}
	return b.String()
}

package emulator

import (
	"fmt"
	"strings"
)

// The catalogue of locations, machine types and public images that every
// emulated project sees. It is fixed data: GCE's own catalogue changes rarely
// and tests want the same answers every time.

// regionZones lists the emulated regions and their zones.
var regionZones = []struct {
	region string
	zones  []string
}{
	{"us-central1", []string{"us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"}},
	{"us-east1", []string{"us-east1-b", "us-east1-c", "us-east1-d"}},
	{"us-west1", []string{"us-west1-a", "us-west1-b", "us-west1-c"}},
	{"europe-west1", []string{"europe-west1-b", "europe-west1-c", "europe-west1-d"}},
}

// zoneRegion maps a zone name to its region, or "" when the zone is unknown.
func zoneRegion(zone string) string {
	for _, r := range regionZones {
		for _, z := range r.zones {
			if z == zone {
				return r.region
			}
		}
	}
	return ""
}

func isRegion(name string) bool {
	for _, r := range regionZones {
		if r.region == name {
			return true
		}
	}
	return false
}

// machineType is one entry of the machine type catalogue.
type machineType struct {
	name     string
	cpus     int64
	memoryMb int64
	shared   bool
}

// machineTypes is the catalogue, the same in every zone.
var machineTypes = buildMachineTypes()

func buildMachineTypes() []machineType {
	mts := []machineType{
		{"e2-micro", 2, 1024, true},
		{"e2-small", 2, 2048, true},
		{"e2-medium", 2, 4096, true},
	}
	for _, n := range []int64{2, 4, 8, 16, 32} {
		mts = append(mts,
			machineType{fmt.Sprintf("e2-standard-%d", n), n, n * 4096, false},
			machineType{fmt.Sprintf("e2-highmem-%d", n), n, n * 8192, false},
			machineType{fmt.Sprintf("e2-highcpu-%d", n), n, n * 1024, false})
	}
	for _, n := range []int64{2, 4, 8, 16, 32, 48, 64, 80, 96, 128} {
		mts = append(mts,
			machineType{fmt.Sprintf("n2-standard-%d", n), n, n * 4096, false},
			machineType{fmt.Sprintf("n2-highmem-%d", n), n, n * 8192, false},
			machineType{fmt.Sprintf("n2-highcpu-%d", n), n, n * 1024, false})
	}
	for _, n := range []int64{4, 8, 22, 44, 88, 176} {
		mts = append(mts,
			machineType{fmt.Sprintf("c3-standard-%d", n), n, n * 4096, false},
			machineType{fmt.Sprintf("c3-highmem-%d", n), n, n * 8192, false},
			machineType{fmt.Sprintf("c3-highcpu-%d", n), n, n * 2048, false})
	}
	return mts
}

func findMachineType(name string) (machineType, bool) {
	for _, mt := range machineTypes {
		if mt.name == name {
			return mt, true
		}
	}
	return machineType{}, false
}

// image is one public image. Its family resolves to it.
type image struct {
	project, name, family, description string
	diskSizeGb                         int64
}

var images = []image{
	{"cos-cloud", "cos-stable-117-18613-75-37", "cos-stable", "Google, Container-Optimized OS, 117-18613.75.37 LTS", 10},
	{"cos-cloud", "cos-117-18613-75-37", "cos-117-lts", "Google, Container-Optimized OS, 117-18613.75.37 LTS", 10},
	{"cos-cloud", "cos-beta-121-18867-0-94", "cos-beta", "Google, Container-Optimized OS, 121-18867.0.94 beta", 10},
	{"debian-cloud", "debian-12-bookworm-v20261111", "debian-12", "Debian, Debian GNU/Linux, 12 (bookworm), amd64 built on 20261111", 10},
	{"debian-cloud", "debian-12-bookworm-arm64-v20261111", "debian-12-arm64", "Debian, Debian GNU/Linux, 12 (bookworm), arm64 built on 20261111", 10},
	{"debian-cloud", "debian-13-trixie-v20261111", "debian-13", "Debian, Debian GNU/Linux, 13 (trixie), amd64 built on 20261111", 10},
}

func findImage(project, name string) (image, bool) {
	for _, im := range images {
		if im.project == project && im.name == name {
			return im, true
		}
	}
	return image{}, false
}

func findImageFamily(project, family string) (image, bool) {
	for _, im := range images {
		if im.project == project && im.family == family {
			return im, true
		}
	}
	return image{}, false
}

// resolveImage resolves a sourceImage reference, in any of the forms GCE
// accepts (full URL, projects/P/global/images/NAME, .../images/family/F, or
// global/images/NAME of the caller's project), to an image.
func resolveImage(callerProject, ref string) (image, bool) {
	p := trimAPIPrefix(ref)
	parts := strings.Split(p, "/")
	switch {
	case len(parts) == 5 && parts[0] == "projects" && parts[2] == "global" && parts[3] == "images":
		return findImage(parts[1], parts[4])
	case len(parts) == 6 && parts[0] == "projects" && parts[2] == "global" && parts[3] == "images" && parts[4] == "family":
		return findImageFamily(parts[1], parts[5])
	case len(parts) == 3 && parts[0] == "global" && parts[1] == "images":
		return findImage(callerProject, parts[2])
	case len(parts) == 4 && parts[0] == "global" && parts[1] == "images" && parts[2] == "family":
		return findImageFamily(callerProject, parts[3])
	}
	return image{}, false
}

// Default per-region quotas of a new project. They are deliberately higher
// than a new GCE project's so that benchmarks of large fleets fit; tests of
// quota failures set their own limits through the admin API.
var defaultQuotas = map[string]float64{
	"CPUS":             100000,
	"INSTANCES":        100000,
	"IN_USE_ADDRESSES": 100000,
	"DISKS_TOTAL_GB":   10000000,
}

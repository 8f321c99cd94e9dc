package backend

// This file is the backend's configuration: the YAML an operator writes,
// checked as a whole so that every problem is reported at once with its
// line.

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/gcefleet/gcefleet/internal/confyaml"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

// Config is the backend's configuration file.
type Config struct {
	Templates []Template `yaml:"templates"`
	Managers  []Manager  `yaml:"managers"`
	Settings  Settings   `yaml:"settings"`

	// Warnings are what the file should change but that works still,
	// each as name:line: what to write instead.
	Warnings []string `yaml:"-"`
}

// Template declares an instance template; a change to it makes a new
// revision, since GCE templates are immutable.
type Template struct {
	BaseName          string            `yaml:"base_name"`
	Project           string            `yaml:"project"`
	Dimensions        map[string]string `yaml:"dimensions"`
	MachineType       string            `yaml:"machine_type"`
	Image             string            `yaml:"image"`
	ContainerImage    string            `yaml:"container_image"`
	Disk              Disk              `yaml:"disk"`
	ServiceAccounts   []ServiceAccount  `yaml:"service_accounts"`
	Tags              []string          `yaml:"tags"`
	Metadata          map[string]string `yaml:"metadata"`
	MetadataFromFiles map[string]string `yaml:"metadata_from_files"`
	Labels            map[string]string `yaml:"labels"`
	Network           string            `yaml:"network"`
	Subnetwork        string            `yaml:"subnetwork"`
	ExternalIP        bool              `yaml:"external_ip"`
	MinCPUPlatform    string            `yaml:"min_cpu_platform"`
	Spot              bool              `yaml:"spot"`
	// GceBoot makes the template's instances warm pool machines: their
	// container (container_image, the gceboot image) runs gceboot in pool
	// mode, which enrolls with the backend for a fleet certificate and
	// waits for a driver's claim. The backend sets their metadata
	// (PoolKey) and catalogs them, with dimension gceboot=true, once they
	// serve TLS with their fleet certificate.
	GceBoot bool `yaml:"gceboot" json:",omitempty"`

	Line int `yaml:"-"`

	// pool is the metadata the backend gives a gceboot template's
	// instances (see Jobs.SetPool), part of its revision; fleetCA is the
	// fleet CA certificate its machines' entries carry.
	pool    map[string]string
	fleetCA []byte
}

// Disk is a template's boot disk.
type Disk struct {
	Type   string `yaml:"type"`
	SizeGB int64  `yaml:"size_gb"`
}

// ServiceAccount runs a template's instances.
type ServiceAccount struct {
	Email  string   `yaml:"email"`
	Scopes []string `yaml:"scopes"`
}

// Manager declares a managed instance group of a template in a zone.
type Manager struct {
	TemplateBaseName string `yaml:"template_base_name"`
	Zone             string `yaml:"zone"`
	MinimumSize      int    `yaml:"minimum_size"`
	MaximumSize      int    `yaml:"maximum_size"`

	Line int `yaml:"-"`
}

// Settings tune the backend.
type Settings struct {
	// Provider is the Machine Provider's URL; empty means the provider
	// this process serves.
	Provider string `yaml:"provider"`
	// Interval is how often each job runs when nothing kicks it.
	Interval time.Duration `yaml:"interval"`
	// ComputeRate is the Compute API calls per second per project.
	ComputeRate float64 `yaml:"compute_rate"`
	// Endpoint is the Compute API base URL (compute_endpoint, as the
	// commands' --compute-endpoint); empty means real GCE.
	Endpoint string `yaml:"compute_endpoint"`
	// OldEndpoint is the key endpoint, compute_endpoint's old name: still
	// read, with a warning.
	OldEndpoint string `yaml:"endpoint"`
	// AuditGrace is how long an instance labelled as the backend's that
	// no group of its explains may live before the audit deletes it.
	AuditGrace time.Duration `yaml:"audit_grace"`
	// Deployment names this deployment: the identity that everything the
	// backend makes carries (see Deployment). Empty: a random one, made
	// at the first start. Once stored it cannot change.
	Deployment string `yaml:"deployment"`

	lines map[string]int // the line of each key, for messages
}

var (
	nameRE        = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$`)
	projectRE     = regexp.MustCompile(`^[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
	zoneRE        = regexp.MustCompile(`^[a-z]+-[a-z]+[0-9]+-[a-z]$`)
	machineTypeRE = regexp.MustCompile(`^(e2-(micro|small|medium|(standard|highmem|highcpu)-[0-9]+)|[a-z][0-9][a-z]?-(standard|highmem|highcpu|ultramem|megamem)-[0-9]+(-lssd)?|custom-[0-9]+-[0-9]+)$`)
	labelKeyRE    = regexp.MustCompile(`^[a-z][-_a-z0-9]{0,62}$`)
	labelValRE    = regexp.MustCompile(`^[-_a-z0-9]{0,63}$`)
)

// MaxGroupSize is the most instances a zonal managed instance group holds.
const MaxGroupSize = 1000

// LoadConfig reads and checks the file at path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("backend config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses and checks a configuration; name is used in messages,
// each of which gives name:line and what to change.
func ParseConfig(name string, data []byte) (Config, error) {
	var cfg Config
	err := confyaml.Decode(name, data, &cfg)
	// A value of the wrong type leaves the rest decoded: check it too, so
	// that one mistake does not hide the others.
	var te *confyaml.TypeError
	if err != nil && !errors.As(err, &te) {
		return cfg, err
	}
	var root yaml.Node
	yaml.Unmarshal(data, &root)
	lines := itemLines(&root)
	for i := range cfg.Templates {
		cfg.Templates[i].Line = at(lines["templates"], i)
	}
	for i := range cfg.Managers {
		cfg.Managers[i].Line = at(lines["managers"], i)
	}
	cfg.Settings.lines = keyLines(&root, "settings")
	if old := cfg.Settings.OldEndpoint; old != "" {
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s:%d: settings.endpoint is deprecated: write compute_endpoint: %s", name, cfg.Settings.line("endpoint"), old))
		if cfg.Settings.Endpoint == "" {
			cfg.Settings.Endpoint = old
			cfg.Settings.lines["compute_endpoint"] = cfg.Settings.lines["endpoint"]
		}
	}
	if cfg.Settings.Interval == 0 {
		cfg.Settings.Interval = time.Minute
	}
	if cfg.Settings.ComputeRate == 0 && cfg.Settings.lines["compute_rate"] == 0 { // not written
		cfg.Settings.ComputeRate = 20
	}
	if cfg.Settings.AuditGrace == 0 {
		cfg.Settings.AuditGrace = 15 * time.Minute
	}
	if te == nil {
		te = &confyaml.TypeError{}
	}
	// A value of the wrong type decodes as zero: its key's other
	// complaints (maximum_size: ten is "required") would say it twice.
	skip := func(line int, msg string) bool {
		for _, k := range te.Keys {
			if k.Line == line && k.Name != "" && strings.Contains(msg, k.Name) {
				return true
			}
		}
		return false
	}
	return cfg, byLine(name, err, cfg.check(name, skip))
}

// byLine joins the problems of errs, each "name:line: ...", in the order
// of their lines.
func byLine(name string, errs ...error) error {
	type problem struct {
		line int
		err  error
	}
	var all []problem
	for _, err := range errs {
		if err == nil {
			continue
		}
		list := []error{err}
		if j, ok := errors.Unwrap(err).(interface{ Unwrap() []error }); ok {
			list = j.Unwrap() // a *confyaml.TypeError's
		} else if j, ok := err.(interface{ Unwrap() []error }); ok {
			list = j.Unwrap()
		}
		for _, e := range list {
			n, _, _ := strings.Cut(strings.TrimPrefix(e.Error(), name+":"), ":")
			line, _ := strconv.Atoi(n)
			all = append(all, problem{line, e})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].line < all[j].line })
	out := make([]error, len(all))
	for i, p := range all {
		out[i] = p.err
	}
	return errors.Join(out...)
}

func at(lines []int, i int) int {
	if i < len(lines) && lines[i] > 0 {
		return lines[i]
	}
	return 1
}

// itemLines returns the line of each item of the top-level sequences.
func itemLines(root *yaml.Node) map[string][]int {
	out := map[string][]int{}
	if len(root.Content) == 0 {
		return out
	}
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		seq := doc.Content[i+1]
		if seq.Kind == yaml.AliasNode && seq.Alias != nil {
			seq = seq.Alias // managers: *t has the items where t is written
		}
		for _, item := range seq.Content {
			out[doc.Content[i].Value] = append(out[doc.Content[i].Value], item.Line)
		}
	}
	return out
}

func (cfg *Config) check(name string, skip func(line int, msg string) bool) error {
	var errs []error
	bad := func(line int, format string, args ...any) {
		if msg := fmt.Sprintf(format, args...); !skip(line, msg) {
			errs = append(errs, fmt.Errorf("%s:%d: %s", name, line, msg))
		}
	}
	if len(cfg.Templates) == 0 {
		bad(1, "no templates: declare the instance templates under templates:, each with base_name, project, machine_type, image (or container_image) and dimensions")
	}
	templates := map[string]int{}
	for _, t := range cfg.Templates {
		switch {
		case t.BaseName == "":
			bad(t.Line, "template without base_name: name it, e.g. base_name: linux-8")
		case !nameRE.MatchString(t.BaseName):
			bad(t.Line, "base_name %q: lowercase letters, digits and -, starting with a letter, at most 40", t.BaseName)
		case templates[t.BaseName] != 0:
			bad(t.Line, "base_name %q is declared already at line %d; each template needs its own", t.BaseName, templates[t.BaseName])
		default:
			templates[t.BaseName] = t.Line
		}
		if !projectRE.MatchString(t.Project) {
			bad(t.Line, "template %s: project %q is not a project id (6-30 lowercase letters, digits and -)", t.BaseName, t.Project)
		}
		if !machineTypeRE.MatchString(t.MachineType) {
			bad(t.Line, "template %s: machine_type %q is not a machine type such as e2-standard-8 or n2-highmem-16", t.BaseName, t.MachineType)
		}
		if (t.Image == "") == (t.ContainerImage == "") {
			bad(t.Line, "template %s: give exactly one of image (a boot image) and container_image (run on Container-Optimized OS)", t.BaseName)
		}
		if t.GceBoot {
			if t.ContainerImage == "" {
				bad(t.Line, "template %s: gceboot: true needs container_image, the gceboot image (its instances run gceboot in pool mode), e.g. container_image: gcr.io/PROJECT/gceboot:v1", t.BaseName)
			}
			if len(t.ServiceAccounts) == 0 {
				bad(t.Line, "template %s: gceboot: true needs a service account, which proves the machine's identity and lets it delete itself when its run ends: add service_accounts: [{email: default, scopes: [\"https://www.googleapis.com/auth/cloud-platform\"]}]", t.BaseName)
			}
			for _, k := range []string{instance.PoolKey, instance.EndpointKey} {
				if _, ok := t.Metadata[k]; ok {
					bad(t.Line, "template %s: metadata %s is the backend's own on a gceboot template (it sets it); remove it", t.BaseName, k)
				}
				if _, ok := t.MetadataFromFiles[k]; ok {
					bad(t.Line, "template %s: metadata_from_files %s is the backend's own on a gceboot template (it sets it); remove it", t.BaseName, k)
				}
			}
		}
		if _, ok := t.Dimensions[PoolDimension]; ok {
			bad(t.Line, "template %s: dimension %s is the backend's own (it sets %s=true on the machines of a template with gceboot: true); remove it", t.BaseName, PoolDimension, PoolDimension)
		}
		if t.Disk.SizeGB < 0 || t.Disk.SizeGB > 65536 {
			bad(t.Line, "template %s: disk.size_gb %d: 10 to 65536", t.BaseName, t.Disk.SizeGB)
		}
		if len(t.Dimensions) == 0 {
			bad(t.Line, "template %s: no dimensions: clients lease by them, e.g. dimensions: {os: linux}", t.BaseName)
		}
		checkDimensions(t, func(format string, args ...any) { bad(t.Line, format, args...) })
		// In key order, so that the same file says the same each time.
		for _, k := range slices.Sorted(maps.Keys(t.Labels)) {
			v := t.Labels[k]
			switch {
			case !labelKeyRE.MatchString(k) || !labelValRE.MatchString(v):
				bad(t.Line, "template %s: label %s=%s: keys start with a lowercase letter; keys and values hold lowercase letters, digits, _ and -", t.BaseName, k, v)
			case strings.HasPrefix(k, "gcefleet-"):
				bad(t.Line, "template %s: label %s: keys beginning gcefleet- are the backend's own (it tells its instances by them); use another key", t.BaseName, k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(t.MetadataFromFiles)) {
			path := t.MetadataFromFiles[k]
			// Relative to the file that names it, not to where serve runs.
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(name), path)
				t.MetadataFromFiles[k] = path
			}
			if _, err := os.Stat(path); err != nil {
				bad(t.Line, "template %s: metadata_from_files %s: %v", t.BaseName, k, err)
			}
			if _, dup := t.Metadata[k]; dup {
				bad(t.Line, "template %s: metadata key %s is given twice (metadata and metadata_from_files)", t.BaseName, k)
			}
		}
	}
	type place struct{ template, zone string }
	managers := map[place]int{}
	for _, m := range cfg.Managers {
		if _, ok := templates[m.TemplateBaseName]; !ok {
			known := make([]string, 0, len(templates))
			for k := range templates {
				known = append(known, k)
			}
			sort.Strings(known)
			bad(m.Line, "manager: template_base_name %q names no template (templates: %s)", m.TemplateBaseName, strings.Join(known, ", "))
		}
		if !zoneRE.MatchString(m.Zone) {
			bad(m.Line, "manager of %s: zone %q is not a zone such as us-central1-a", m.TemplateBaseName, m.Zone)
		}
		p := place{m.TemplateBaseName, m.Zone}
		if line, dup := managers[p]; dup {
			bad(m.Line, "a manager of %s in %s is declared already at line %d; one per template and zone", m.TemplateBaseName, m.Zone, line)
		}
		managers[p] = m.Line
		switch {
		case m.MaximumSize < 1:
			bad(m.Line, "manager of %s in %s: maximum_size is required: the most instances the group may have, at least 1, e.g. maximum_size: 10", m.TemplateBaseName, m.Zone)
		case m.MinimumSize < 0:
			bad(m.Line, "manager of %s in %s: minimum_size %d is negative", m.TemplateBaseName, m.Zone, m.MinimumSize)
		case m.MaximumSize > MaxGroupSize:
			bad(m.Line, "manager of %s in %s: maximum_size %d is above %d, the most a zonal group holds; split it across zones", m.TemplateBaseName, m.Zone, m.MaximumSize, MaxGroupSize)
		case m.MinimumSize > m.MaximumSize:
			bad(m.Line, "manager of %s in %s: minimum_size %d is above maximum_size %d", m.TemplateBaseName, m.Zone, m.MinimumSize, m.MaximumSize)
		}
	}
	if d := cfg.Settings.Deployment; d != "" && !deploymentRE.MatchString(d) {
		bad(cfg.Settings.line("deployment"), "settings.deployment %q: lowercase letters, digits and -, starting with a letter and not ending with -, at most 63 (it goes into GCE labels), e.g. deployment: ci-fleet", d)
	}
	if e := cfg.Settings.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(cfg.Settings.line("compute_endpoint"), "settings.compute_endpoint %q is not a URL with a scheme: write http://127.0.0.1:8780 for the emulator, or leave it out for real GCE", e)
		}
	}
	if cfg.Settings.Interval < time.Second {
		bad(cfg.Settings.line("interval"), "settings.interval %v: at least 1s", cfg.Settings.Interval)
	}
	// A rate that is not a positive number would stop every Compute call
	// (or none), and a negative grace would let the audit delete an
	// instance the moment it appears, before its group is known.
	if r := cfg.Settings.ComputeRate; !(r > 0) || math.IsInf(r, 1) {
		bad(cfg.Settings.line("compute_rate"), "settings.compute_rate %v: the Compute API calls per second per project must be above 0, e.g. compute_rate: 20 (the default)", r)
	}
	if cfg.Settings.AuditGrace < 0 {
		bad(cfg.Settings.line("audit_grace"), "settings.audit_grace %v is negative: give how long an unexplained instance may live, such as 15m", cfg.Settings.AuditGrace)
	}
	return errors.Join(errs...)
}

// Dimension rules of the provider's API (checkDims and textProblem in
// provider/validate.go and provider/server.go, which the provider applies
// to every machine the backend catalogs): kept here until they live in a
// package of their own that the backend can import, so that a template
// whose instances the provider would refuse is refused at load instead.
var dimKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

const (
	maxDimKeys  = 64
	maxDimValue = 255
	// ownDims are the dimensions catalog-instances adds to a template's
	// (see group.machine and sizeDims).
	ownDims = 9
)

// checkDimensions reports each of t's dimensions that the provider would
// refuse.
func checkDimensions(t Template, bad func(format string, args ...any)) {
	if n := len(t.Dimensions); n+ownDims > maxDimKeys {
		bad("template %s: %d dimensions, and the backend adds %d of its own: at most %d in all", t.BaseName, n, ownDims, maxDimKeys)
	}
	for _, k := range slices.Sorted(maps.Keys(t.Dimensions)) {
		v := t.Dimensions[k]
		switch {
		case !dimKeyRE.MatchString(k):
			bad("template %s: dimension key %q: keys start with a lowercase letter and hold lowercase letters, digits, _, . and - (at most 63)", t.BaseName, k)
		case v == "" || len(v) > maxDimValue:
			bad("template %s: dimension %s: values are 1 to %d bytes", t.BaseName, k, maxDimValue)
		case !utf8.ValidString(v):
			bad("template %s: dimension %s: values: not valid UTF-8", t.BaseName, k)
		case strings.ContainsFunc(v, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }):
			bad("template %s: dimension %s: values: printable characters only: no control characters (%q)", t.BaseName, k, v)
		}
	}
}

// keyLines returns the line of each key of the top-level mapping named key.
func keyLines(root *yaml.Node, key string) map[string]int {
	out := map[string]int{}
	if len(root.Content) == 0 {
		return out
	}
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value != key {
			continue
		}
		m := doc.Content[i+1]
		for j := 0; j+1 < len(m.Content); j += 2 {
			out[m.Content[j].Value] = m.Content[j].Line
		}
	}
	return out
}

// line is the line of a setting for messages: its own, or the first.
func (s Settings) line(key string) int {
	if n := s.lines[key]; n > 0 {
		return n
	}
	return 1
}

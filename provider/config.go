package provider

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/gcefleet/gcefleet/internal/confyaml"
	"github.com/gcefleet/gcefleet/store"
)

// Roles a token can have.
const (
	// Admin sees and does everything.
	Admin = "admin"
	// Backend catalogs and removes its own machines and reads their events.
	Backend = "backend"
	// Client leases machines and sees and ends its own leases.
	Client = "client"
)

// Config is the provider's configuration file.
type Config struct {
	// Listen is the address the API serves on.
	Listen string `yaml:"listen"`
	// Database is where the store lives: a SQLite path (the default,
	// gcefleet.db), sqlite:PATH, or a postgres:// URL.
	Database string `yaml:"database"`
	// Tokens are who may call the API.
	Tokens []Token `yaml:"tokens"`
	// Backend, if set, runs the GCE Backend in the same process.
	Backend *BackendRef `yaml:"backend"`
	// LeaseRetention is how long an ended lease is kept (and its request
	// id answers with it) before it is deleted, and how long events are
	// kept for backends and watchers to read; 30 days if unset.
	LeaseRetention time.Duration `yaml:"lease_retention"`
	// MaxConnections caps the API's open connections; at the cap a new
	// one closes the longest idle. 0 (the default) derives it from the
	// process's descriptor limit (RLIMIT_NOFILE), less an eighth for the
	// database and the backend.
	MaxConnections int `yaml:"max_connections"`
	// MaxPendingPerClient is how many lease requests one client may have
	// waiting for a machine; store.DefaultMaxPending (1,000) if unset.
	MaxPendingPerClient int `yaml:"max_pending_per_client"`
	// TLS, if set, serves the API over TLS: clients' tokens, and the
	// claims of pool leases, then never cross the network in clear.
	TLS *TLSFiles `yaml:"tls"`

	retentionLine, maxPendingLine, maxConnectionsLine, listenLine, databaseLine int
}

// TLSFiles name the API's certificate (PEM, the chain after it) and its
// private key, relative to the configuration file. serve reads them once,
// at start.
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	line int
	cert tls.Certificate
}

// maxMaxPending bounds max_pending_per_client: each queued request costs
// the store a row or two, and a client that needs more is better served
// by more machines.
const maxMaxPending = 1_000_000

// DefaultLeaseRetention is how long ended leases are kept by default.
const DefaultLeaseRetention = 30 * 24 * time.Hour

// BackendRef points the provider at the GCE Backend it runs.
type BackendRef struct {
	// Config is the backend's configuration file, relative to this one.
	Config string `yaml:"config"`
	// Token names the backend token the backend calls the provider with.
	Token string `yaml:"token"`
	line  int
}

// Secret returns the secret of the token named name.
func (c Config) Secret(name string) string {
	for _, t := range c.Tokens {
		if t.Name == name {
			return t.Token
		}
	}
	return ""
}

// Token grants a name a role. Its secret is given inline (token), in a
// file (token_file) or in an environment variable (token_env).
type Token struct {
	Name      string `yaml:"name"`
	Role      string `yaml:"role"`
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// Pool lets a backend token catalog pool (gceboot) machines, whose
	// leases carry claims: drivers hand such a machine their run, so
	// only a backend trusted with every pool run may. The backend that
	// serve runs itself (backend.token) may without it.
	Pool bool `yaml:"pool"`

	line int
}

// LoadConfig reads and checks the configuration file at path. Every
// problem is reported, each with its line.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("provider config: %w", err)
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return cfg, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return cfg, fmt.Errorf("provider config: %w", err)
	}
	return cfg, inlineSecretsPrivate(path, fi.Mode().Perm(), cfg.Tokens)
}

// inlineSecretsPrivate refuses secrets written in a configuration file
// that users other than its owner can read: anyone who reads a backend's
// or an admin's token acts as it.
func inlineSecretsPrivate(path string, perm os.FileMode, tokens []Token) error {
	if perm&0o077 == 0 {
		return nil
	}
	var errs []error
	for _, t := range tokens {
		if t.TokenFile == "" && t.TokenEnv == "" {
			errs = append(errs, fmt.Errorf("%s:%d: token %q is written in this file, which other users can read (mode %04o): chmod 600 %s, or give the secret in token_file or token_env", path, t.line, t.Name, perm, path))
		}
	}
	return errors.Join(errs...)
}

// ParseConfig parses a configuration file's contents; name is used in
// messages.
func ParseConfig(name string, data []byte) (Config, error) {
	var cfg Config
	if err := confyaml.Decode(name, data, &cfg); err != nil {
		return cfg, err
	}
	// Find each token's line for messages.
	var root yaml.Node
	yaml.Unmarshal(data, &root)
	if len(root.Content) > 0 {
		doc := root.Content[0]
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if doc.Content[i].Value == "backend" && cfg.Backend != nil {
				cfg.Backend.line = doc.Content[i].Line
			}
			if doc.Content[i].Value == "lease_retention" {
				cfg.retentionLine = doc.Content[i].Line
			}
			if doc.Content[i].Value == "max_pending_per_client" {
				cfg.maxPendingLine = doc.Content[i].Line
			}
			if doc.Content[i].Value == "max_connections" {
				cfg.maxConnectionsLine = doc.Content[i].Line
			}
			if doc.Content[i].Value == "tls" && cfg.TLS != nil {
				cfg.TLS.line = doc.Content[i].Line
			}
			if doc.Content[i].Value == "listen" {
				cfg.listenLine = doc.Content[i].Line
			}
			if doc.Content[i].Value == "database" {
				cfg.databaseLine = doc.Content[i].Line
			}
			if doc.Content[i].Value == "tokens" {
				for j, item := range doc.Content[i+1].Content {
					if j < len(cfg.Tokens) {
						cfg.Tokens[j].line = item.Line
					}
				}
			}
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8790"
	}
	// Paths the file names are relative to the file, not to where serve
	// was started.
	dir := filepath.Dir(name)
	if cfg.Database == "" {
		cfg.Database = "gcefleet.db"
	} else if !strings.Contains(cfg.Database, "://") { // a URL is checked below
		p, sqlite := strings.CutPrefix(cfg.Database, "sqlite:")
		if p != ":memory:" && p != "" && !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
			if sqlite {
				p = "sqlite:" + p
			}
			cfg.Database = p
		}
	}
	if cfg.Backend != nil && cfg.Backend.Config != "" && !filepath.IsAbs(cfg.Backend.Config) {
		cfg.Backend.Config = filepath.Join(dir, cfg.Backend.Config)
	}
	var errs []error
	bad := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
	}
	names := map[string]int{}
	secrets := map[string]string{}
	for i := range cfg.Tokens {
		t := &cfg.Tokens[i]
		switch {
		case t.Name == "":
			bad(t.line, "token without a name: give each token a name, such as the user or backend it is for")
		case textProblem(t.Name, maxName) != "":
			bad(t.line, "token name %q: %s", truncate(t.Name), textProblem(t.Name, maxName))
		case names[t.Name] != 0:
			bad(t.line, "token name %q is used already at line %d; names must be unique", t.Name, names[t.Name])
		default:
			names[t.Name] = t.line
		}
		if t.Pool && t.Role != Backend {
			bad(t.line, "token %q: pool: true is for a backend token (one that may catalog pool machines), not role %q", t.Name, t.Role)
		}
		if t.Role != Admin && t.Role != Backend && t.Role != Client {
			bad(t.line, "token %q: role %q is not one of admin, backend, client", t.Name, t.Role)
		}
		n := 0
		for _, s := range []string{t.Token, t.TokenFile, t.TokenEnv} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			bad(t.line, "token %q: give exactly one of token, token_file and token_env", t.Name)
			continue
		}
		switch {
		case t.TokenFile != "":
			if !filepath.IsAbs(t.TokenFile) {
				t.TokenFile = filepath.Join(dir, t.TokenFile)
			}
			b, err := os.ReadFile(t.TokenFile)
			if err != nil {
				bad(t.line, "token %q: %v", t.Name, err)
				continue
			}
			t.Token = strings.TrimSpace(string(b))
		case t.TokenEnv != "":
			t.Token = os.Getenv(t.TokenEnv)
			if t.Token == "" {
				bad(t.line, "token %q: environment variable %s is empty", t.Name, t.TokenEnv)
				continue
			}
		}
		if strings.TrimSpace(t.Token) != t.Token || strings.ContainsFunc(t.Token, unicode.IsControl) {
			// No caller can send such a secret in a header (net/http
			// trims a value's spaces), so it would never authenticate.
			bad(t.line, "token %q: the secret has spaces at its start or end, or control characters; no client can send those in a header: remove them", t.Name)
			continue
		}
		if len(t.Token) < 16 {
			bad(t.line, "token %q: a secret of at least 16 characters is needed (try: openssl rand -hex 16)", t.Name)
			continue
		}
		if other, dup := secrets[t.Token]; dup {
			bad(t.line, "token %q has the same secret as %q", t.Name, other)
		}
		secrets[t.Token] = t.Name
	}
	if p := listenProblem(cfg.Listen); p != "" {
		bad(cfg.listenLine, "listen %q: %s", truncate(cfg.Listen), p)
	}
	if scheme, _, ok := strings.Cut(cfg.Database, "://"); ok && scheme != "postgres" && scheme != "postgresql" {
		bad(cfg.databaseLine, "database: a URL of scheme %q; give a postgres:// (or postgresql://) URL, sqlite:PATH or a SQLite file's path", truncate(scheme))
	}
	if len(cfg.Tokens) == 0 {
		bad(1, "no tokens: the API serves no one without them; add at least an admin token")
	}
	switch {
	case cfg.LeaseRetention == 0:
		cfg.LeaseRetention = DefaultLeaseRetention
	case cfg.LeaseRetention < time.Hour:
		bad(cfg.retentionLine, "lease_retention %v: keep ended leases at least an hour (clients repeat a request by its id within that time), e.g. lease_retention: 720h", cfg.LeaseRetention)
	}
	if cfg.MaxConnections < 0 || cfg.MaxConnections > 0 && cfg.MaxConnections < 16 {
		bad(cfg.maxConnectionsLine, "max_connections %d: give at least 16, or 0 to derive it from the descriptor limit", cfg.MaxConnections)
	}
	switch {
	case cfg.MaxPendingPerClient == 0:
		cfg.MaxPendingPerClient = store.DefaultMaxPending
	case cfg.MaxPendingPerClient < 0 || cfg.MaxPendingPerClient > maxMaxPending:
		bad(cfg.maxPendingLine, "max_pending_per_client %d: give how many lease requests one client may have waiting, 1 to %d (the default is %d)", cfg.MaxPendingPerClient, maxMaxPending, store.DefaultMaxPending)
	}
	if t := cfg.TLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" {
			bad(t.line, "tls: give both cert_file (the certificate, PEM) and key_file (its private key), e.g. tls: {cert_file: provider.pem, key_file: provider.key}")
		} else {
			for _, f := range []*string{&t.CertFile, &t.KeyFile} {
				if !filepath.IsAbs(*f) {
					*f = filepath.Join(dir, *f)
				}
			}
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				bad(t.line, "tls: %v", err)
			}
			t.cert = cert
		}
	}
	if b := cfg.Backend; b != nil {
		if b.Config == "" {
			bad(b.line, "backend: config names no file: give the GCE Backend's configuration, e.g. config: fleet.yaml")
		}
		role := ""
		for _, t := range cfg.Tokens {
			if t.Name == b.Token {
				role = t.Role
			}
		}
		if role != Backend {
			bad(b.line, "backend: token %q is not the name of a token with role backend", b.Token)
		}
	}
	return cfg, errors.Join(errs...)
}

// listenProblem says what is wrong with addr as an address to listen on,
// host:port with a port of 0 to 65535, or "" if nothing.
func listenProblem(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "give host:port, such as 127.0.0.1:8790 or :8790"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || strconv.Itoa(n) != port {
		return "the port is a number from 0 to 65535, such as 127.0.0.1:8790"
	}
	return ""
}

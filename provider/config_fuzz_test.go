package provider_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gcefleet/gcefleet/provider"
)

// configLine is what every line of a configuration error looks like.
var configLine = regexp.MustCompile(`^cfg\.yaml:[1-9][0-9]*: \S`)

// FuzzParseConfig: the provider's configuration file, whatever its bytes,
// parses or is refused with messages that each name the file and a line;
// one that parses says the same when written out and parsed again.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		config,
		"",
		// The README's example, with an inline secret in place of the file and variable.
		"listen: 127.0.0.1:8790\ndatabase: gcefleet.db\ntokens:\n  - {name: ops, role: admin, token: 3f9c0b6e8d1a4c27b5e0aa}\n" +
			"  - {name: gce, role: backend, token: 3f9c0b6e8d1a4c27b5e0bb}\n  - {name: alice, role: client, token: 3f9c0b6e8d1a4c27b5e0}\n" +
			"lease_retention: 720h\nbackend: {config: fleet.yaml, token: gce}\n",
		"tokens:\n  - {name: e, role: admin, token_env: GCEFLEET_TEST_NO_SUCH_VAR}\n",
		"tokens:\n  - {name: f, role: admin, token_file: /nonexistent/gcefleet.token}\n",
		"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nlease_retention: -9223372036854775808ns\n",
		"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nlease_retention: 2562047h47m16.854775807s\n",
		"tokens: &t\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\nbackend: {config: f, token: a}\n",
		"x: &t\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\n",
		"tokens: {name: a}\n",
		"tokens: [[[]]]\n",
		"backend:\n",
		"backend: {}\n",
		"tokens:\n  - name: \"\\0\"\n    role: admin\n    token: \"\\xff\\xfe-x-x-x-x-x-x-x-x\"\n",
		"tokens:\n  - {name: a, role: admin, token: x-x-x-x-x-x-x-x-x-x}\n---\ntokens: []\n",
		"listen: \x00\n",
		"\xef\xbb\xbftokens: []\n",
		"tokens: [" + strings.Repeat("{", 5000) + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer hangWatch(data)()
		cfg, err := provider.ParseConfig("cfg.yaml", data)
		if err != nil {
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if !configLine.MatchString(line) {
					t.Errorf("error line %q is not of the form cfg.yaml:LINE: message (whole error %q)", line, err)
				}
			}
			return
		}
		// Written out with the secrets it read, it parses to the same.
		for i := range cfg.Tokens {
			cfg.Tokens[i].TokenFile, cfg.Tokens[i].TokenEnv = "", ""
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshalling a parsed config: %v", err)
		}
		again, err := provider.ParseConfig("cfg.yaml", out)
		if err != nil {
			t.Fatalf("a parsed config written out does not parse: %v\n%s", err, out)
		}
		if out2, _ := yaml.Marshal(again); !bytes.Equal(out, out2) {
			t.Fatalf("a parsed config written out parses differently:\n%s\nthen\n%s", out, out2)
		}
	})
}

// hangWatch crashes the process if an input is not done with within a few
// seconds: the fuzzer saves a crashing input, but not a slow one.
func hangWatch(data []byte) (stop func()) {
	t := time.AfterFunc(5*time.Second, func() {
		panic(fmt.Sprintf("took more than 5s: %q", data))
	})
	return func() { t.Stop() }
}

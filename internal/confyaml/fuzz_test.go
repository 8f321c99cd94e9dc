package confyaml

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fuzzConf has a field of each kind the configuration files use.
type fuzzConf struct {
	Every   time.Duration     `yaml:"every"`
	Count   int               `yaml:"count"`
	Size    int64             `yaml:"size"`
	Rate    float64           `yaml:"rate"`
	Enabled bool              `yaml:"enabled"`
	Name    string            `yaml:"name"`
	Labels  map[string]string `yaml:"labels"`
	Items   []struct {
		Key  string   `yaml:"key"`
		Tags []string `yaml:"tags"`
	} `yaml:"items"`
	Sub *struct {
		Value string `yaml:"value"`
	} `yaml:"sub"`
}

// cleanError is what every line of a Decode error must look like:
// "f.yaml:LINE: message", the message in our words, not the library's.
var cleanError = regexp.MustCompile(`^f\.yaml:[1-9][0-9]*: \S`)

// FuzzDecode: Decode never panics, and every problem it reports is one line
// that names the file and the line, without the YAML library's prefixes.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"",
		"every: 90s\ncount: 3\nenabled: true\nname: x\n",
		"labels: {a: b}\nitems:\n  - {key: k, tags: [a, b]}\nsub: {value: v}\n",
		"every: soon\n",
		"count: 99999999999999999999999999\n",
		"size: -9223372036854775809\n",
		"rate: .nan\n",
		"rate: 1e400\n",
		"name: x\ncolour: blue\n",
		"name: [x\n",
		"name: \x00\n",
		"name: \"\xff\xfe\"\n",
		"\xff\xfe\x00",
		"\t\tname: x\n",
		"a: &a [*a]\n",
		"items: [" + strings.Repeat("[", 10000) + "\n",
		"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *c]\n",
		"name: x\n---\nname: y\n",
		"--- !!binary AAAA\n",
		"%YAML 1.3\n---\nname: x\n",
		"name: !!int x\n",
		"<<: {name: x}\n",
		"? [a, b]\n: c\n",
		"every: 9999999999999h\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer hangWatch(data)()
		var c fuzzConf
		err := Decode("f.yaml", data, &c)
		if err == nil {
			return
		}
		for line := range strings.SplitSeq(err.Error(), "\n") {
			if !cleanError.MatchString(line) {
				t.Errorf("error line %q is not of the form f.yaml:LINE: message (whole error %q)", line, err)
			}
			if strings.Contains(line, "yaml:") && !strings.HasPrefix(line, "f.yaml:") {
				t.Errorf("error line %q is in the library's words", line)
			}
		}
	})
}

// hangWatch crashes the process if the input it is given is not done with
// within a few seconds: the fuzzer saves a crashing input, but not a slow one.
func hangWatch(data []byte) (stop func()) {
	t := time.AfterFunc(5*time.Second, func() {
		panic(fmt.Sprintf("decoding took more than 5s: %q", data))
	})
	return func() { t.Stop() }
}

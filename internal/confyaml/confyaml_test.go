package confyaml

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

type conf struct {
	Every   time.Duration `yaml:"every"`
	Count   int           `yaml:"count"`
	Enabled bool          `yaml:"enabled"`
	Name    string        `yaml:"name"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want conf
		err  []string // each a line of the error, in order
	}{
		{yaml: "every: 90s\ncount: 3\nenabled: true\nname: x\n", want: conf{Every: 90 * time.Second, Count: 3, Enabled: true, Name: "x"}},
		{yaml: "", want: conf{}},
		{yaml: "every: soon\n", err: []string{`f.yaml:1: "soon" is not a duration: write a number with a unit, such as 90s, 15m or 720h`}},
		{yaml: "name: x\nevery: 5\ncount: many\nenabled: maybe\n", err: []string{
			`f.yaml:2: "5" is not a duration`, `f.yaml:3: "many" is not a number`, `f.yaml:4: "maybe" is not true or false`}},
		{yaml: "name: x\ncolour: blue\n", err: []string{`f.yaml:2: unknown key "colour": check its spelling and its indentation`}},
		{yaml: "name: [x\n", err: []string{"f.yaml:1: did not find expected"}},
		// The library says line 2 for these, or no line at all.
		{yaml: "count: 1\nenabled: true\nname: [x\n", err: []string{"f.yaml:3: did not find expected ',' or ']'"}},
		{yaml: "count: 1\nenabled: true\n\t\tname: x\n", err: []string{"f.yaml:3: a tab indents this line"}},
		{yaml: "\t\tname: x\n", err: []string{"f.yaml:1: a tab indents this line"}},
		{yaml: "count: 1\nname: \"a\x00\"\n", err: []string{"f.yaml:2: control character U+0000 is not allowed"}},
		{yaml: "count: 1\nname: \xff\n", err: []string{"f.yaml:2: the file is not valid UTF-8 text: save it as UTF-8"}},
		{yaml: "name: x\ncount: !!int x\n", err: []string{"f.yaml:2: cannot decode !!str `x` as a !!int"}},
		{yaml: "name: x\n---\nname: y\n", err: []string{"f.yaml:2: a second YAML document begins here"}},
		{yaml: "name: x\n---\n", want: conf{Name: "x"}},
		{yaml: "name: x\n---\n---\nname: y\n", err: []string{"f.yaml:3: a second YAML document begins here"}},
		{yaml: "name: [a, b]\n", err: []string{`f.yaml:1: a list is not a single value`}},
		{yaml: "|\n  0\n  0\n", err: []string{`f.yaml:1: "0\n0\n" is not a mapping`}},
		// The library drops a fraction and reads hexadecimal: a count is
		// written in decimal digits.
		{yaml: "name: x\ncount: 2.9\n", err: []string{`f.yaml:2: count: 2.9 is not a whole number: write it in decimal digits, such as 3`}},
		{yaml: "count: 0x10\n", err: []string{`f.yaml:1: count: 0x10 is not a whole number`}},
		{yaml: "count: 1e1\nevery: soon\n", err: []string{`f.yaml:2: "soon" is not a duration`, `f.yaml:1: count: 1e1 is not a whole number`}},
		{yaml: "count: -3\n", want: conf{Count: -3}},
	} {
		var got conf
		err := Decode("f.yaml", []byte(tc.yaml), &got)
		if tc.err == nil {
			if err != nil || got != tc.want {
				t.Errorf("%q: %+v, %v; want %+v", tc.yaml, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: no error, want %q", tc.yaml, tc.err)
			continue
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(tc.err) {
			t.Errorf("%q: %d errors, want %d:\n%v", tc.yaml, len(lines), len(tc.err), err)
			continue
		}
		for i, want := range tc.err {
			if !strings.HasPrefix(lines[i], want) {
				t.Errorf("%q: error %d is\n%s\nwant it to begin\n%s", tc.yaml, i, lines[i], want)
			}
		}
	}
}

// TestTabIsReportedAtItsLine: the YAML library blames a tab on the line
// before it; Decode names the tab's own line and says what to do.
func TestTabIsReportedAtItsLine(t *testing.T) {
	for _, data := range []string{
		"name: x\nevery: 5s\n\tcount: 2\n",
		"name: x\nevery: 5s\n \tcount: 2\n",
	} {
		var got conf
		err := Decode("f.yaml", []byte(data), &got)
		if err == nil || err.Error() != "f.yaml:3: a tab indents this line: YAML indents with spaces only" {
			t.Errorf("%q: %v", data, err)
		}
	}
	var got conf
	if err := Decode("f.yaml", []byte("name: \"a\tb\"\n"), &got); err != nil || got.Name != "a\tb" {
		t.Errorf("a tab inside a value: %+v, %v", got, err)
	}
}

// TestTypeErrorSaysWhereAndDecodesTheRest: values of the wrong type are a
// *TypeError naming each one's line and key, and the rest is decoded.
func TestTypeErrorSaysWhereAndDecodesTheRest(t *testing.T) {
	var got conf
	err := Decode("f.yaml", []byte("name: x\nevery: soon\ncount: many\n"), &got)
	var te *TypeError
	if !errors.As(err, &te) {
		t.Fatalf("%v (%T), want a *TypeError", err, err)
	}
	if want := []Key{{2, "every"}, {3, "count"}}; !slices.Equal(te.Keys, want) || got.Name != "x" {
		t.Errorf("keys %v, name %q; want %v and x decoded", te.Keys, got.Name, want)
	}
}

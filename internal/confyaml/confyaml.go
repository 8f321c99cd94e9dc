// Package confyaml decodes gcefleet's YAML configuration files strictly
// (an unknown key is an error) and reports each problem as file:line with
// what to write instead, rather than in the YAML library's words.
package confyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A TypeError reports values of the wrong type. The rest of the file was
// decoded, so that a caller can check it too and report every problem.
type TypeError struct {
	// Keys are where the values of the wrong type are: the line and the
	// key of each, "" when the value is not a mapping's.
	Keys []Key
	err  error
}

// Key is a mapping key at its line.
type Key struct {
	Line int
	Name string
}

func (e *TypeError) Error() string { return e.err.Error() }
func (e *TypeError) Unwrap() error { return e.err }

// Decode decodes data, the contents of the file name, into v. An empty
// file leaves v as it is. Values of the wrong type are a *TypeError.
func Decode(name string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
		out := &TypeError{}
		var root yaml.Node
		yaml.Unmarshal(data, &root) // it decoded once; the tree is for the keys
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			msg := strings.TrimPrefix(e, "line ")
			if m := badValue.FindStringSubmatch(msg); m != nil {
				line, _ := strconv.Atoi(m[1])
				out.Keys = append(out.Keys, Key{Line: line, Name: keyOf(&root, line, m[2])})
			}
			errs[i] = fmt.Errorf("%s:%s", name, explain(msg))
		}
		out.err = errors.Join(errs...)
		return out
	}
	// The library blames a tab on the line before it, or in words about
	// tokens: a tab in an indentation is the commonest cause, so say so
	// at its own line.
	if line := tabIndented(data); line > 0 {
		return fmt.Errorf("%s:%d: a tab indents this line: YAML indents with spaces only", name, line)
	}
	return fmt.Errorf("%s:%s", name, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), "line "))
}

// keyOf returns the key whose scalar value at line is value, or "".
func keyOf(n *yaml.Node, line int, value string) string {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && v.Line == line && v.Value == value {
				return n.Content[i].Value
			}
		}
	}
	for _, c := range n.Content {
		if k := keyOf(c, line, value); k != "" {
			return k
		}
	}
	return ""
}

// tabIndented returns the number of the first line whose indentation
// holds a tab, or 0.
func tabIndented(data []byte) int {
	for i, line := range strings.Split(string(data), "\n") {
		rest := strings.TrimLeft(line, " \t")
		if strings.ContainsRune(line[:len(line)-len(rest)], '\t') {
			return i + 1
		}
	}
	return 0
}

// badValue matches the library's words for a value of the wrong type:
// "12: cannot unmarshal !!str `soon` into time.Duration".
var badValue = regexp.MustCompile("^(\\d+): cannot unmarshal !!\\w+ `(.*)` into (\\S+)$")

// unknownKey matches "12: field colour not found in type main.conf".
var unknownKey = regexp.MustCompile(`^(\d+): field (\S+) not found in type \S+$`)

// explain rewords one of the library's messages (without "line ") where it
// knows a better one.
func explain(msg string) string {
	if m := unknownKey.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s: unknown key %q: check its spelling and its indentation", m[1], m[2])
	}
	m := badValue.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, value, typ := m[1], m[2], m[3]
	switch typ {
	case "time.Duration":
		return fmt.Sprintf("%s: %q is not a duration: write a number with a unit, such as 90s, 15m or 720h", line, value)
	case "int", "int64", "int32", "float64":
		return fmt.Sprintf("%s: %q is not a number", line, value)
	case "bool":
		return fmt.Sprintf("%s: %q is not true or false", line, value)
	}
	return msg
}

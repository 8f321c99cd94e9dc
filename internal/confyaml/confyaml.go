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
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decode decodes data, the contents of the file name, into v. An empty
// file leaves v as it is.
func Decode(name string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			errs[i] = fmt.Errorf("%s:%s", name, explain(strings.TrimPrefix(e, "line ")))
		}
		return errors.Join(errs...)
	}
	return fmt.Errorf("%s:%s", name, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), "line "))
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

// Package confyaml decodes gcefleet's YAML configuration files strictly
// (an unknown key is an error) and reports each problem as file:line with
// what to write instead, rather than in the YAML library's words.
package confyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
// file leaves v as it is. A file holds one YAML document: a second one is
// an error rather than silently ignored. Values of the wrong type are a
// *TypeError.
func Decode(name string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return nil
	}
	for err == nil {
		var next yaml.Node
		err = dec.Decode(&next)
		switch {
		case errors.Is(err, io.EOF):
			return notWhole(name, data, reflect.TypeOf(v))
		case err == nil && len(next.Content) == 1 && next.Content[0].Tag == "!!null":
			// An empty document, such as a trailing "---": nothing ignored.
		case err == nil:
			return fmt.Errorf("%s:%d: a second YAML document begins here: a configuration file holds one; remove the --- line and merge the two", name, next.Line)
		default:
			return syntaxError(name, data, err, reflect.TypeFor[yaml.Node]())
		}
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
				out.Keys = append(out.Keys, Key{Line: line, Name: keyOf(&root, line, m[3])})
			}
			errs[i] = fmt.Errorf("%s:%s", name, explain(msg))
		}
		var nw *TypeError
		if errors.As(notWhole(name, data, reflect.TypeOf(v)), &nw) {
			out.Keys = append(out.Keys, nw.Keys...)
			errs = append(errs, nw.err)
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
	return syntaxError(name, data, err, reflect.TypeOf(v))
}

// libraryLine matches the line the YAML library puts in front of some of
// its messages, which is often one too low or missing: "line 12: ".
var libraryLine = regexp.MustCompile(`^line (\d+): `)

// syntaxError turns a YAML syntax error, or a value the library could not
// decode, into "name:LINE: message". The library's own line numbers are
// unreliable (parser errors give the line before the problem, and errors on
// the first line or in the reader give none), so the line is found as the
// first line at which decoding the file cut short fails with the same
// message; t is the type decoded into.
func syntaxError(name string, data []byte, err error, t reflect.Type) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	libLine := 0
	if m := libraryLine.FindStringSubmatch(msg); m != nil {
		libLine, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	line := lineOf(data, msg, t)
	if line == 0 {
		line = libLine
	}
	msg = reword(data, line, msg)
	if line == 0 {
		return fmt.Errorf("%s: %s", name, msg)
	}
	return fmt.Errorf("%s:%d: %s", name, line, msg)
}

// lineOf returns the first line n such that decoding the first n lines of
// data into a new value of type t fails with msg, or 0 if none does. A
// failing prefix stays failing as it grows, so a binary search finds it.
func lineOf(data []byte, msg string, t reflect.Type) int {
	var ends []int // ends[i] is the offset just after line i+1
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fails := func(i int) bool {
		dec := yaml.NewDecoder(bytes.NewReader(data[:ends[i]]))
		err := dec.Decode(reflect.New(t).Interface())
		for err == nil { // the error may be in a later document
			err = dec.Decode(new(yaml.Node))
		}
		return strings.HasSuffix(err.Error(), msg)
	}
	i := sort.Search(len(ends), fails)
	if i == len(ends) {
		return 0
	}
	return i + 1
}

// reword says in plain words what the YAML reader's messages mean.
func reword(data []byte, line int, msg string) string {
	switch msg {
	case "control characters are not allowed":
		r := firstBadRune(lineText(data, line))
		return fmt.Sprintf("control character %U is not allowed: only tabs, newlines and printable characters may appear", r)
	case "invalid leading UTF-8 octet", "invalid trailing UTF-8 octet", "incomplete UTF-8 octet sequence", "invalid Unicode character":
		return "the file is not valid UTF-8 text: save it as UTF-8"
	case "incomplete UTF-16 character", "incomplete UTF-16 surrogate pair", "invalid UTF-16 surrogate pair", "invalid UTF-16 low surrogate", "invalid UTF-16 high surrogate":
		return "the file is not valid UTF-16 text: save it as UTF-8"
	}
	return msg
}

// lineText returns line n (from 1) of data, or all of data if n is 0.
func lineText(data []byte, n int) []byte {
	if n == 0 {
		return data
	}
	for range n - 1 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return nil
		}
		data = data[i+1:]
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		data = data[:i]
	}
	return data
}

// firstBadRune is the first character of b that YAML does not allow.
func firstBadRune(b []byte) rune {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		switch {
		case r == '\t' || r == '\n' || r == '\r' || r == 0x85:
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0xfffe || r == 0xffff:
			return r
		}
	}
	return 0
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
// "12: cannot unmarshal !!str `soon` into time.Duration", or
// "3: cannot unmarshal !!seq into string" for a list or a mapping.
var badValue = regexp.MustCompile("(?s)^(\\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")

// unknownKey matches "12: field colour not found in type main.conf".
var unknownKey = regexp.MustCompile(`^(\d+): field (\S+) not found in type \S+$`)

// explain rewords one of the library's messages (without "line ") where it
// knows a better one. A message never spans lines, whatever the value.
func explain(msg string) string {
	if m := unknownKey.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s: unknown key %q: check its spelling and its indentation", m[1], m[2])
	}
	m := badValue.FindStringSubmatch(msg)
	if m == nil {
		return strings.ReplaceAll(msg, "\n", `\n`)
	}
	line, kind, value, typ := m[1], m[2], m[3], m[4]
	var got string
	switch kind {
	case "seq":
		got = "a list"
	case "map":
		got = "a mapping"
	default:
		if len(value) > 64 {
			value = value[:64] + "..."
		}
		got = strconv.Quote(value)
	}
	switch {
	case typ == "time.Duration":
		return fmt.Sprintf("%s: %s is not a duration: write a number with a unit, such as 90s, 15m or 720h", line, got)
	case strings.HasPrefix(typ, "int") || strings.HasPrefix(typ, "uint") || strings.HasPrefix(typ, "float"):
		return fmt.Sprintf("%s: %s is not a number", line, got)
	case typ == "bool":
		return fmt.Sprintf("%s: %s is not true or false", line, got)
	case typ == "string":
		return fmt.Sprintf("%s: %s is not a single value: write a string (quote it if it holds : or #)", line, got)
	case strings.HasPrefix(typ, "[]"):
		return fmt.Sprintf("%s: %s is not a list: write one item a line, each after \"- \", or [a, b]", line, got)
	}
	return fmt.Sprintf("%s: %s is not a mapping: write key: value lines, or {key: value}", line, got)
}

// notWhole reports, as a *TypeError, the values of data that go into an
// integer of t (a count, a size) but are not written as whole decimal
// numbers: the YAML library drops a fraction (min_idle: 2.9 becomes 2)
// and reads 0x10 as 16 without a word. It returns nil when there are none.
func notWhole(name string, data []byte, t reflect.Type) error {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return nil
	}
	out := &TypeError{}
	var errs []error
	var walk func(n *yaml.Node, t reflect.Type, key string)
	walk = func(n *yaml.Node, t reflect.Type, key string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch {
		case n.Kind == yaml.ScalarNode && isCount(t):
			if n.Tag == "!!null" || wholeDecimal.MatchString(n.Value) {
				return
			}
			if n.Tag == "!!float" || n.Tag == "!!int" {
				out.Keys = append(out.Keys, Key{Line: n.Line, Name: key})
				errs = append(errs, fmt.Errorf("%s:%d: %s: %s is not a whole number: write it in decimal digits, such as 3", name, n.Line, key, n.Value))
			}
		case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if f, ok := fieldOf(t, n.Content[i].Value); ok {
					walk(n.Content[i+1], f.Type, n.Content[i].Value)
				}
			}
		case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], t.Elem(), n.Content[i].Value)
			}
		case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
			for _, c := range n.Content {
				walk(c, t.Elem(), key)
			}
		}
	}
	walk(root.Content[0], t, "")
	if len(errs) == 0 {
		return nil
	}
	out.err = errors.Join(errs...)
	return out
}

// wholeDecimal is how a count is written: decimal digits, perhaps signed.
var wholeDecimal = regexp.MustCompile(`^[-+]?[0-9]+$`)

// isCount reports whether t is an integer that is a number of things,
// not a duration (which has its own syntax and check).
func isCount(t reflect.Type) bool {
	if t == reflect.TypeFor[time.Duration]() {
		return false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// fieldOf returns the field of struct t that the YAML key decodes into.
func fieldOf(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

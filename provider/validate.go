package provider

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gcefleet/gcefleet/provider/api"
	"github.com/go-json-experiment/json/jsontext"
)

// Limits of what the API accepts, so that no client input reaches the
// store that the store cannot hold or that costs it more than a request
// should (a dimension of a thousand values is a thousand terms of one
// SQL expression). openapi.yaml documents them.
const (
	maxBody      = 1 << 20 // bytes of a request body
	maxRequestID = 128     // bytes of a request_id
	maxName      = 128     // bytes of a backend's or client's name, and of a lease id
	maxDimKeys   = 64      // keys of one set of dimensions
	maxDimValues = 64      // values of one key
	// maxRequestValues bounds the values of a lease request's dimensions
	// in all: the queue indexes a waiting request by each of its values,
	// and each entry names the request's whole shape, so a request's cost
	// to the store grows with the square of its values.
	maxRequestValues = 64
	maxDimValue      = 255      // bytes of one value
	maxCACert        = 16 << 10 // bytes of a connection's ca_cert
	maxWait          = 5 * time.Minute
	// maxFieldErrors is the most field errors an answer lists.
	maxFieldErrors = 20
)

// readJSON decodes r's body into v. Field names match exactly (not
// folded by case as encoding/json would), unknown and repeated fields are
// refused by name, and so are a body that is not UTF-8, one larger than
// maxBody and data after the JSON value.
func readJSON(r *http.Request, v any) error {
	if err := checkBodyHeaders(r); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return newError("too_large", fmt.Sprintf("request body larger than %d bytes: send less at once (a batchAdd of fewer machines, say)", maxBody))
		}
		return newError("invalid", "request body: could not be read in full")
	}
	if !utf8.Valid(body) {
		return newError("invalid", "request body: not valid UTF-8")
	}
	fields := map[string]string{}
	if err := checkKeys(body, reflect.TypeOf(v), fields); err != nil {
		return badJSON(err)
	}
	if len(fields) > 0 {
		return invalid(fields)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badJSON(err)
	}
	return nil
}

// badJSON answers a body that jsontext or encoding/json refused, in the
// API's words rather than the decoders' (which name Go types).
func badJSON(err error) error {
	switch {
	case errors.Is(err, errTrailing):
		return newError("invalid", "request body: data after the JSON value: send one JSON object")
	case errors.Is(err, errTooDeep):
		return newError("invalid", fmt.Sprintf("request body: nested deeper than %d", maxDepth))
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return newError("invalid", "request body: the JSON value ends early")
	}
	if se, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		return newError("invalid", fmt.Sprintf("request body: not JSON at byte %d", se.ByteOffset))
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return newError("invalid", fmt.Sprintf("request body: not JSON at byte %d: %v", se.Offset, se))
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		msg := fmt.Sprintf("%s, not %s", jsonKind(te.Type), truncate(te.Value))
		if te.Field == "" {
			return newError("invalid", "request body: "+msg)
		}
		return invalid(map[string]string{te.Field: msg})
	}
	if de, ok := errors.AsType[*api.DurationError](err); ok {
		return invalid(map[string]string{"term.duration": de.Error()})
	}
	if _, ok := errors.AsType[*time.ParseError](err); ok {
		return newError("invalid", "request body: times are RFC 3339 strings, such as 2026-01-02T15:04:05Z")
	}
	// The decoder's other messages name Go types, not the API's.
	return newError("invalid", "request body: not a valid request for this route (see /v1/openapi.yaml)")
}

// jsonKind names what the API wants of a Go type, in JSON's words.
func jsonKind(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Time]():
		return "an RFC 3339 time string"
	case t == reflect.TypeFor[time.Duration]():
		return "a duration string, such as \"600s\" or \"10m\""
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// maxDepth bounds how deep a body nests: the API's go three deep.
const maxDepth = 16

var (
	errTooDeep  = errors.New("nested too deep")
	errTrailing = errors.New("data after the JSON value")
)

// checkKeys reads one JSON value from body and adds to fields, by path,
// every object key that names no field of t exactly, and every field
// given twice. Values of other types than t's are left for
// json.Unmarshal to refuse. It reads with jsontext, whose tokens cost no
// allocation, and skips whole every value with no field names below it
// (dimensions, strings), so that it costs a fraction of the decoding.
func checkKeys(body []byte, t reflect.Type, fields map[string]string) error {
	k := keyChecker{dec: jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true)), fields: fields, names: map[reflect.Type]map[string]reflect.Type{}}
	if err := k.check(t, ""); err != nil {
		return err
	}
	if _, err := k.dec.ReadToken(); err != io.EOF {
		return errTrailing
	}
	return nil
}

type keyChecker struct {
	dec    *jsontext.Decoder
	fields map[string]string
	names  map[reflect.Type]map[string]reflect.Type // jsonFields of each struct met
}

func (k *keyChecker) check(t reflect.Type, path string) error {
	dec := k.dec
	if dec.StackDepth() >= maxDepth {
		return errTooDeep
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// A map's keys are checked for repeats (of dimensions, say) even
	// when it holds no struct.
	if t == nil || !hasStruct(t) && t.Kind() != reflect.Map {
		return dec.SkipValue()
	}
	switch dec.PeekKind() {
	case '{':
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		var names map[string]reflect.Type
		var seen map[string]bool
		if t.Kind() == reflect.Struct {
			if names = k.names[t]; names == nil {
				names = jsonFields(t)
				k.names[t] = names
			}
		}
		if t.Kind() == reflect.Struct || t.Kind() == reflect.Map {
			seen = map[string]bool{}
		}
		for dec.PeekKind() != '}' {
			kt, err := dec.ReadToken()
			if err != nil {
				return err
			}
			key := kt.String()
			name := key
			if textProblem(key, 64) != "" {
				// Not echoed back: it names no field anyway.
				name = "(a name of more than 64 bytes or unprintable)"
			}
			at := path + "." + name
			if path == "" {
				at = name
			}
			var et reflect.Type
			switch t.Kind() {
			case reflect.Struct:
				ft, ok := names[key]
				switch {
				case !ok:
					k.fields[at] = unknownField(key, names)
				case seen[key]:
					k.fields[at] = "given twice"
				}
				seen[key] = true
				et = ft
			case reflect.Map:
				if seen[key] {
					k.fields[at] = "given twice"
				}
				seen[key] = true
				et = t.Elem()
			}
			if err := k.check(et, at); err != nil {
				return err
			}
		}
		_, err := dec.ReadToken()
		return err
	case '[':
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		var et reflect.Type
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			et = t.Elem()
		}
		for i := 0; dec.PeekKind() != ']'; i++ {
			if err := k.check(et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := dec.ReadToken()
		return err
	}
	return dec.SkipValue()
}

// hasStruct reports whether a value of t can hold a struct other than
// time.Time, whose fields' names must then be checked.
func hasStruct(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Struct:
		return t != reflect.TypeFor[time.Time]()
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return hasStruct(t.Elem())
	}
	return false
}

// jsonFields returns the JSON names of struct t's fields and their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	names := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names[name] = f.Type
	}
	return names
}

func unknownField(key string, names map[string]reflect.Type) string {
	for n := range names {
		if strings.EqualFold(n, key) {
			return fmt.Sprintf("unknown field: field names are case-sensitive; did you mean %q?", n)
		}
	}
	known := slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	})
	if len(known) == 0 {
		return "unknown field"
	}
	return "unknown field; the fields here are " + strings.Join(known, ", ")
}

// textProblem says what is wrong with s as a text of at most max bytes:
// valid UTF-8 of printable characters (spaces but no control or format
// characters, which could rewrite a terminal or reorder a line).
func textProblem(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("at most %d bytes", max)
	case !utf8.ValidString(s):
		return "not valid UTF-8"
	case strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }):
		return "printable characters only: no control characters"
	}
	return ""
}

// isDNSName reports whether s is a DNS name: dot-separated labels of 1 to
// 63 letters, digits and hyphens that neither start nor end with a
// hyphen, at most 253 bytes in all.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// checkHostname adds a problem with a machine's hostname to fields.
func checkHostname(fields map[string]string, field, h string) {
	if !isDNSName(h) || strings.ToLower(h) != h {
		fields[field] = "a DNS name of lowercase letters, digits, - and . (labels of 1 to 63, at most 253 in all)"
	}
}

// checkAddress adds a problem with a connection address to fields: an IP
// address or a DNS name, or nothing.
func checkAddress(fields map[string]string, field, a string) {
	if a == "" || isDNSName(a) {
		return
	}
	if ip, err := netip.ParseAddr(a); err == nil && ip.Zone() == "" {
		return
	}
	fields[field] = "an IP address (10.1.2.3, fd00::1) or a DNS name (vm-1.example.com)"
}

// checkCACert adds a problem with a PEM certificate to fields.
func checkCACert(fields map[string]string, field, pem string) {
	switch {
	case len(pem) > maxCACert:
		fields[field] = fmt.Sprintf("at most %d bytes of PEM", maxCACert)
	case !utf8.ValidString(pem) || strings.ContainsFunc(pem, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' && r != '\n' && r != '\r' && r != '\t' }):
		fields[field] = "PEM text: printable characters and line breaks only"
	case pem != "" && !isCertPEM(pem):
		fields[field] = "PEM of one or more X.509 certificates (-----BEGIN CERTIFICATE-----), and nothing else"
	}
}

// isCertPEM reports whether s is one or more PEM CERTIFICATE blocks
// that parse as X.509 certificates, with nothing but space around them.
func isCertPEM(s string) bool {
	rest := []byte(s)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" || len(b.Headers) > 0 {
			return false
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return false
		}
		n++
	}
	return n > 0 && len(bytes.TrimSpace(rest)) == 0
}

// checkID answers a lease id from a path that no lease can have.
func checkID(id string) error {
	if p := textProblem(id, maxName); p != "" || id == "" {
		if p == "" {
			p = "give a lease id"
		}
		return invalid(map[string]string{"id": p})
	}
	return nil
}

// query parses r's query strictly: a malformed query, a parameter not
// among allowed, one given twice or one whose value is not printable
// text is refused by name.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, newError("invalid", "query: malformed: percent-encode the parameters' names and values")
	}
	fields := map[string]string{}
	for k, vs := range q {
		at := "query." + k
		if textProblem(k, 64) != "" {
			at = "query"
		}
		switch {
		case !slices.Contains(allowed, k):
			if len(allowed) == 0 {
				fields[at] = "unknown parameter: this route takes none"
			} else {
				fields[at] = "unknown parameter; this route takes " + strings.Join(allowed, ", ")
			}
		case len(vs) > 1:
			fields[at] = "given twice"
		default:
			if p := textProblem(vs[0], maxName); p != "" {
				fields[at] = p
			}
		}
	}
	if len(fields) > 0 {
		return nil, invalid(fields)
	}
	return q, nil
}

// queryBool parses a true/false parameter; absent is false.
func queryBool(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, invalid(map[string]string{"query." + name: "true or false"})
}

// queryCursor parses a non-negative int64 parameter; absent is 0.
func queryCursor(q url.Values, name string) (int64, error) {
	if !q.Has(name) {
		return 0, nil
	}
	v := q.Get(name)
	// Only the canonical form: not "", "+1" or "01".
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != v {
		return 0, invalid(map[string]string{"query." + name: "a whole number from 0 to 9223372036854775807: the id of the last event read"})
	}
	return n, nil
}

// queryWait parses ?wait=, a duration of at most maxWait; absent is 0.
func queryWait(q url.Values) (time.Duration, error) {
	v := q.Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxWait {
		return 0, invalid(map[string]string{"query.wait": "a duration up to 5m, such as 30s"})
	}
	return d, nil
}

// holdOpen lets a long poll of an authenticated caller outlast the
// server's read and write timeouts: its connection's deadlines move to
// the end of the wait and a margin for the answer.
func holdOpen(w http.ResponseWriter, wait time.Duration) {
	if wait <= 0 {
		return
	}
	rc := http.NewResponseController(w)
	end := time.Now().Add(wait + 30*time.Second)
	// Errors mean the connection cannot move its deadlines (an
	// httptest recorder, HTTP/2's own handling): the poll then ends by
	// the server's timeouts, as any request would.
	_ = rc.SetReadDeadline(end)
	_ = rc.SetWriteDeadline(end)
}

// errorID names an internal error in the log and in the answer.
func errorID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkPath answers a path's hostname that no machine can have.
func checkPath(r *http.Request, name string) error {
	fields := map[string]string{}
	checkHostname(fields, name, r.PathValue(name))
	if len(fields) > 0 {
		return invalid(fields)
	}
	return nil
}

var dimKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

func checkDims(fields map[string]string, prefix string, d api.Dimensions, required bool) {
	switch {
	case required && len(d) == 0:
		fields[prefix] = "give at least one dimension, such as os=linux"
	case len(d) > maxDimKeys:
		fields[prefix] = fmt.Sprintf("at most %d keys", maxDimKeys)
		return
	}
	for k, vs := range d {
		at := prefix + "." + k
		if !dimKeyRE.MatchString(k) {
			if textProblem(k, 63) != "" {
				at = prefix // the key cannot name the field
			}
			fields[at] = "keys start with a lowercase letter and hold lowercase letters, digits, _, . and - (at most 63)"
			continue
		}
		switch {
		case len(vs) == 0:
			fields[at] = "give at least one value"
		case len(vs) > maxDimValues:
			fields[at] = fmt.Sprintf("at most %d values a key", maxDimValues)
			continue
		}
		for _, v := range vs {
			if v == "" || len(v) > maxDimValue {
				fields[at] = fmt.Sprintf("values are 1 to %d bytes", maxDimValue)
			} else if p := textProblem(v, maxDimValue); p != "" {
				fields[at] = "values: " + p
			}
		}
	}
}

// truncate shortens s, a value echoed back in a message, to 40 bytes
// and an ellipsis.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// checkBodyHeaders refuses a body the API would misread: one sent as
// another type than JSON, or encoded (gzip, say) in a way the provider
// does not decode.
func checkBodyHeaders(r *http.Request) error {
	if ce := r.Header.Values("Content-Encoding"); len(ce) > 0 && !(len(ce) == 1 && strings.EqualFold(strings.TrimSpace(ce[0]), "identity")) {
		return newError("unsupported_media_type", fmt.Sprintf("Content-Encoding %q: the API reads bodies unencoded; send plain JSON with no Content-Encoding", truncate(strings.Join(ce, ", "))))
	}
	ct := r.Header.Values("Content-Type")
	if len(ct) == 0 {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(ct[0]); len(ct) > 1 || err != nil || mt != "application/json" {
		return newError("unsupported_media_type", fmt.Sprintf("Content-Type %q: send the body as JSON, with Content-Type: application/json", truncate(strings.Join(ct, ", "))))
	}
	return nil
}

// ownScope refuses a backend's query for another backend's data: a
// backend reads only its own (its token's name), which it need not name.
func ownScope(r *http.Request, p Principal) error {
	if p.Role != Backend || !strings.Contains(r.URL.RawQuery, "backend") {
		return nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil // the handler's query refuses it
	}
	for _, b := range q["backend"] {
		if b != p.Name {
			return newError("forbidden", fmt.Sprintf("query.backend: %s reads only its own, not %q's: leave backend out or give %q", p.Name, truncate(b), p.Name))
		}
	}
	return nil
}

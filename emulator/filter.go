package emulator

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A filter is a parsed list filter expression in GCE's syntax:
//
//	name = "web-1"                      comparisons: = != > < >= <= and : (has)
//	labels.owner = "ci" AND status = RUNNING
//	(status = RUNNING) (zone : central)  juxtaposition means AND
//	(a = 1) OR (b != 2)
//	labels.run:*                        the key is present
//	name eq 'web-.*'                    eq/ne: RE2 regular expression that must match the whole value
//
// Field paths name JSON fields; labels.KEY and metadata-like maps index by key,
// and a path through a list matches when any element matches.
type filter interface {
	match(v reflect.Value) bool
}

type andFilter []filter
type orFilter []filter
type notFilter struct{ f filter }

type cmpFilter struct {
	path  []string
	op    string // = != > < >= <= : eq ne
	value string
	re    *regexp.Regexp // for eq and ne
}

func (f andFilter) match(v reflect.Value) bool {
	for _, g := range f {
		if !g.match(v) {
			return false
		}
	}
	return true
}

func (f orFilter) match(v reflect.Value) bool {
	for _, g := range f {
		if g.match(v) {
			return true
		}
	}
	return false
}

func (f notFilter) match(v reflect.Value) bool { return !f.f.match(v) }

func (f *cmpFilter) match(v reflect.Value) bool {
	vals := fieldValues(v, f.path, nil)
	switch f.op {
	case "!=":
		return !slices.Contains(vals, f.value)
	case "ne":
		return !slices.ContainsFunc(vals, f.re.MatchString)
	}
	for _, got := range vals {
		switch f.op {
		case "=":
			if got == f.value {
				return true
			}
		case "eq":
			if f.re.MatchString(got) {
				return true
			}
		case ":":
			if f.value == "*" || strings.Contains(got, f.value) {
				return true
			}
		default:
			if compareOrdered(got, f.value, f.op) {
				return true
			}
		}
	}
	return false
}

func compareOrdered(a, b, op string) bool {
	c := 0
	fa, errA := strconv.ParseFloat(a, 64)
	fb, errB := strconv.ParseFloat(b, 64)
	if errA == nil && errB == nil {
		switch {
		case fa < fb:
			c = -1
		case fa > fb:
			c = 1
		}
	} else {
		c = strings.Compare(a, b)
	}
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

// fieldValues collects the values at path below v as strings, the way the
// filter compares them.
func fieldValues(v reflect.Value, path []string, out []string) []string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return out
		}
		v = v.Elem()
	}
	if len(path) == 0 {
		switch v.Kind() {
		case reflect.String:
			return append(out, v.String())
		case reflect.Bool:
			return append(out, strconv.FormatBool(v.Bool()))
		case reflect.Int, reflect.Int32, reflect.Int64:
			return append(out, strconv.FormatInt(v.Int(), 10))
		case reflect.Uint, reflect.Uint32, reflect.Uint64:
			return append(out, strconv.FormatUint(v.Uint(), 10))
		case reflect.Float64:
			return append(out, strconv.FormatFloat(v.Float(), 'g', -1, 64))
		case reflect.Slice:
			for i := range v.Len() {
				out = fieldValues(v.Index(i), nil, out)
			}
		}
		return out
	}
	switch v.Kind() {
	case reflect.Struct:
		i, ok := jsonFieldIndex(v.Type())[path[0]]
		if !ok {
			return out
		}
		return fieldValues(v.Field(i), path[1:], out)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return out
		}
		e := v.MapIndex(reflect.ValueOf(path[0]))
		if !e.IsValid() {
			return out
		}
		return fieldValues(e, path[1:], out)
	case reflect.Slice:
		for i := range v.Len() {
			out = fieldValues(v.Index(i), path, out)
		}
	}
	return out
}

// jsonFieldIndexes caches, per struct type, the field index of each JSON name.
var jsonFieldIndexes sync.Map // reflect.Type -> map[string]int

func jsonFieldIndex(t reflect.Type) map[string]int {
	if m, ok := jsonFieldIndexes.Load(t); ok {
		return m.(map[string]int)
	}
	m := map[string]int{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = i
		}
	}
	jsonFieldIndexes.Store(t, m)
	return m
}

// parseFilter parses a GCE list filter; the empty string matches everything.
func parseFilter(s string) (filter, error) {
	toks, err := lexFilter(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return andFilter(nil), nil
	}
	p := &filterParser{toks: toks}
	f, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, fmt.Errorf("unexpected %q at the end", p.toks[p.i].text)
	}
	return f, nil
}

type filterToken struct {
	text   string
	quoted bool
}

func lexFilter(s string) ([]filterToken, error) {
	var toks []filterToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(' || c == ')':
			toks = append(toks, filterToken{text: string(c)})
			i++
		case c == '"' || c == '\'':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated quote at offset %d", i)
			}
			toks = append(toks, filterToken{text: s[i+1 : i+1+j], quoted: true})
			i += j + 2
		case strings.ContainsRune("=!<>:", rune(c)):
			j := i + 1
			for j < len(s) && strings.ContainsRune("=<>", rune(s[j])) {
				j++
			}
			toks = append(toks, filterToken{text: s[i:j]})
			i = j
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n()=!<>:", rune(s[j])) {
				j++
			}
			// A bare value may contain operator characters after an
			// operator, e.g. an unquoted regex; it runs to the next space.
			if n := len(toks); n > 0 && !toks[n-1].quoted && isOp(toks[n-1].text) {
				for j < len(s) && !strings.ContainsRune(" \t\n)", rune(s[j])) {
					j++
				}
			}
			toks = append(toks, filterToken{text: s[i:j]})
			i = j
		}
	}
	return toks, nil
}

func isOp(s string) bool {
	switch s {
	case "=", "!=", "<", ">", "<=", ">=", ":", "eq", "ne":
		return true
	}
	return false
}

type filterParser struct {
	toks  []filterToken
	i     int
	depth int // of parentheses and NOTs around the current term
}

// maxFilterDepth bounds the nesting of a filter: the parser and the
// matcher recurse once a level, and a list call holds the emulator's lock.
const maxFilterDepth = 64

func (p *filterParser) peek() (filterToken, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return filterToken{}, false
}

func (p *filterParser) or() (filter, error) {
	f, err := p.and()
	if err != nil {
		return nil, err
	}
	fs := orFilter{f}
	for {
		t, ok := p.peek()
		if !ok || t.quoted || t.text != "OR" {
			break
		}
		p.i++
		g, err := p.and()
		if err != nil {
			return nil, err
		}
		fs = append(fs, g)
	}
	if len(fs) == 1 {
		return f, nil
	}
	return fs, nil
}

func (p *filterParser) and() (filter, error) {
	var fs andFilter
	for {
		t, ok := p.peek()
		if !ok || (!t.quoted && (t.text == ")" || t.text == "OR")) {
			break
		}
		if !t.quoted && t.text == "AND" {
			p.i++
			continue
		}
		f, err := p.term()
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("expected an expression")
	}
	if len(fs) == 1 {
		return fs[0], nil
	}
	return fs, nil
}

func (p *filterParser) term() (filter, error) {
	t, _ := p.peek()
	if !t.quoted && (t.text == "(" || t.text == "NOT" || t.text == "-") {
		if p.depth++; p.depth > maxFilterDepth {
			return nil, fmt.Errorf("nested more than %d deep", maxFilterDepth)
		}
		defer func() { p.depth-- }()
	}
	if !t.quoted && t.text == "(" {
		p.i++
		f, err := p.or()
		if err != nil {
			return nil, err
		}
		if t, ok := p.peek(); !ok || t.text != ")" {
			return nil, fmt.Errorf("missing ')'")
		}
		p.i++
		return f, nil
	}
	if !t.quoted && (t.text == "NOT" || t.text == "-") {
		p.i++
		f, err := p.term()
		if err != nil {
			return nil, err
		}
		return notFilter{f}, nil
	}
	if p.i+3 > len(p.toks) {
		return nil, fmt.Errorf("incomplete comparison after %q", t.text)
	}
	field, op, val := p.toks[p.i], p.toks[p.i+1], p.toks[p.i+2]
	if field.quoted || op.quoted || !isOp(op.text) {
		return nil, fmt.Errorf("expected FIELD OPERATOR VALUE, got %q %q", field.text, op.text)
	}
	p.i += 3
	c := &cmpFilter{path: strings.Split(field.text, "."), op: op.text, value: val.text}
	if c.op == ":" && val.text == "*" && !val.quoted {
		c.value = "*"
	}
	if c.op == "eq" || c.op == "ne" {
		re, err := regexp.Compile("^(?:" + val.text + ")$")
		if err != nil {
			return nil, fmt.Errorf("bad regular expression %q: %v", val.text, err)
		}
		c.re = re
	}
	return c, nil
}

// The orders a list can be asked for: GCE sorts by name, or by
// creationTimestamp newest first, and refuses any other orderBy.
const (
	orderByName   = "name"
	orderByNewest = "creationTimestamp desc"
)

// listParams are the paging, ordering and filtering parameters of a list
// call.
type listParams struct {
	filter     filter
	maxResults int
	order      string  // orderByName or orderByNewest
	after      *cursor // where the previous page ended; nil on the first
	list       string  // the list's path, for its page tokens
}

// A cursor is what a page token carries: the order it was made for and the
// last item of its page, so that the next page starts after it.
type cursor struct {
	List    string `json:"l"` // the list's path: a token is for its own list
	Order   string `json:"o"`
	Created string `json:"c,omitempty"`
	Key     string `json:"k"`
}

// parseListParams reads filter, orderBy, maxResults and pageToken as GCE
// does: maxResults is 0 to 500 and 0 means the default, 500; a page token
// continues only the list and the order it was made for.
func parseListParams(r *http.Request) (listParams, error) {
	q := r.URL.Query()
	lp := listParams{maxResults: 500, order: orderByName, list: r.URL.Path}
	f, err := parseFilter(q.Get("filter"))
	if err != nil {
		return lp, errInvalid("Invalid value for field 'filter': '%s'. Invalid list filter expression: %v.", q.Get("filter"), err)
	}
	lp.filter = f
	if s := q.Get("orderBy"); s != "" {
		switch strings.Join(strings.Fields(s), " ") {
		case orderByName:
		case orderByNewest:
			lp.order = orderByNewest
		default:
			return lp, errInvalid("Invalid value for field 'orderBy': '%s'. Only 'name' and 'creationTimestamp desc' are supported.", s)
		}
	}
	if s := q.Get("maxResults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 500 {
			return lp, errInvalid("Invalid value for field 'maxResults': '%s'. Must be a number between 0 and 500.", s)
		}
		if n > 0 {
			lp.maxResults = n
		}
	}
	if tok := q.Get("pageToken"); tok != "" {
		var c cursor
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			err = json.Unmarshal(b, &c)
		}
		if err != nil || c.Key == "" || c.Order != lp.order || c.List != r.URL.Path {
			return lp, errInvalid("Invalid value for field 'pageToken': '%s'. Invalid page token.", tok)
		}
		lp.after = &c
	}
	return lp, nil
}

// creationOf is an item's creationTimestamp: every Compute resource has the
// field, but operations leave it empty and sort by insertTime, as GCE's
// docs suggest for "the newest operation first". Listed things without
// either sort by key alone.
func creationOf(v any) time.Time {
	rv := reflect.Indirect(reflect.ValueOf(v))
	if rv.Kind() != reflect.Struct {
		return time.Time{}
	}
	for _, name := range []string{"CreationTimestamp", "InsertTime"} {
		if f := rv.FieldByName(name); f.IsValid() && f.Kind() == reflect.String && f.String() != "" {
			t, _ := time.Parse(time.RFC3339Nano, f.String())
			return t
		}
	}
	return time.Time{}
}

// page filters items, orders them as lp asks (key breaks ties, and is the
// whole order by name) and cuts one page out of them. It returns the page
// and the token of the next one ("" on the last page).
func page[T any](lp listParams, items []T, key func(T) string) ([]T, string) {
	type entry struct {
		it      T
		key     string
		created time.Time
	}
	cmp := func(a, b entry) int {
		if lp.order == orderByNewest {
			if c := b.created.Compare(a.created); c != 0 {
				return c
			}
		}
		return strings.Compare(a.key, b.key)
	}
	var after entry
	if lp.after != nil {
		after.key = lp.after.Key
		after.created, _ = time.Parse(time.RFC3339Nano, lp.after.Created)
	}
	var keep []entry
	for _, it := range items {
		e := entry{it: it, key: key(it)}
		if lp.order == orderByNewest {
			e.created = creationOf(it)
		}
		if lp.after != nil && cmp(e, after) <= 0 {
			continue
		}
		if lp.filter.match(reflect.ValueOf(it)) {
			keep = append(keep, e)
		}
	}
	slices.SortFunc(keep, cmp)
	n := min(len(keep), lp.maxResults)
	var out []T // nil when empty, as before: lists leave out empty items
	for _, e := range keep[:n] {
		out = append(out, e.it)
	}
	if len(keep) <= lp.maxResults {
		return out, ""
	}
	last := keep[n-1]
	c := cursor{List: lp.list, Order: lp.order, Key: last.key}
	if lp.order == orderByNewest {
		c.Created = last.created.Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(c) // a struct of strings always encodes
	return out, base64.RawURLEncoding.EncodeToString(b)
}

// byZone arranges a page of an aggregated list by scope ("zones/NAME"), as
// GCE does: each zone's items, added to its list by add, and for each of
// the project's zones without any, the list none makes with a
// NO_RESULTS_ON_PAGE warning's scope and message.
func byZone[T, L any](p *project, items []T, zoneOf func(T) string, add func(*L, T), none func(scope, message string) L) map[string]L {
	scoped := map[string]L{}
	for _, it := range items {
		k := "zones/" + zoneOf(it)
		l := scoped[k]
		add(&l, it)
		scoped[k] = l
	}
	for name := range p.zones {
		k := "zones/" + name
		if _, ok := scoped[k]; !ok {
			scoped[k] = none(k, fmt.Sprintf("There are no results for scope '%s' on this page.", k))
		}
	}
	return scoped
}

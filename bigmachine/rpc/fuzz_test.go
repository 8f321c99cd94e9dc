package rpc

import (
	"bytes"
	"context"
	"encoding/gob"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fuzzArg has a field of each kind gob encodes differently.
type fuzzArg struct {
	Name   string
	N      int64
	U      uint8
	F      float64
	Ok     bool
	Bytes  []byte
	List   []fuzzArg
	Map    map[string]*fuzzArg
	Ptr    *fuzzArg
	Any    any
	Fixed  [3]int16
	Nested struct{ C complex128 }
}

type fuzzService struct{}

func (fuzzService) Echo(ctx context.Context, a fuzzArg, r *fuzzArg) error { *r = a; return nil }
func (fuzzService) Add(ctx context.Context, a [2]int, r *int) error       { *r = a[0] + a[1]; return nil }
func (fuzzService) Name(ctx context.Context, s string, r *string) error   { *r = s; return nil }
func (fuzzService) Len(ctx context.Context, rd io.Reader, n *int64) error {
	var err error
	*n, err = io.Copy(io.Discard, rd)
	return err
}
func (fuzzService) Refuse(ctx context.Context, s string, _ *struct{}) error {
	return Errorf(Invalid, "refused %q", s)
}

var fuzzMethods = []string{"Fuzz.Echo", "Fuzz.Add", "Fuzz.Name", "Fuzz.Len", "Fuzz.Refuse", "Fuzz.Nope", "Other.Echo"}

func gobBody(tb testing.TB, v any) []byte {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzServeBody: whatever the body of a call (and its timeout header), the
// server answers without a panic: a reply of the method's type, or an
// error of kind Invalid (status 400) when the argument does not decode.
// A call after it, with a body the decoder pool has seen, still decodes
// exactly: a hostile body cannot poison a pooled decoder.
func FuzzServeBody(f *testing.F) {
	gob.Register(fuzzArg{})
	full := fuzzArg{Name: "x", N: -1 << 62, U: 255, F: 1.5, Ok: true, Bytes: []byte{0, 1}, List: []fuzzArg{{Name: "y"}},
		Map: map[string]*fuzzArg{"k": {N: 2}}, Ptr: &fuzzArg{Name: "p"}, Any: fuzzArg{Name: "any"}, Fixed: [3]int16{1, 2, 3}}
	full.Nested.C = complex(1, 2)
	seeds := [][]byte{
		gobBody(f, full),
		gobBody(f, [2]int{1, 2}),
		gobBody(f, "a name"),
		[]byte("streamed bytes"),
		gobBody(f, "no"),
		nil,
		{},
		{0},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0x80},
		{0xf8, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		bytes.Repeat([]byte{0x03, 0xff, 0x81, 0x00}, 100),
	}
	for i, s := range seeds {
		f.Add(uint8(i), s, "")
	}
	// A good body cut short, or with its value's bytes flipped.
	good := gobBody(f, full)
	for i := 1; i < len(good); i += len(good) / 8 {
		f.Add(uint8(0), good[:i], "")
		bad := bytes.Clone(good)
		bad[i] ^= 0xff
		f.Add(uint8(0), bad, "1")
	}
	f.Add(uint8(1), gobBody(f, [2]int{1, 2}), "-1")
	f.Add(uint8(1), gobBody(f, [2]int{1, 2}), "99999999999999999999")
	f.Add(uint8(2), gobBody(f, strings.Repeat("\x00\xff", 1000)), "")

	s := NewServer()
	if err := s.Register("Fuzz", fuzzService{}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte, timeout string) {
		defer hangWatch(body)()
		method := fuzzMethods[int(which)%len(fuzzMethods)]
		code, reply := call(s, method, body, timeout)
		switch {
		case code == http.StatusOK:
			if method != "Fuzz.Echo" && method != "Fuzz.Add" && method != "Fuzz.Name" && method != "Fuzz.Len" {
				t.Fatalf("%s answered 200", method)
			}
		case code == http.StatusBadRequest:
			var we wireError
			if err := gob.NewDecoder(bytes.NewReader(reply)).Decode(&we); err != nil {
				t.Fatalf("%s: 400 with a body that is not an error: %v", method, err)
			}
			if we.Kind != Invalid || we.Message == "" {
				t.Fatalf("%s: 400 with %+v, want an Invalid error", method, we)
			}
		default:
			t.Fatalf("%s %q: status %d %q, want 200 or 400", method, body, code, reply)
		}
		// The pool still decodes a good body exactly.
		code, reply = call(s, "Fuzz.Echo", good, "")
		var got fuzzArg
		if err := gob.NewDecoder(bytes.NewReader(reply)).Decode(&got); code != http.StatusOK || err != nil || !reflect.DeepEqual(got, full) {
			t.Fatalf("after %q, a good call answers %d %v %+v", body, code, err, got)
		}
	})
}

func call(s *Server, method string, body []byte, timeout string) (int, []byte) {
	r := httptest.NewRequest(http.MethodPost, "/"+method, bytes.NewReader(body))
	if timeout != "" {
		r.Header.Set(TimeoutHeader, timeout)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}

// hangWatch crashes the process if an input is not done with within a few
// seconds: the fuzzer saves a crashing input, but not a slow one.
func hangWatch(input []byte) (stop func()) {
	t := time.AfterFunc(5*time.Second, func() {
		panic(fmt.Sprintf("took more than 5s: %.300q", input))
	})
	return func() { t.Stop() }
}

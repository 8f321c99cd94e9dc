// Package rpc calls Go methods on another machine: one HTTP POST per call
// to /Service.Method, gob-encoded bodies, io.Reader arguments and replies
// streamed rather than buffered, deadlines and cancellation carried to the
// method, and errors that keep their Kind across the wire.
//
// Transport security is the caller's: the Server is an http.Handler to mount
// behind a TLS listener that verifies its clients, and the Client takes an
// *http.Client configured the same way.
package rpc

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TimeoutHeader carries the caller's remaining deadline, in nanoseconds, so
// that the method's context ends when the caller stops waiting.
const TimeoutHeader = "Rpc-Timeout"

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
	readerType  = reflect.TypeFor[io.Reader]()
)

// A Server dispatches calls to the methods of registered services.
type Server struct {
	// Authorize, if set, is asked before each call; an error refuses the
	// call as Invalid with HTTP status 403.
	Authorize func(r *http.Request, method string) error
	// Metrics, if set, counts the calls served.
	Metrics *Metrics

	mu       sync.RWMutex
	methods  map[string]*method
	decoders decoderPool
}

type method struct {
	name    string
	rcvr    reflect.Value
	fn      reflect.Value
	arg     reflect.Type
	reply   reflect.Type // the type pointed to
	argRdr  bool         // the argument is an io.Reader, streamed
	replRdr bool         // the reply is an io.Reader (or ReadCloser), streamed
}

// NewServer returns a server with no services.
func NewServer() *Server { return &Server{methods: map[string]*method{}} }

// Register makes the exported methods of rcvr of the form
//
//	func (ctx context.Context, arg T, reply *R) error
//
// callable as name.Method. T and R must be gob-encodable, or io.Reader to
// stream. It is an error to register a name twice or a value without such
// methods.
func (s *Server) Register(name string, rcvr any) error {
	if name == "" || strings.ContainsAny(name, "./") {
		return fmt.Errorf("rpc: bad service name %q", name)
	}
	v := reflect.ValueOf(rcvr)
	t := v.Type()
	found := map[string]*method{}
	for i := range t.NumMethod() {
		m := t.Method(i)
		mt := m.Type
		if mt.NumIn() != 4 || mt.NumOut() != 1 || mt.In(1) != contextType || mt.Out(0) != errorType || mt.In(3).Kind() != reflect.Pointer {
			continue
		}
		reply := mt.In(3).Elem()
		found[name+"."+m.Name] = &method{
			name:    name + "." + m.Name,
			rcvr:    v,
			fn:      m.Func,
			arg:     mt.In(2),
			reply:   reply,
			argRdr:  mt.In(2) == readerType,
			replRdr: reply.Kind() == reflect.Interface && reply.Implements(readerType),
		}
	}
	if len(found) == 0 {
		return fmt.Errorf("rpc: service %s (%s) has no methods of the form func(context.Context, T, *R) error", name, t)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for full := range s.methods {
		if strings.HasPrefix(full, name+".") {
			return fmt.Errorf("rpc: service %s is already registered", name)
		}
	}
	for full, m := range found {
		s.methods[full] = m
	}
	return nil
}

// ServeHTTP serves one call: POST /Service.Method.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := strings.TrimPrefix(r.URL.Path, "/")
	body := &countingReader{r: r.Body}
	cw := &countingWriter{w: w}
	err := s.serve(cw, r, name, body)
	if err != nil && !cw.wrote {
		writeError(cw, err)
	}
	s.Metrics.observe(name, start, err, cw.n, body.n)
	if err != nil && cw.wrote {
		// The reply was streaming when it failed: reset the stream, so
		// that the client sees a failure rather than a short reply.
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) serve(w *countingWriter, r *http.Request, name string, body io.Reader) error {
	if r.Method != http.MethodPost {
		return &Error{Kind: Invalid, Method: name, Message: "calls are POST requests, not " + r.Method}
	}
	s.mu.RLock()
	m := s.methods[name]
	s.mu.RUnlock()
	if m == nil {
		return &Error{Kind: Invalid, Method: name, Message: "no such method"}
	}
	if s.Authorize != nil {
		if err := s.Authorize(r, name); err != nil {
			return &Error{Kind: Invalid, Method: name, Message: "not allowed: " + err.Error()}
		}
	}
	ctx := r.Context()
	if t := r.Header.Get(TimeoutHeader); t != "" {
		ns, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return &Error{Kind: Invalid, Method: name, Message: "bad " + TimeoutHeader + " header"}
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ns))
		defer cancel()
	}
	var arg reflect.Value
	if m.argRdr {
		arg = reflect.ValueOf(&body).Elem()
	} else {
		p := reflect.New(m.arg)
		data, err := io.ReadAll(body)
		if err != nil {
			return &Error{Kind: Network, Method: name, Message: "reading the argument: " + err.Error()}
		}
		if err := s.decoders.decode(data, p.Interface()); err != nil {
			return &Error{Kind: Invalid, Method: name, Message: "decoding the argument: " + err.Error()}
		}
		arg = p.Elem()
	}
	reply := reflect.New(m.reply)
	// A Value of the interface type itself spares Call an Implements check.
	out := m.fn.Call([]reflect.Value{m.rcvr, reflect.ValueOf(&ctx).Elem(), arg, reply})
	if err, _ := out[0].Interface().(error); err != nil {
		if c, ok := reply.Elem().Interface().(io.Closer); ok && m.replRdr {
			c.Close()
		}
		return remoteError(name, err)
	}
	if !m.replRdr {
		w.Header().Set("Content-Type", "application/x-gob")
		w.WriteHeader(http.StatusOK)
		return gob.NewEncoder(w).Encode(reply.Interface())
	}
	rd, _ := reply.Elem().Interface().(io.Reader)
	if rd == nil {
		return &Error{Kind: Remote, Method: name, Message: "the method returned a nil reader"}
	}
	if c, ok := rd.(io.Closer); ok {
		defer c.Close()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	w.wrote = true
	// Each piece goes out as it comes: a reply that trickles (a log being
	// tailed) must not wait in a buffer for more.
	if _, err := io.Copy(flushWriter{w, http.NewResponseController(w.w)}, rd); err != nil {
		return &Error{Kind: Remote, Method: name, Message: "streaming the reply: " + err.Error()}
	}
	return nil
}

// remoteError classifies what a method returned: its own Kind if it chose
// one, Remote otherwise.
func remoteError(name string, err error) error {
	var e *Error
	switch {
	case errors.As(err, &e) && err == error(e):
		// Its message, not its Error(), which would say the kind twice.
		msg := e.Message
		if e.Err != nil {
			msg = strings.TrimPrefix(msg+": "+e.Err.Error(), ": ")
		}
		return &Error{Kind: e.Kind, Method: name, Message: msg}
	case e != nil:
		return &Error{Kind: e.Kind, Method: name, Message: err.Error()}
	}
	return &Error{Kind: Remote, Method: name, Message: err.Error()}
}

func writeError(w http.ResponseWriter, err error) {
	we := wireError{Kind: Remote, Message: err.Error()}
	var e *Error
	if errors.As(err, &e) {
		we = wireError{Kind: e.Kind, Message: e.Message}
	}
	status := http.StatusInternalServerError
	switch we.Kind {
	case Invalid:
		status = http.StatusBadRequest
		if strings.HasPrefix(we.Message, "not allowed") {
			status = http.StatusForbidden
		}
	case Unavailable:
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/x-gob")
	w.WriteHeader(status)
	gob.NewEncoder(w).Encode(we)
}

type flushWriter struct {
	w io.Writer
	f *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.f.Flush()
	}
	return n, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	w     http.ResponseWriter
	n     int64
	wrote bool // a streamed reply has begun
}

func (c *countingWriter) Header() http.Header  { return c.w.Header() }
func (c *countingWriter) WriteHeader(code int) { c.w.WriteHeader(code) }
func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// HTTP2Config returns the HTTP/2 settings for RPC servers and transports:
// flow-control windows large enough that a streamed io.Reader is not held
// back by acknowledgements on a fast network.
func HTTP2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxReadFrameSize:              1 << 20,
		MaxReceiveBufferPerConnection: 4<<20 - 1,
		MaxReceiveBufferPerStream:     4<<20 - 1,
	}
}

package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// HTTPClient returns an HTTP/2 client with cfg and the RPC's HTTP/2
// settings, for systems to hand the driver.
func HTTPClient(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: true,
		HTTP2:             HTTP2Config(),
		DialContext:       (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
}

// A Client makes calls over an HTTP client that speaks to servers at one or
// more base URLs.
type Client struct {
	HTTP *http.Client
	// Metrics, if set, counts the calls made.
	Metrics *Metrics

	decoders decoderPool
}

// Call calls method ("Service.Method") on the server at base (such as
// "https://10.0.0.2:8443") with arg and decodes the result into reply, a
// pointer. When arg is an io.Reader it is streamed as the request body.
// When reply is an *io.ReadCloser it receives the streamed reply, which the
// caller must close and which ends when ctx does.
//
// Every error Call returns is an *Error: errors.Is(err, Network) says the
// call may be retried, errors.Is(err, Invalid) that it must not be.
func (c *Client) Call(ctx context.Context, base, method string, arg, reply any) error {
	start := time.Now()
	var (
		body io.Reader
		sent *countingReader
	)
	if r, ok := arg.(io.Reader); ok {
		sent = &countingReader{r: r}
		body = sent
	} else {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(arg); err != nil {
			err = &Error{Kind: Invalid, Method: method, Message: "encoding the argument", Err: err}
			c.Metrics.observe(method, start, err, 0, 0)
			return err
		}
		// A bytes.Reader gives the request a known length, which lets
		// HTTP/2 send headers and body without a separate body writer.
		sent = &countingReader{n: int64(buf.Len())}
		body = bytes.NewReader(buf.Bytes())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/"+method, body)
	if err != nil {
		return &Error{Kind: Invalid, Method: method, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-gob")
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set(TimeoutHeader, strconv.FormatInt(int64(time.Until(dl)), 10))
	}
	got := &countingReader{}
	err = c.do(req, method, reply, got)
	c.Metrics.observe(method, start, err, sent.n, got.n)
	return err
}

func (c *Client) do(req *http.Request, method string, reply any, got *countingReader) error {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return &Error{Kind: Network, Method: method, Err: err}
	}
	got.r = resp.Body
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var we wireError
		if err := gob.NewDecoder(io.LimitReader(got, 1<<20)).Decode(&we); err != nil || we.Kind == 0 {
			// Not our server's answer: a proxy, or a server cut short.
			return &Error{Kind: Network, Method: method, Message: fmt.Sprintf("HTTP %s without an RPC error", resp.Status)}
		}
		return &Error{Kind: we.Kind, Method: method, Message: we.Message}
	}
	switch r := reply.(type) {
	case *io.ReadCloser:
		*r = &replyStream{rc: resp.Body, r: got, method: method}
		return nil
	case *io.Reader:
		*r = &replyStream{rc: resp.Body, r: got, method: method}
		return nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(got)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			err = ctxErr
		}
		return &Error{Kind: Network, Method: method, Message: "reading the reply", Err: err}
	}
	if err := c.decoders.decode(data, reply); err != nil {
		return &Error{Kind: Invalid, Method: method, Message: "decoding the reply", Err: err}
	}
	return nil
}

// replyStream is a streamed reply; its read errors are Network errors, so a
// stream the server reset is not mistaken for a short reply.
type replyStream struct {
	rc     io.ReadCloser
	r      io.Reader
	method string
}

func (s *replyStream) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &Error{Kind: Network, Method: s.method, Message: "reading the reply stream", Err: err}
	}
	return n, err
}

func (s *replyStream) Close() error { return s.rc.Close() }

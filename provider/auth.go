package provider

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
)

func (s *Server) principal(r *http.Request) (Principal, bool) {
	if p, ok := r.Context().Value(sessionKey{}).(Principal); ok {
		return p, true // a signed-in browser's, on a page (see page)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || len(r.Header.Values("Authorization")) > 1 { // two: which one is meant?
		return Principal{}, false
	}
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) == 1 {
			return Principal{Name: t.Name, Role: t.Role}, true
		}
	}
	return Principal{}, false
}

func (s *Server) authorize(r *http.Request, roles []string) error {
	p, ok := s.principal(r)
	if !ok {
		return newError("unauthenticated", "missing or unknown bearer token: send Authorization: Bearer TOKEN with a token from the provider's configuration")
	}
	for _, role := range roles {
		if p.Role == role {
			return nil
		}
	}
	return newError("forbidden", fmt.Sprintf("%s (%s) may not %s %s", p.Name, p.Role, r.Method, r.URL.Path))
}

package emulator_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gcefleet/gcefleet/emulator"
)

// TestIdentityToken asks an instance's metadata server for identity
// tokens as GCE's is asked, and checks them against the keys the emulator
// publishes where Google publishes its own: the JWK set and the PEM
// certificates are the same key, and a full token names the instance.
func TestIdentityToken(t *testing.T) {
	e := start(t, workloadOptions(t))
	e.ok(t)(e.svc.Instances.Insert(proj, zone, containerVM("idvm", "Never")).Do())
	in, _ := e.svc.Instances.Get(proj, zone, "idvm").Do()
	addr := net.JoinHostPort(in.NetworkInterfaces[0].NetworkIP, "8080")
	waitFor(t, "the workload", func() bool { return strings.Contains(serial(t, e, "idvm"), "listening on "+addr) })
	host := metadataHost(t, e, "idvm")
	get := func(u string, header bool) (int, string) {
		req, _ := http.NewRequest("GET", u, nil)
		if header {
			req.Header.Set("Metadata-Flavor", "Google")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	identity := "http://" + host + "/computeMetadata/v1/instance/service-accounts/default/identity"
	if code, body := get(identity, true); code != 400 || !strings.Contains(body, "non-empty audience parameter required") {
		t.Errorf("without an audience: %d %q", code, body)
	}
	if code, _ := get(identity+"?audience=x", false); code != 403 {
		t.Errorf("without Metadata-Flavor: %d, want 403", code)
	}
	code, full := get(identity+"?format=full&audience="+url.QueryEscape("https://example.com/x"), true)
	if code != 200 {
		t.Fatalf("full token: %d %s", code, full)
	}

	code, body := get(e.url+emulator.IdentityJWKSPath, false)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); code != 200 || err != nil || len(set.Keys) != 1 || set.Keys[0].Algorithm != "RS256" || set.Keys[0].Use != "sig" {
		t.Fatalf("%s: %d %s (%v)", emulator.IdentityJWKSPath, code, body, err)
	}
	code, body = get(e.url+emulator.IdentityCertsPath, false)
	var certs map[string]string
	if err := json.Unmarshal([]byte(body), &certs); code != 200 || err != nil || certs[set.Keys[0].KeyID] == "" {
		t.Fatalf("%s: %d %s (%v)", emulator.IdentityCertsPath, code, body, err)
	}
	block, _ := pem.Decode([]byte(certs[set.Keys[0].KeyID]))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.PublicKey.(*rsa.PublicKey).Equal(set.Keys[0].Key) {
		t.Fatalf("the PEM certificate is not the JWK set's key: %v", err)
	}

	tok, err := jwt.ParseSigned(full, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil || tok.Headers[0].KeyID != set.Keys[0].KeyID {
		t.Fatalf("token %q: %v", full, err)
	}
	var std jwt.Claims
	var g struct {
		Email  string `json:"email"`
		Google struct {
			CE map[string]any `json:"compute_engine"`
		} `json:"google"`
	}
	if err := tok.Claims(set.Keys[0].Key, &std, &g); err != nil {
		t.Fatal(err)
	}
	if err := std.Validate(jwt.Expected{Issuer: "https://accounts.google.com", AnyAudience: jwt.Audience{"https://example.com/x"}}); err != nil {
		t.Errorf("claims %+v: %v", std, err)
	}
	ce := g.Google.CE
	if ce["instance_id"] != strconv.FormatUint(in.Id, 10) || ce["instance_name"] != "idvm" || ce["project_id"] != proj || ce["zone"] != zone || g.Email == "" {
		t.Errorf("compute_engine claims %v, email %q", ce, g.Email)
	}
	// The standard format leaves them out.
	_, std2 := get(identity+"?audience=a", true)
	var plain map[string]any
	tok2, err := jwt.ParseSigned(std2, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("standard token %q: %v", std2, err)
	}
	if err := tok2.Claims(set.Keys[0].Key, &plain); err != nil || plain["google"] != nil || plain["aud"] != "a" {
		t.Errorf("standard token claims %v, %v; want no google claims", plain, err)
	}
}

package gce_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/bigmachine"
	"github.com/gcefleet/gcefleet/bigmachine/rpc"
	"github.com/gcefleet/gcefleet/identity"
	"github.com/gcefleet/gcefleet/system/gce"
	"github.com/gcefleet/gcefleet/system/gce/instance"
)

// TestMetadataHoldsNoKey starts machines and reads every instance's
// metadata as any viewer of the project can: no value may hold a private
// key, in PEM or as key material, however encoded (JSON, base64). Then a
// peer that holds everything the metadata holds (the run's CA certificate
// and nonce) tries to call a machine's service, as the driver and as a
// machine of the run, with certificates of its own making: the machines
// refuse it. A service call by the driver still works, and the worker's
// /proc/PID/environ and cmdline hold no key either.
func TestMetadataHoldsNoKey(t *testing.T) {
	w := newWorld(t)
	_, ms, err := start(t, gce.New(w.config("us-central1-a")), 2)
	if err != nil {
		t.Fatal(err)
	}
	var boot instance.BootConfig
	for _, in := range w.instances(t, "us-central1-a") {
		for _, it := range in.GetMetadata().GetItems() {
			if why := keyIn([]byte(it.GetValue()), 0); why != "" {
				t.Errorf("instance %s metadata %s %s", in.GetName(), it.GetKey(), why)
			}
			if it.GetKey() == gce.BootKey {
				if boot, err = instance.DecodeBootConfig(it.GetValue()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if len(boot.CA) == 0 {
		t.Fatal("no instance has a boot configuration in its metadata")
	}

	// The peer trusts the run's CA (from metadata) and presents
	// certificates it made: self-signed, and issued by a CA of its own
	// under the run CA's subject.
	caBlock, _ := pem.Decode(boot.CA)
	runCA, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(runCA)
	forged := []struct {
		what string
		cert tls.Certificate
	}{
		{"a self-signed driver certificate", selfSignedAs(t, "driver", nil)},
		{"a driver certificate of a CA named as the run's", selfSignedAs(t, "driver", &runCA.Subject)},
		{"a self-signed certificate of a machine's name", selfSignedAs(t, ms[1].Name(), nil)},
	}
	ctx := context.Background()
	for _, m := range ms {
		for _, f := range forged {
			c := &rpc.Client{HTTP: rpc.HTTPClient(&tls.Config{RootCAs: roots, ServerName: m.Name(), Certificates: []tls.Certificate{f.cert}, MinVersion: tls.VersionTLS13})}
			err := c.Call(ctx, "https://"+m.Addr, "Hello.Pid", struct{}{}, new(int))
			if err == nil || !errors.Is(err, rpc.Network) {
				t.Errorf("%s called %s with %s: %v; want a refused handshake", "a peer with the metadata", m.Name(), f.what, err)
			}
		}
		// Nor can it enroll the machine again, or read its proof: the
		// enrollment endpoint is gone once the machine has its
		// certificate.
		e := &identity.Enroller{HTTP: identity.EnrollClient()}
		if _, err := e.Proof(ctx, m.Addr); err == nil {
			t.Errorf("%s still serves its enrollment after it was enrolled", m.Name())
		}
		var pid int
		if err := m.Call(ctx, "Hello.Pid", struct{}{}, &pid); err != nil {
			t.Fatalf("the driver's call to %s: %v", m.Name(), err)
		}
		// Nor is the key in the exec'd worker's environment or arguments.
		for _, f := range []string{"environ", "cmdline"} {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + f)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range bytes.Split(b, []byte{0}) {
				if why := keyIn(kv, 0); why != "" {
					t.Errorf("/proc/%d/%s of %s %s", pid, f, m.Name(), why)
				}
				if v, ok := bytes.CutPrefix(kv, []byte(bigmachine.EnvConfig+"=")); ok {
					if _, err := strconv.Atoi(string(v)); err != nil {
						t.Errorf("/proc/%d/%s of %s holds %s=%.20s...", pid, f, m.Name(), bigmachine.EnvConfig, v)
					}
				}
			}
		}
	}
}

// selfSignedAs returns a certificate for cn, self-signed, or signed by a
// fresh key under issuer's name when issuer is set.
func selfSignedAs(t *testing.T, cn string, issuer *pkix.Name) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	parent := tmpl
	if issuer != nil {
		parent = &x509.Certificate{Subject: *issuer}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// keyIn says what private key b holds, looking into PEM, JSON and base64
// down to a few levels, or "" if none.
func keyIn(b []byte, depth int) string {
	if depth > 4 || len(b) == 0 {
		return ""
	}
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		return "holds a PEM private key"
	}
	if _, err := x509.ParsePKCS8PrivateKey(b); err == nil {
		return "holds a PKCS #8 private key"
	}
	if _, err := x509.ParseECPrivateKey(b); err == nil {
		return "holds an EC private key"
	}
	if _, err := x509.ParsePKCS1PrivateKey(b); err == nil {
		return "holds an RSA private key"
	}
	var v any
	if json.Unmarshal(b, &v) == nil {
		if why := keyInJSON(v, depth); why != "" {
			return why
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if d, err := enc.DecodeString(strings.TrimSpace(string(b))); err == nil {
			if why := keyIn(d, depth+1); why != "" {
				return why
			}
		}
	}
	return ""
}

func keyInJSON(v any, depth int) string {
	switch v := v.(type) {
	case string:
		return keyIn([]byte(v), depth+1)
	case []any:
		for _, x := range v {
			if why := keyInJSON(x, depth); why != "" {
				return why
			}
		}
	case map[string]any:
		for _, x := range v {
			if why := keyInJSON(x, depth); why != "" {
				return why
			}
		}
	}
	return ""
}

// TestKeyInFindsTheOldConfiguration: the scan of TestMetadataHoldsNoKey
// finds the key in what the metadata held before machines made their own
// (bigmachine-config, a WorkerConfig with the machine's key).
func TestKeyInFindsTheOldConfiguration(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	old := bigmachine.WorkerConfig{Name: "m", Listen: ":8443", Cert: []byte("c"), CA: []byte("ca"), Key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})}
	if why := keyIn([]byte(old.Encode()), 0); why == "" {
		t.Error("the scan finds no key in an encoded WorkerConfig")
	}
	if why := keyIn(der, 0); why == "" {
		t.Error("the scan finds no key in a DER EC key")
	}
}

package claim

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// A pool machine's fleet certificate names its host (a DNS SAN) and its
// instance id, as the URI SAN InstanceURI: managed instance groups reuse
// names, so a certificate that named only the host would stay good for
// the name's next instance, and a machine deleted with its key (or who
// took it) could pass for that one.
const instanceURIPrefix = "gcefleet://instance/"

// MaxFleetCertLifetime is the longest validity CheckMachine takes: the
// backend issues fleet certificates for hours (those of the previous
// version, name-only and valid for years, are refused).
const MaxFleetCertLifetime = 24 * time.Hour

// InstanceURI returns the URI SAN of instance id in a fleet certificate.
func InstanceURI(id string) *url.URL {
	u, _ := url.Parse(instanceURIPrefix + url.PathEscape(id))
	return u
}

// CheckMachine checks that cert, a pool machine's fleet certificate
// (already verified by the fleet CA), is the one of instance id of host
// hostname, valid at now and for no longer than MaxFleetCertLifetime.
func CheckMachine(cert *x509.Certificate, hostname, instance string, now time.Time) error {
	if instance == "" {
		return errors.New("no instance id to check the machine's certificate by (its catalog entry names no instance_id)")
	}
	if err := cert.VerifyHostname(hostname); err != nil {
		return fmt.Errorf("the machine's fleet certificate: %w", err)
	}
	want := InstanceURI(instance).String()
	if !hasURI(cert, want) {
		var named []string
		for _, u := range cert.URIs {
			if strings.HasPrefix(u.String(), instanceURIPrefix) {
				named = append(named, u.String())
			}
		}
		if len(named) == 0 {
			return fmt.Errorf("the machine's fleet certificate names no instance (a certificate of the previous version), not instance %s of %s", instance, hostname)
		}
		return fmt.Errorf("the machine's fleet certificate is of instance %s, not %s of %s: another instance that had its name", strings.Join(named, ", "), want, hostname)
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fmt.Errorf("the machine's fleet certificate is valid from %s to %s, not now (%s)", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > MaxFleetCertLifetime {
		return fmt.Errorf("the machine's fleet certificate is valid for %v, longer than the %v a fleet certificate may be", life.Round(time.Hour), MaxFleetCertLifetime)
	}
	return nil
}

// VerifyMachine verifies chain, what a pool machine presented, by roots
// (the fleet CA) as the certificate of instance of hostname (CheckMachine)
// at now. A machine that serves a run (running) outlives its fleet
// certificate, which is valid for hours while a run may last days: for it
// the certificate is checked as of the end of its validity if that has
// passed. That is safe because it names the instance, whose id Compute
// Engine never gives another: it still proves the machine is the one the
// run is on, not a later holder of its name.
func VerifyMachine(chain []*x509.Certificate, roots *x509.CertPool, hostname, instance string, running bool, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the machine gave no certificate")
	}
	leaf := chain[0]
	at := now
	if running && now.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the machine's fleet certificate: %w", err)
	}
	return CheckMachine(leaf, hostname, instance, at)
}

func hasURI(cert *x509.Certificate, want string) bool {
	for _, u := range cert.URIs {
		if u.String() == want {
			return true
		}
	}
	return false
}

// instanceOf returns the instance id token names, without checking its
// signature: the driver has the token from the provider, and the machine
// checks it.
func instanceOf(token string) string {
	p, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return ""
	}
	var pl payload
	if json.Unmarshal(b, &pl) != nil {
		return ""
	}
	return pl.Instance
}

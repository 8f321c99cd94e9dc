package instance

import (
	"strings"
	"testing"
	"time"
)

func TestDecodePoolConfig(t *testing.T) {
	key := "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	good := PoolConfig{ClaimKey: key, FleetCA: []byte("-----BEGIN CERTIFICATE-----"), Deployment: "d-1", Listen: ":8443", Timeout: time.Second}
	got, err := DecodePoolConfig(good.Encode())
	if err != nil || got.ClaimKey != key || got.Listen != ":8443" || got.Timeout != time.Second {
		t.Fatalf("DecodePoolConfig(Encode) = %+v, %v", got, err)
	}
	if got.Control != ":8444" {
		t.Errorf("a configuration without a control address: control %q, want the default :8444", got.Control)
	}
	withControl := good
	withControl.Control = ":9444"
	if got, err := DecodePoolConfig(withControl.Encode()); err != nil || got.Control != ":9444" {
		t.Errorf("DecodePoolConfig with control :9444 = %+v, %v", got, err)
	}
	for name, c := range map[string]PoolConfig{
		"no claim key":  {FleetCA: good.FleetCA, Deployment: "d-1", Listen: ":8443"},
		"bad claim key": {ClaimKey: "abc", FleetCA: good.FleetCA, Deployment: "d-1", Listen: ":8443"},
		"no fleet CA":   {ClaimKey: key, Deployment: "d-1", Listen: ":8443"},
		"no deployment": {ClaimKey: key, FleetCA: good.FleetCA, Listen: ":8443"},
		"no address":    {ClaimKey: key, FleetCA: good.FleetCA, Deployment: "d-1"},
	} {
		if _, err := DecodePoolConfig(c.Encode()); err == nil || !strings.Contains(err.Error(), PoolKey) {
			t.Errorf("%s: %v, want an error naming %s", name, err, PoolKey)
		}
	}
	if _, err := DecodePoolConfig("{"); err == nil {
		t.Error("took bad JSON")
	}
}

// TestDecodePoolConfigOldNonce: the metadata of the previous version's
// templates names the deployment "nonce"; warm machines made from them
// still decode it, and "deployment" wins when both are there.
func TestDecodePoolConfigOldNonce(t *testing.T) {
	key := "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	for _, tc := range []struct{ meta, want string }{
		{`{"claim_key":"` + key + `","fleet_ca":"LS0t","nonce":"d-old","listen":":8443"}`, "d-old"},
		{`{"claim_key":"` + key + `","fleet_ca":"LS0t","deployment":"d-new","listen":":8443"}`, "d-new"},
		{`{"claim_key":"` + key + `","fleet_ca":"LS0t","nonce":"d-old","deployment":"d-new","listen":":8443"}`, "d-new"},
	} {
		got, err := DecodePoolConfig(tc.meta)
		if err != nil || got.Deployment != tc.want {
			t.Errorf("DecodePoolConfig(%s) = %q, %v; want deployment %q", tc.meta, got.Deployment, err, tc.want)
		}
	}
	if s := (PoolConfig{ClaimKey: key, FleetCA: []byte("x"), Deployment: "d", Listen: ":1"}).Encode(); !strings.Contains(s, `"deployment":"d"`) || strings.Contains(s, "nonce") {
		t.Errorf("Encode = %s, want the deployment under \"deployment\"", s)
	}
}

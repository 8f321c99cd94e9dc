package instance

import (
	"strings"
	"testing"
	"time"
)

func TestDecodePoolConfig(t *testing.T) {
	key := "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	good := PoolConfig{ClaimKey: key, FleetCA: []byte("-----BEGIN CERTIFICATE-----"), Nonce: "d-1", Listen: ":8443", Timeout: time.Second}
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
		"no claim key":  {FleetCA: good.FleetCA, Nonce: "d-1", Listen: ":8443"},
		"bad claim key": {ClaimKey: "abc", FleetCA: good.FleetCA, Nonce: "d-1", Listen: ":8443"},
		"no fleet CA":   {ClaimKey: key, Nonce: "d-1", Listen: ":8443"},
		"no nonce":      {ClaimKey: key, FleetCA: good.FleetCA, Listen: ":8443"},
		"no address":    {ClaimKey: key, FleetCA: good.FleetCA, Nonce: "d-1"},
	} {
		if _, err := DecodePoolConfig(c.Encode()); err == nil || !strings.Contains(err.Error(), PoolKey) {
			t.Errorf("%s: %v, want an error naming %s", name, err, PoolKey)
		}
	}
	if _, err := DecodePoolConfig("{"); err == nil {
		t.Error("took bad JSON")
	}
}

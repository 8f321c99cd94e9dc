package bigmachine

import (
	"testing"
	"time"
)

func TestRoundDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		7771020510 * time.Nanosecond: "7.8s",
		1234567 * time.Nanosecond:    "1ms",
		192400 * time.Millisecond:    "3m12s",
		7512 * time.Second:           "2h5m",
		2 * time.Hour:                "2h0m",
	} {
		if got := roundDuration(d); got != want {
			t.Errorf("roundDuration(%v) = %q; want %q", d, got, want)
		}
	}
}

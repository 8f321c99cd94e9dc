package backend_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gcefleet/gcefleet/backend"
)

const scheduled = poolTemplate + `managers:
  - template_base_name: pool
    zone: us-central1-a
    minimum_size: 2
    maximum_size: 40
    schedules:
      - days: [mon, tue, wed, thu, fri]
        hours: "08:00-18:00"
        time_zone: Europe/Berlin
        minimum_size: 20
        min_idle: 5
      - days: [sat]
        hours: "22:00-01:00"
        time_zone: UTC
        min_idle: 1
      - days: [sun]
        hours: "01:00-04:00"
        time_zone: Europe/Berlin
        minimum_size: 3
`

// TestScheduleBoundaries: the window in force and the next change, at
// and around each boundary, in each window's time zone, across midnight
// and on the days Berlin's clocks change.
func TestScheduleBoundaries(t *testing.T) {
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(scheduled))
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Managers[0]
	utc := func(s string) time.Time {
		at, err := time.Parse("2006-01-02 15:04:05", s)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	for _, c := range []struct {
		name, at      string
		window        int // -1: the manager's own
		minimum, idle int
		next          string
		nextWindow    int
	}{
		{"Tuesday 07:59 in Berlin (CET)", "2026-12-01 06:59:59", -1, 2, 0, "2026-12-01 07:00:00", 0},
		{"Tuesday 08:00 in Berlin", "2026-12-01 07:00:00", 0, 20, 5, "2026-12-01 17:00:00", -1},
		{"Tuesday 17:59:59 in Berlin", "2026-12-01 16:59:59", 0, 20, 5, "2026-12-01 17:00:00", -1},
		{"Tuesday 18:00 in Berlin", "2026-12-01 17:00:00", -1, 2, 0, "2026-12-02 07:00:00", 0},
		{"Friday evening: the next is Saturday night's", "2026-12-04 17:00:00", -1, 2, 0, "2026-12-05 22:00:00", 1},
		{"Saturday night, its own minimum", "2026-12-05 23:30:00", 1, 2, 1, "2026-12-06 01:00:00", 2},
		{"across midnight into Sunday", "2026-12-06 00:59:00", 1, 2, 1, "2026-12-06 01:00:00", 2},
		{"Sunday 02:00 in Berlin", "2026-12-06 01:00:00", 2, 3, 0, "2026-12-06 03:00:00", -1},
		{"Sunday after it", "2026-12-06 03:00:00", -1, 2, 0, "2026-12-07 07:00:00", 0},
		{"Friday before the change to summer time", "2026-03-27 06:30:00", -1, 2, 0, "2026-03-27 07:00:00", 0},
		// 29 March 2026: Berlin's clocks go from 02:00 CET to 03:00 CEST;
		// the Sunday window 01:00-04:00 local lasts two hours.
		{"DST day, Saturday's window", "2026-03-29 00:30:00", 1, 2, 1, "2026-03-29 01:00:00", 2},
		{"DST day, 03:00 CEST", "2026-03-29 01:00:00", 2, 3, 0, "2026-03-29 02:00:00", -1},
		{"Monday 07:00 CEST is 05:00 UTC", "2026-03-30 05:00:00", -1, 2, 0, "2026-03-30 06:00:00", 0},
		{"Monday 08:00 CEST", "2026-03-30 06:00:00", 0, 20, 5, "2026-03-30 16:00:00", -1},
		// 25 October 2026: back from 03:00 CEST to 02:00 CET; 01:00-04:00
		// local lasts four hours.
		{"the night of the change back", "2026-10-24 23:00:00", 1, 2, 1, "2026-10-25 01:00:00", 2},
		{"02:00 CET, the second time", "2026-10-25 01:00:00", 2, 3, 0, "2026-10-25 03:00:00", -1},
		{"Monday after, 08:00 CET", "2026-10-26 07:00:00", 0, 20, 5, "2026-10-26 17:00:00", -1},
	} {
		at := utc(c.at)
		w := m.InForce(at)
		if w.Index != c.window || w.MinimumSize != c.minimum || w.MinIdle != c.idle {
			t.Errorf("%s (%s UTC): window %d %q minimum %d min_idle %d, want window %d minimum %d min_idle %d",
				c.name, c.at, w.Index, w.Name, w.MinimumSize, w.MinIdle, c.window, c.minimum, c.idle)
		}
		next, nw := m.NextChange(at)
		if !next.Equal(utc(c.next)) || nw.Index != c.nextWindow {
			t.Errorf("%s (%s UTC): next change %v to window %d, want %s UTC to window %d", c.name, c.at, next.UTC(), nw.Index, c.next, c.nextWindow)
		}
	}
	// Without schedules nothing changes.
	if next, w := cfg.Managers[0].NextChange(utc("2026-12-01 00:00:00")); next.IsZero() || w.Index != 0 {
		t.Errorf("scheduled manager: next %v %d", next, w.Index)
	}
	plain, err := backend.ParseConfig("fleet.yaml", []byte(poolTemplate+"managers:\n  - {template_base_name: pool, zone: us-central1-a, minimum_size: 2, maximum_size: 4, min_idle: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if next, w := plain.Managers[0].NextChange(utc("2026-12-01 00:00:00")); !next.IsZero() || w.Index != -1 || w.MinIdle != 1 || w.MinimumSize != 2 {
		t.Errorf("a manager without schedules: next %v, window %+v", next, w)
	}
}

// TestScheduleConfigErrors: each bad schedule, min_idle and idle_timeout
// is refused at its line, saying how to write it.
func TestScheduleConfigErrors(t *testing.T) {
	const head = poolTemplate + `managers:
  - template_base_name: pool
    zone: us-central1-a
    minimum_size: 2
    maximum_size: 10
`
	for _, c := range []struct{ name, yaml, want string }{
		{"bad day", head + "    schedules:\n      - {days: [monday], hours: \"08:00-18:00\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: day "monday": write mon, tue, wed, thu, fri, sat or sun, e.g. days: [mon, tue, wed, thu, fri]`},
		{"no days", head + "    schedules:\n      - {hours: \"08:00-18:00\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: days is required: the days the window begins on, e.g. days: [mon, tue, wed, thu, fri]`},
		{"no hours", head + "    schedules:\n      - {days: [mon], time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: hours is required: the window's start and end as 24-hour times, e.g. hours: "08:00-18:00"`},
		{"hours without an end", head + "    schedules:\n      - {days: [mon], hours: \"08:00\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: hours "08:00": no start and end: write the start and end as 24-hour times, e.g. hours: "08:00-18:00" (an end before the start ends the next day; 24:00 is midnight)`},
		{"hours not a time", head + "    schedules:\n      - {days: [mon], hours: \"8am-6pm\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: hours "8am-6pm": "8am" is not HH:MM: write the start and end as 24-hour times, e.g. hours: "08:00-18:00" (an end before the start ends the next day; 24:00 is midnight)`},
		{"hours out of range", head + "    schedules:\n      - {days: [mon], hours: \"08:00-25:00\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: hours "08:00-25:00": "25:00" is not a time of day: write the start and end as 24-hour times, e.g. hours: "08:00-18:00" (an end before the start ends the next day; 24:00 is midnight)`},
		{"empty window", head + "    schedules:\n      - {days: [mon], hours: \"08:00-08:00\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: hours "08:00-08:00": the window is empty or the whole day: write the start and end as 24-hour times, e.g. hours: "08:00-18:00" (an end before the start ends the next day; 24:00 is midnight) (for every hour, give the manager's own minimum_size)`},
		{"unknown zone", head + "    schedules:\n      - {days: [mon], hours: \"08:00-18:00\", time_zone: Europe/Berlinn, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: time_zone "Europe/Berlinn" is not a time zone: write an IANA name such as Europe/Berlin, America/New_York or UTC`},
		{"no zone", head + "    schedules:\n      - {days: [mon], hours: \"08:00-18:00\", minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: time_zone is required: an IANA time zone such as Europe/Berlin, America/New_York or UTC`},
		{"window minimum above the maximum", head + "    schedules:\n      - {days: [mon], hours: \"08:00-18:00\", time_zone: UTC}\n      - {days: [tue], hours: \"08:00-18:00\", time_zone: UTC, minimum_size: 11}\n",
			"fleet.yaml:13: manager of pool in us-central1-a: schedule 1: give the window's minimum_size, min_idle or both, e.g. minimum_size: 20\n" +
				`fleet.yaml:14: manager of pool in us-central1-a: schedule 2: minimum_size 11 is above the manager's maximum_size 10: lower it or raise maximum_size`},
		{"min_idle negative", head + "    min_idle: -1\n",
			`fleet.yaml:12: manager of pool in us-central1-a: min_idle -1 is negative: give how many machines to keep available beyond those leased, e.g. min_idle: 2 (0, the default, keeps none)`},
		{"min_idle above the maximum", head + "    min_idle: 11\n",
			`fleet.yaml:12: manager of pool in us-central1-a: min_idle 11 is above maximum_size 10: the group could never keep that many available`},
		{"idle_timeout negative", head + "    idle_timeout: -5m\n",
			`fleet.yaml:12: manager of pool in us-central1-a: idle_timeout -5m0s is negative: give how long a surplus machine may stay idle before it is deleted, e.g. idle_timeout: 30m (0, the default, never deletes idle machines)`},
		{"idle_timeout under a second", head + "    idle_timeout: 1ns\n",
			`fleet.yaml:12: manager of pool in us-central1-a: idle_timeout 1ns is under a second: a machine would be deleted the moment it is idle; give a time such as idle_timeout: 30m (0, the default, never deletes idle machines)`},
		{"a day twice", head + "    schedules:\n      - {days: [mon, Mon], hours: \"08:00-18:00\", time_zone: UTC, minimum_size: 3}\n",
			`fleet.yaml:13: manager of pool in us-central1-a: schedule 1: day "Mon" is given twice: name each day once`},
		// A schedule written as a block is blamed at the key's own line.
		{"a block schedule's bad key", head + "    schedules:\n      - days: [mon]\n        hours: \"08:00-18:00\"\n        time_zone: Mars/Olympus\n        min_idle: 11\n",
			"fleet.yaml:15: manager of pool in us-central1-a: schedule 1: time_zone \"Mars/Olympus\" is not a time zone: write an IANA name such as Europe/Berlin, America/New_York or UTC\n" +
				`fleet.yaml:16: manager of pool in us-central1-a: schedule 1: min_idle 11 is above the manager's maximum_size 10: the group could never keep that many available`},
		{"too many windows", head + "    schedules:\n" + strings.Repeat("      - {days: [mon], hours: \"08:00-09:00\", time_zone: UTC, minimum_size: 3}\n", 51),
			`fleet.yaml:12: manager of pool in us-central1-a: 51 schedules: a manager has at most 50 windows; merge windows that share their sizes (a window names several days)`},
		{"idle_timeout not a duration", head + "    idle_timeout: soon\n",
			`fleet.yaml:12: "soon" is not a duration: write a number with a unit, such as 90s, 15m or 720h`},
	} {
		_, err := backend.ParseConfig("fleet.yaml", []byte(c.yaml))
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("%s:\n%v\nwant\n%s", c.name, err, c.want)
		}
	}
	cfg, err := backend.ParseConfig("fleet.yaml", []byte(head+"    min_idle: 3\n    idle_timeout: 10m\n"))
	if err != nil || cfg.Managers[0].MinIdle != 3 || cfg.Managers[0].IdleTimeout != 10*time.Minute {
		t.Errorf("min_idle 3, idle_timeout 10m: %+v, %v", cfg.Managers, err)
	}
	padded, err := backend.ParseConfig("fleet.yaml", []byte(head+"    schedules:\n      - {days: [mon], hours: \" 08:00 - 18:00 \", time_zone: UTC, minimum_size: 3}\n"))
	if err != nil || padded.Managers[0].Schedules[0].Hours != "08:00-18:00" {
		t.Errorf("hours written with spaces: %v, %v; want them read and shown as 08:00-18:00", err, padded.Managers)
	}
	if !strings.Contains(scheduled, "Europe/Berlin") {
		t.Fatal("the scheduled fixture lost its zone")
	}
}

// TestPlanSaysTheSpareAndTheWindow: plan makes a group at its min_idle
// when that is above its minimum, and resizes one below its window's
// minimum, naming the window.
func TestPlanSaysTheSpareAndTheWindow(t *testing.T) {
	j, _ := jobs(t, poolTemplate+`managers:
  - {template_base_name: pool, zone: us-central1-a, minimum_size: 1, maximum_size: 10, min_idle: 3,
     schedules: [{days: [tue], hours: "08:00-10:00", time_zone: UTC, minimum_size: 6}]}
`)
	ctx := context.Background()
	j.Now = func() time.Time { return time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC) }
	var create []string
	for _, c := range plan(t, j) {
		if c.Action == "create-group" {
			create = append(create, c.Detail)
		}
	}
	if len(create) != 1 || create[0] != "size 3, at most 10" {
		t.Errorf("plan of a group of minimum 1 and min_idle 3 creates %q", create)
	}
	for _, job := range []func(context.Context) error{j.CreateInstanceTemplates, j.CreateInstanceGroupManagers} {
		if err := job(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if p := plan(t, j); len(p) != 0 {
		t.Errorf("plan once the group is at its spare: %v", p)
	}
	j.Now = func() time.Time { return time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC) }
	if p := plan(t, j); len(p) != 1 || p[0].Action != "resize-group" || !strings.HasSuffix(p[0].Detail, "3 to 6, in window tue 08:00-10:00 UTC") {
		t.Errorf("plan in the window: %v", p)
	}
}

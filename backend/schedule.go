package backend

// This file is a manager's schedules: windows of days and hours in a time
// zone, each with its own minimum_size and min_idle, and which is in
// force at a given time.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Schedule is a window of days and hours in a time zone during which a
// manager keeps another minimum_size and min_idle than its own.
type Schedule struct {
	// Days are the days the window begins on: mon, tue, wed, thu, fri,
	// sat, sun.
	Days []string `yaml:"days"`
	// Hours is the window's start and end in the time zone, "08:00-18:00";
	// an end before the start ends on the next day ("22:00-06:00"), and
	// 24:00 is midnight at the day's end.
	Hours string `yaml:"hours"`
	// TimeZone is an IANA time zone, such as Europe/Berlin or UTC.
	TimeZone string `yaml:"time_zone"`
	// MinimumSize and MinIdle are in force during the window; one not
	// given is the manager's own.
	MinimumSize *int `yaml:"minimum_size"`
	MinIdle     *int `yaml:"min_idle"`

	Line  int            `yaml:"-"`
	lines map[string]int // the line of each key, for messages

	days       [7]bool // by time.Weekday
	start, end int     // minutes after midnight; end may be 1440
	loc        *time.Location
}

// Window is what a manager keeps at a time: a schedule's window, or the
// manager's own sizes outside every window.
type Window struct {
	// Index is the schedule's index in the manager's schedules, -1 for
	// none.
	Index       int
	Name        string // "mon,tue 08:00-18:00 Europe/Berlin", or "default"
	MinimumSize int
	MinIdle     int
}

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// parse checks s and keeps what InForce needs; each problem goes to bad,
// saying how to write it.
func (s *Schedule) parse(bad func(key, format string, args ...any)) {
	if len(s.Days) == 0 {
		bad("days", "days is required: the days the window begins on, e.g. days: [mon, tue, wed, thu, fri]")
	}
	for _, d := range s.Days {
		wd, ok := dayNames[strings.ToLower(d)]
		switch {
		case !ok:
			bad("days", "day %q: write mon, tue, wed, thu, fri, sat or sun, e.g. days: [mon, tue, wed, thu, fri]", d)
		case s.days[wd]:
			bad("days", "day %q is given twice: name each day once", d)
		default:
			s.days[wd] = true
		}
	}
	start, end, err := parseHours(s.Hours)
	switch {
	case s.Hours == "":
		bad("hours", `hours is required: the window's start and end as 24-hour times, e.g. hours: "08:00-18:00"`)
	case err != nil:
		bad("hours", "hours %q: %v", s.Hours, err)
	default:
		// As it is read, so that plan and the status page show it so.
		s.Hours = fmt.Sprintf("%02d:%02d-%02d:%02d", start/60, start%60, end/60, end%60)
	}
	s.start, s.end = start, end
	switch {
	case s.TimeZone == "":
		bad("time_zone", "time_zone is required: an IANA time zone such as Europe/Berlin, America/New_York or UTC")
	default:
		loc, err := time.LoadLocation(s.TimeZone)
		if err != nil || strings.EqualFold(s.TimeZone, "local") {
			bad("time_zone", "time_zone %q is not a time zone: write an IANA name such as Europe/Berlin, America/New_York or UTC", s.TimeZone)
		} else {
			s.loc = loc
		}
	}
}

// line is the line of the schedule's key for messages: its own, or the
// schedule's first.
func (s *Schedule) line(key string) int {
	if n := s.lines[key]; n > 0 {
		return n
	}
	return s.Line
}

// parseHours reads "HH:MM-HH:MM" as minutes after midnight.
func parseHours(h string) (start, end int, err error) {
	const how = `write the start and end as 24-hour times, e.g. hours: "08:00-18:00" (an end before the start ends the next day; 24:00 is midnight)`
	a, b, ok := strings.Cut(strings.ReplaceAll(h, " ", ""), "-")
	if !ok {
		return 0, 0, fmt.Errorf("no start and end: %s", how)
	}
	clock := func(s string, end bool) (int, error) {
		var hh, mm int
		digit := func(c byte) bool { return c >= '0' && c <= '9' }
		if len(s) != 5 || s[2] != ':' || !digit(s[0]) || !digit(s[1]) || !digit(s[3]) || !digit(s[4]) {
			return 0, fmt.Errorf("%q is not HH:MM: %s", s, how)
		}
		hh, mm = int(s[0]-'0')*10+int(s[1]-'0'), int(s[3]-'0')*10+int(s[4]-'0')
		if hh == 24 && mm == 0 && end {
			return 24 * 60, nil
		}
		if hh > 23 || mm > 59 {
			return 0, fmt.Errorf("%q is not a time of day: %s", s, how)
		}
		return hh*60 + mm, nil
	}
	if start, err = clock(a, false); err != nil {
		return 0, 0, err
	}
	if end, err = clock(b, true); err != nil {
		return 0, 0, err
	}
	if start == end || (end == 24*60 && start == 0) {
		return 0, 0, fmt.Errorf("the window is empty or the whole day: %s (for every hour, give the manager's own minimum_size)", how)
	}
	return start, end, nil
}

// name says the window as an operator wrote it.
func (s Schedule) name() string {
	return strings.Join(s.Days, ",") + " " + s.Hours + " " + s.TimeZone
}

// covers says whether t falls in s.
func (s Schedule) covers(t time.Time) bool {
	if s.loc == nil {
		return false
	}
	l := t.In(s.loc)
	tod := l.Hour()*60 + l.Minute()
	if s.start < s.end {
		return s.days[l.Weekday()] && tod >= s.start && tod < s.end
	}
	// Overnight: from start on a day of the window to end on the next.
	return (s.days[l.Weekday()] && tod >= s.start) || (s.days[(l.Weekday()+6)%7] && tod < s.end)
}

// InForce returns the window in force at t: the first of m's schedules
// that covers t, or the manager's own sizes.
func (m Manager) InForce(t time.Time) Window {
	for i, s := range m.Schedules {
		if s.covers(t) {
			w := Window{Index: i, Name: s.name(), MinimumSize: m.MinimumSize, MinIdle: m.MinIdle}
			if s.MinimumSize != nil {
				w.MinimumSize = *s.MinimumSize
			}
			if s.MinIdle != nil {
				w.MinIdle = *s.MinIdle
			}
			return w
		}
	}
	return Window{Index: -1, Name: "default", MinimumSize: m.MinimumSize, MinIdle: m.MinIdle}
}

// NextChange returns when the window in force after t next changes, and
// the window then; zero if m has no schedules.
func (m Manager) NextChange(t time.Time) (time.Time, Window) {
	if len(m.Schedules) == 0 {
		return time.Time{}, m.InForce(t)
	}
	now := m.InForce(t).Index
	// Every start and end of every window from the day before to eight
	// days on, in each window's own zone (time.Date places a boundary
	// on a day of a DST change where the zone's clocks put it).
	var at []time.Time
	for _, s := range m.Schedules {
		if s.loc == nil {
			continue
		}
		l := t.In(s.loc)
		for d := -1; d <= 8; d++ {
			day := time.Date(l.Year(), l.Month(), l.Day()+d, 0, 0, 0, 0, s.loc)
			for _, min := range []int{s.start, s.end} {
				b := time.Date(day.Year(), day.Month(), day.Day(), min/60, min%60, 0, 0, s.loc)
				if b.After(t) {
					at = append(at, b)
				}
			}
		}
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	for _, b := range at {
		if w := m.InForce(b); w.Index != now {
			return b, w
		}
	}
	return time.Time{}, m.InForce(t)
}

// atWindowChanges kicks resize-instance-groups and delete-idle-instances
// when a manager's window in force changes, so that a schedule takes
// effect at its hour rather than at the next interval. It looks again
// at least every interval, for a configuration reloaded meanwhile.
func (b *Backend) atWindowChanges(ctx context.Context) {
	for {
		j := b.jobs
		now := j.now()
		wait := j.Config().Settings.Interval
		for _, m := range j.Config().Managers {
			if next, _ := m.NextChange(now); !next.IsZero() {
				wait = min(wait, next.Sub(now))
			}
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if next := j.now(); b.windowsChanged(now, next) {
			b.sched.Kick("resize-instance-groups")
			b.sched.Kick("delete-idle-instances")
		}
	}
}

// windowsChanged says whether any manager's window in force at a differs
// from its window at b.
func (b *Backend) windowsChanged(at, then time.Time) bool {
	for _, m := range b.jobs.Config().Managers {
		if m.InForce(at).Index != m.InForce(then).Index {
			return true
		}
	}
	return false
}

// WindowInForce is a manager's window at a time and the next change.
type WindowInForce struct {
	Manager    string // template_base_name in zone
	Window     Window
	Next       time.Time // zero: no schedules, nothing changes
	NextWindow Window
}

// inForce is m's window at now and its next change.
func (m Manager) inForce(now time.Time) WindowInForce {
	next, nw := m.NextChange(now)
	return WindowInForce{Manager: m.TemplateBaseName + " in " + m.Zone, Window: m.InForce(now), Next: next, NextWindow: nw}
}

// Windows returns each configured manager's window in force now and
// when it next changes.
func (j *Jobs) Windows() []WindowInForce {
	now := j.now()
	var out []WindowInForce
	for _, m := range j.Config().Managers {
		out = append(out, m.inForce(now))
	}
	return out
}

// String says the window as gcefleet plan shows it.
func (w WindowInForce) String() string {
	s := fmt.Sprintf("window %s: %s (minimum %d, min_idle %d)", w.Manager, w.Window.Name, w.Window.MinimumSize, w.Window.MinIdle)
	if !w.Next.IsZero() {
		s += fmt.Sprintf("; from %s: %s (minimum %d, min_idle %d)", w.Next.Format("2006-01-02 15:04 MST"), w.NextWindow.Name, w.NextWindow.MinimumSize, w.NextWindow.MinIdle)
	}
	return s
}

package backend

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Scheduler runs each job on its interval, and at once when kicked (a
// lease reclaimed, the configuration changed), so that the fleet answers
// events in seconds rather than at the next pass. A job never runs twice
// at the same time; a failing job backs off, up to its interval.
type Scheduler struct {
	log       *slog.Logger
	durations *prometheus.HistogramVec
	mu        sync.Mutex
	jobs      map[string]*job
}

type job struct {
	name  string
	every time.Duration
	run   func(context.Context) error
	kick  chan struct{}

	mu      sync.Mutex
	runs    int
	lastRun time.Time
	lastErr error
	ran     chan struct{} // closed and replaced after every run
}

// JobStatus is what a job did last.
type JobStatus struct {
	Name    string
	Runs    int
	LastRun time.Time
	LastErr string
}

// NewScheduler returns a scheduler with no jobs.
func NewScheduler(log *slog.Logger) *Scheduler {
	return &Scheduler{log: log, jobs: map[string]*job{}, durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gcefleet_backend_job_seconds",
		Help:    "How long each run of a backend job took, by job and result (ok or error).",
		Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
	}, []string{"job", "result"})}
}

// Add registers a job to run every interval once Run starts.
func (s *Scheduler) Add(name string, every time.Duration, run func(context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[name] = &job{name: name, every: every, run: run, kick: make(chan struct{}, 1), ran: make(chan struct{})}
}

// Kick asks the named job to run as soon as it can; kicks while it runs
// make one more run, not one each.
func (s *Scheduler) Kick(name string) {
	s.mu.Lock()
	j := s.jobs[name]
	s.mu.Unlock()
	if j == nil {
		return
	}
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// Ran returns a channel closed after the named job's next run ends.
func (s *Scheduler) Ran(name string) <-chan struct{} {
	s.mu.Lock()
	j := s.jobs[name]
	s.mu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.ran
}

// Status returns every job's last run, by name.
func (s *Scheduler) Status() []JobStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []JobStatus
	for _, j := range s.jobs {
		j.mu.Lock()
		st := JobStatus{Name: j.name, Runs: j.runs, LastRun: j.lastRun}
		if j.lastErr != nil {
			st.LastErr = j.lastErr.Error()
		}
		j.mu.Unlock()
		out = append(out, st)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Run runs the jobs until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	s.mu.Lock()
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { s.loop(ctx, j) })
	}
	wg.Wait()
}

func (s *Scheduler) loop(ctx context.Context, j *job) {
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := j.run(ctx)
		result := "ok"
		if err != nil {
			result = "error"
		}
		s.durations.WithLabelValues(j.name, result).Observe(time.Since(start).Seconds())
		j.mu.Lock()
		j.runs++
		j.lastRun, j.lastErr = time.Now(), err
		close(j.ran)
		j.ran = make(chan struct{})
		j.mu.Unlock()
		wait := j.every
		if err != nil && ctx.Err() == nil {
			s.log.Error("backend job failed", "job", j.name, "err", err)
			wait = min(backoff, j.every)
			backoff = min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-j.kick:
			t.Stop()
		}
	}
}

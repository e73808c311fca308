package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/metastore-dev/metastore/mvcc"
)

// clock is the time source of background loops; tests substitute a fake.
type clock interface {
	Now() time.Time
	After(time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// revisionCompactInterval is how often revision-mode auto-compaction runs,
// as etcd's.
const revisionCompactInterval = 5 * time.Minute

// autoCompactor implements etcd's --auto-compaction-mode/-retention. It only
// proposes Compact requests; the compaction itself goes through Apply.
type autoCompactor struct {
	period    time.Duration // periodic mode: keep this much history
	retention int64         // revision mode: keep this many revisions
	rev       func() int64
	compact   func(ctx context.Context, rev int64) error
	clock     clock
	lg        *slog.Logger
}

func (a *autoCompactor) run(ctx context.Context) {
	switch {
	case a.period > 0:
		a.runPeriodic(ctx)
	case a.retention > 0:
		a.runRevision(ctx)
	}
}

// runPeriodic samples the revision every tenth of the period (capped at an
// hour) and compacts to the revision seen one period ago; after the first
// compaction it compacts at most once per period (capped at an hour), as etcd.
func (a *autoCompactor) runPeriodic(ctx context.Context) {
	interval := min(a.period, time.Hour)
	retry := interval / 10
	window := int(a.period/retry) + 1
	revs := make([]int64, 0, window+1)
	lastRev := int64(0)
	lastSuccess := a.clock.Now()
	base := a.period
	for {
		revs = append(revs, a.rev())
		if len(revs) > window {
			revs = revs[1:] // revs[0] is the revision one period ago
		}
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(retry):
		}
		rev := revs[0]
		if a.clock.Now().Sub(lastSuccess) < base || rev == lastRev {
			continue
		}
		base = interval
		if a.try(ctx, rev, "periodic") {
			lastRev, lastSuccess = rev, a.clock.Now()
		}
	}
}

// runRevision compacts every five minutes to the current revision minus the
// retention.
func (a *autoCompactor) runRevision(ctx context.Context) {
	prev := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(revisionCompactInterval):
		}
		rev := a.rev() - a.retention
		if rev <= 0 || rev == prev {
			continue
		}
		if a.try(ctx, rev, "revision") {
			prev = rev
		}
	}
}

func (a *autoCompactor) try(ctx context.Context, rev int64, mode string) bool {
	start := a.clock.Now()
	err := a.compact(ctx, rev)
	if err != nil && !errors.Is(err, mvcc.ErrCompacted) {
		a.lg.Warn("auto compaction failed", "mode", mode, "revision", rev, "err", err)
		return false
	}
	a.lg.Info("auto compaction done", "mode", mode, "revision", rev, "took", a.clock.Now().Sub(start))
	return true
}

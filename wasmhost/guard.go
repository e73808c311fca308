package wasmhost

import (
	"sync"
	"sync/atomic"
	"time"
)

// guard marks a policy degraded when it fails (trap, timeout, oom, bad
// result) DegradedErrors times within DegradedWindow; while degraded, new
// instances are created with backoff. The on_error rule keeps deciding the
// calls that fail. It leaves the degraded state after a window without
// failures.
type guard struct {
	degraded atomic.Bool
	mu       sync.Mutex
	limit    int
	window   time.Duration
	times    []time.Time // recent failures, oldest first
}

func (g *guard) init(l Limits) {
	g.mu.Lock()
	g.limit, g.window = l.DegradedErrors, l.DegradedWindow
	g.times = g.times[:0]
	g.mu.Unlock()
}

// failure records a failed call (cold path).
func (g *guard) failure(p *Policy) {
	now := time.Now()
	g.mu.Lock()
	g.times = append(g.times, now)
	cut := 0
	for cut < len(g.times) && now.Sub(g.times[cut]) > g.window {
		cut++
	}
	g.times = append(g.times[:0], g.times[cut:]...)
	enter := g.limit > 0 && len(g.times) >= g.limit && !g.degraded.Load()
	if enter {
		g.degraded.Store(true)
	}
	g.mu.Unlock()
	if enter {
		if f := p.host.events.Degraded; f != nil {
			f(p.name, true)
		}
	}
}

// ok records a successful call; it only takes the lock while degraded.
func (g *guard) ok(p *Policy) {
	if !g.degraded.Load() {
		return
	}
	g.mu.Lock()
	leave := g.degraded.Load() && (len(g.times) == 0 || time.Since(g.times[len(g.times)-1]) > g.window)
	if leave {
		g.degraded.Store(false)
		g.times = g.times[:0]
	}
	g.mu.Unlock()
	if leave {
		if f := p.host.events.Degraded; f != nil {
			f(p.name, false)
		}
	}
}

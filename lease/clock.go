package lease

import "time"

// Clock is the lessor's time source. Times from Now must carry a monotonic
// reading (time.Now's do), so that wall-clock jumps do not move deadlines.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped-or-running timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the lessor uses.
type Timer interface {
	C() <-chan time.Time
	// Reset makes the timer fire after d; a value from an earlier firing that
	// was not received is discarded (as time.Timer since Go 1.23).
	Reset(d time.Duration)
	Stop()
}

// RealClock is the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }

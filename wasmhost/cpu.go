package wasmhost

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Go cannot preempt a guest in compiled code: a guest call holds its OS
// thread and P until it returns or checks in with the host. A few hostile
// guests that each run to their deadline can so hold every P, and requests
// that never call a policy wait for one (measured: 11 looping clients on 2
// cores took another prefix's p99 from 2 to 24 ms). cpuSlots bounds how many
// guests run at once past their first fuel quantum, host-wide, below
// GOMAXPROCS, so that at least one P is always left to everything else.
//
// A call that stays within one quantum (~30–100 µs of guest code: every
// cheap policy) never meets it. A call that charges more asks for a slot at
// its check-in, where it is in Go code: waiting parks the goroutine and
// frees its P. The wait counts against the call's deadline, so a call still
// ends within its deadline plus one quantum.
//
// Three classes, in order of priority: calls (classNormal), instance
// initialisation (classInit: background work, but a pool needs it to serve)
// and calls of a throttled policy, one whose calls recently ended at their
// deadline or fuel budget (classThrottled). A free slot goes to the first
// waiter of the highest class; the two lower classes together hold at most
// low slots; and a holder gives its slot up at its next check-in when a
// waiter of a higher class appears. A looping policy therefore costs the
// others at most one quantum of waiting per check-in, and at most low of
// the GOMAXPROCS Ps.
type cpuSlots struct {
	mu      sync.Mutex
	n, low  int // slots, and at most low of them for the two lower classes
	used    int
	usedLow int
	waiting [classes][]*slotWaiter // by class, first come first served
	// waitingN[c] is len(waiting[c]), read at check-ins without the lock.
	waitingN [classes]atomic.Int32
	peak     int // most slots held at once (tests)
}

// Slot classes, highest priority first (instance.slot holds the class plus
// one; 0 is no slot).
const (
	classNormal = iota
	classInit
	classThrottled
	classes
)

type slotWaiter struct {
	ch    chan struct{}
	class int
}

// newCPUSlots sizes the slots for n (see Options.GuestSlots).
func newCPUSlots(n int) *cpuSlots {
	if n < 0 {
		return nil
	}
	if n == 0 {
		n = max(1, runtime.GOMAXPROCS(0)-1)
	}
	return &cpuSlots{n: n, low: max(1, n/2)}
}

func (s *cpuSlots) free(class int) bool {
	return s.used < s.n && (class == classNormal || s.usedLow < s.low)
}

func (s *cpuSlots) take(class int) {
	s.used++
	if class != classNormal {
		s.usedLow++
	}
	s.peak = max(s.peak, s.used)
}

// outranked reports whether a waiter of a class above class is queued.
func (s *cpuSlots) outranked(class int) bool {
	for c := 0; c < class; c++ {
		if s.waitingN[c].Load() > 0 {
			return true
		}
	}
	return false
}

// acquire takes a slot of class, waiting until deadline (monotonic; 0: no
// deadline). It reports whether it got one and whether it had to wait. A
// waiter never passes one of its own class or a higher one.
func (s *cpuSlots) acquire(class int, deadline int64) (ok, waited bool) {
	s.mu.Lock()
	if s.free(class) && !s.outranked(class+1) {
		s.take(class)
		s.mu.Unlock()
		return true, false
	}
	w := &slotWaiter{ch: make(chan struct{}, 1), class: class}
	s.waiting[class] = append(s.waiting[class], w)
	s.waitingN[class].Add(1)
	s.mu.Unlock()
	if deadline == 0 {
		<-w.ch
		return true, true
	}
	if left := time.Duration(deadline - monotonic()); left > 0 {
		t := time.NewTimer(left)
		defer t.Stop()
		select {
		case <-w.ch:
			return true, true
		case <-t.C:
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.waiting[class]
	for i, o := range q {
		if o == w {
			s.waiting[class] = append(q[:i:i], q[i+1:]...)
			s.waitingN[class].Add(-1)
			return false, true
		}
	}
	// Granted while the timer fired: give it back.
	s.releaseLocked(class)
	return false, true
}

// release gives back a slot of class and hands it on.
func (s *cpuSlots) release(class int) {
	s.mu.Lock()
	s.releaseLocked(class)
	s.mu.Unlock()
}

func (s *cpuSlots) releaseLocked(class int) {
	s.used--
	if class != classNormal {
		s.usedLow--
	}
	for c := 0; c < classes; c++ {
		for len(s.waiting[c]) > 0 && s.free(c) {
			w := s.waiting[c][0]
			s.waiting[c][0] = nil
			s.waiting[c] = s.waiting[c][1:]
			s.waitingN[c].Add(-1)
			s.take(c)
			w.ch <- struct{}{}
		}
		if len(s.waiting[c]) > 0 && c == classNormal {
			return // every slot is taken: none for the classes below
		}
	}
}

// throttleWindow is how long a policy stays throttled after a call of it
// ended at its deadline or fuel budget.
const throttleWindow = time.Second

// markThrottled marks p throttled for throttleWindow: a call of it ran to
// its deadline or fuel budget.
func (p *Policy) markThrottled() {
	now := monotonic()
	if old := p.throttledUntil.Swap(now + int64(throttleWindow)); old > now {
		return // already throttled
	}
	p.throttles.Add(1)
	if f := p.host.events.Throttled; f != nil {
		f(p.name)
	}
}

// throttled reports whether p's long calls are in the throttled class now.
func (p *Policy) throttled() bool { return p.throttledUntil.Load() > monotonic() }

// slotCheck runs at every check-in (from charge): a call that has charged
// a full fuel quantum (its guest code starts each call with one, so this
// is its first check-in), or hostSlotUnits of host work, needs a slot to
// go on, and a holder gives its
// slot up when a waiter of a higher class appears. It stops the call (the
// deadline) when no slot comes in time.
func (inst *instance) slotCheck() {
	s := inst.v.policy.host.cpu
	if s == nil || (inst.fuelUsed < fuelQuantum && inst.hostUnits < hostSlotUnits) {
		return
	}
	if inst.slot != 0 {
		held := int(inst.slot - 1)
		if !s.outranked(held) {
			return
		}
		s.release(held)
		inst.slot = 0
	}
	class := classNormal
	switch {
	case inst.initing:
		class = classInit
	case inst.v.policy.throttled():
		class = classThrottled
	}
	// A call's wait counts against its deadline. An init's does not: its
	// deadline bounds the guest's work, and inits queue behind calls and
	// each other (with many Go guests initialising at once under -race,
	// the queue alone passed the 1 s init deadline); every holder it
	// waits for is bounded by its own deadline.
	var deadline int64
	if inst.timeout > 0 && class != classInit {
		deadline = inst.callStart + inst.timeout
	}
	start := monotonic()
	ok, waited := s.acquire(class, deadline)
	if waited {
		d := monotonic() - start
		if class == classInit {
			inst.callStart += d
		}
		inst.v.policy.cpuWaited(class, time.Duration(d), ok)
	}
	if !ok {
		inst.timedOut, inst.slotTimedOut = true, true
		panic(errDeadline)
	}
	inst.slot = 1 + uint8(class)
}

// releaseSlot gives back the slot the call holds, if any.
func (inst *instance) releaseSlot() {
	if inst.slot != 0 {
		inst.v.policy.host.cpu.release(int(inst.slot - 1))
		inst.slot = 0
	}
}

var cpuClassNames = [classes]string{"normal", "init", "throttled"}

// cpuWaited counts a call that found no slot free and waited (ok: until
// it got one; else until its deadline).
func (p *Policy) cpuWaited(class int, d time.Duration, ok bool) {
	p.cpuWaits.Add(1)
	if !ok {
		p.cpuWaitTimeouts.Add(1)
	}
	if f := p.host.events.CPUWait; f != nil {
		f(p.name, cpuClassNames[class], d, ok)
	}
}

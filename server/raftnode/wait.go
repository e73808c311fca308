package raftnode

import (
	"sync"
	"time"
)

// result is what a waiting proposer receives.
type result struct {
	val any
	err error
}

// waitRegistry holds the proposers waiting for their entries, keyed by
// request ID; whichever goroutine applies the entry on this member answers.
type waitRegistry struct {
	mu     sync.Mutex
	m      map[uint64]waiter
	timed  int // waiters with a deadline
	closed error
}

type waiter struct {
	ch       chan result
	deadline time.Time // zero: none
}

// register adds id's waiter; expire answers it with ErrTimeout once
// deadline (unless zero) has passed.
func (w *waitRegistry) register(id uint64, deadline time.Time) (<-chan result, error) {
	ch := make(chan result, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed != nil {
		return nil, w.closed
	}
	if w.m == nil {
		w.m = make(map[uint64]waiter)
	}
	w.m[id] = waiter{ch: ch, deadline: deadline}
	if !deadline.IsZero() {
		w.timed++
	}
	return ch, nil
}

// remove deletes id's waiter; w.mu is held.
func (w *waitRegistry) remove(id uint64) waiter {
	x, ok := w.m[id]
	if ok {
		delete(w.m, id)
		if !x.deadline.IsZero() {
			w.timed--
		}
	}
	return x
}

// trigger answers id's waiter, if it is still waiting on this member.
func (w *waitRegistry) trigger(id uint64, r result) {
	w.mu.Lock()
	x := w.remove(id)
	w.mu.Unlock()
	if x.ch != nil {
		x.ch <- r
	}
}

// expire answers the waiters whose deadline is before now with
// ErrTimeout. The ready loop calls it on every tick: one sweep there costs
// less than a timer per proposal.
func (w *waitRegistry) expire(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timed == 0 {
		return
	}
	for id, x := range w.m {
		if !x.deadline.IsZero() && x.deadline.Before(now) {
			w.remove(id)
			x.ch <- result{err: ErrTimeout}
		}
	}
}

// pending returns how many proposers wait.
func (w *waitRegistry) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}

func (w *waitRegistry) cancel(id uint64) {
	w.mu.Lock()
	w.remove(id)
	w.mu.Unlock()
}

// closeAll answers every waiter with err and refuses new ones.
func (w *waitRegistry) closeAll(err error) {
	w.mu.Lock()
	m := w.m
	w.m, w.timed, w.closed = nil, 0, err
	w.mu.Unlock()
	for _, x := range m {
		x.ch <- result{err: err}
	}
}

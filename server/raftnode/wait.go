package raftnode

import "sync"

// result is what a waiting proposer receives.
type result struct {
	val any
	err error
}

// waitRegistry holds the proposers waiting for their entries, keyed by
// request ID; whichever goroutine applies the entry on this member answers.
type waitRegistry struct {
	mu     sync.Mutex
	m      map[uint64]chan result
	closed error
}

func (w *waitRegistry) register(id uint64) (<-chan result, error) {
	ch := make(chan result, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed != nil {
		return nil, w.closed
	}
	if w.m == nil {
		w.m = make(map[uint64]chan result)
	}
	w.m[id] = ch
	return ch, nil
}

// trigger answers id's waiter, if it is still waiting on this member.
func (w *waitRegistry) trigger(id uint64, r result) {
	w.mu.Lock()
	ch := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	if ch != nil {
		ch <- r
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
	delete(w.m, id)
	w.mu.Unlock()
}

// closeAll answers every waiter with err and refuses new ones.
func (w *waitRegistry) closeAll(err error) {
	w.mu.Lock()
	m := w.m
	w.m, w.closed = nil, err
	w.mu.Unlock()
	for _, ch := range m {
		ch <- result{err: err}
	}
}

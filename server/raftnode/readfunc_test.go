package raftnode

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// readFuncResult is what a ReadIndexFunc callback saw.
type readFuncResult struct {
	index, applied uint64
	err            error
}

// readFunc registers a ReadIndexFunc callback on m and returns the channel
// its result arrives on; a second call of the callback fails the test.
func readFunc(t *testing.T, n *Node) <-chan readFuncResult {
	got := make(chan readFuncResult, 1)
	var once sync.Once
	n.ReadIndexFunc(func(index uint64, err error) {
		called := false
		once.Do(func() {
			called = true
			got <- readFuncResult{index: index, applied: n.AppliedIndex(), err: err}
		})
		if !called {
			t.Error("a ReadIndexFunc callback was called twice")
		}
	})
	return got
}

// A ReadIndexFunc callback runs once, after its member applied every write
// acknowledged before the call, on the leader and on a follower, alone or
// with many others sharing rounds.
func TestReadIndexFunc(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	lead := c.leader(t)
	f := c.follower(lead)
	for i := range 10 {
		for _, m := range []*member{lead, f} {
			idx := propose(t, lead, fmt.Sprint("w", i))
			var chans []<-chan readFuncResult
			for range 1 + 10*(i%2) {
				chans = append(chans, readFunc(t, m.node))
			}
			for _, ch := range chans {
				select {
				case r := <-ch:
					if r.err != nil || r.index < idx || r.applied < idx {
						t.Fatalf("read on %s after a write at %d: index %d, applied %d, %v", FormatID(m.id), idx, r.index, r.applied, r.err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("a ReadIndexFunc callback on %s was not called", FormatID(m.id))
				}
			}
		}
	}
}

// Callbacks waiting when the node stops fail with ErrStopped, and one
// registered after the stop is called at once with it.
func TestReadIndexFuncStop(t *testing.T) {
	c := newCluster(t, 3)
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) { cfg.ReadIndexTimeout = time.Minute }
	}
	c.startAll()
	lead := c.leader(t)
	propose(t, lead, "before")
	lead.gate.setDown(true) // its rounds get no quorum
	var chans []<-chan readFuncResult
	for range 5 {
		chans = append(chans, readFunc(t, lead.node))
	}
	n := lead.node
	lead.stop()
	for _, ch := range chans {
		select {
		case r := <-ch:
			if !errors.Is(r.err, ErrStopped) {
				t.Fatalf("a read waiting at the stop: %v", r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a ReadIndexFunc callback waiting at the stop was not called")
		}
	}
	select {
	case r := <-readFunc(t, n):
		if !errors.Is(r.err, ErrStopped) {
			t.Fatalf("a read after the stop: %v", r.err)
		}
	default:
		t.Fatal("a ReadIndexFunc callback after the stop was not called at once")
	}
	lead.gate.setDown(false)
}

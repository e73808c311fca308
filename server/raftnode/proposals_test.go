package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// propRecorder records the MsgProps a member hands its transport.
type propRecorder struct {
	Transport
	mu    sync.Mutex
	props []int // entries per MsgProp
}

func (r *propRecorder) Send(msgs []raftpb.Message) {
	r.mu.Lock()
	for _, m := range msgs {
		if m.Type == raftpb.MsgProp {
			r.props = append(r.props, len(m.Entries))
		}
	}
	r.mu.Unlock()
	r.Transport.Send(msgs)
}

// Proposals made on a follower while its ready loop is busy reach the
// leader as one MsgProp, and every one is applied on every member.
func TestFollowerForwardsQueuedProposalsAsOneMessage(t *testing.T) {
	c := newCluster(t, 3)
	var hold atomic.Uint64 // the member whose ready loop blocks
	blocked, release := make(chan struct{}, 1), make(chan struct{})
	recs := map[uint64]*propRecorder{}
	for _, m := range c.members {
		rec := &propRecorder{}
		recs[m.id] = rec
		m.wrap = func(m *member, cfg *Config) {
			rec.Transport = cfg.Transport
			cfg.Transport = rec
			cfg.testHooks = &testHooks{readyStart: func(bool) {
				if hold.Load() == m.id {
					select {
					case blocked <- struct{}{}:
					default:
					}
					<-release
				}
			}}
		}
	}
	c.startAll()
	lead := c.leader(t)
	var f *member
	for _, m := range c.members {
		if m != lead {
			f = m
			break
		}
	}
	hold.Store(f.id)
	<-blocked // its next Ready (a heartbeat's, at the latest) holds the loop
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := f.node.Propose(ctx, fmt.Appendf(nil, "p%d", i))
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "the proposals to queue", func() bool {
		f.node.props.mu.Lock()
		defer f.node.props.mu.Unlock()
		return len(f.node.props.ents) == n
	})
	hold.Store(0)
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rec := recs[f.id]
	rec.mu.Lock()
	props := append([]int(nil), rec.props...)
	rec.mu.Unlock()
	if len(props) != 1 || props[0] != n {
		t.Fatalf("the follower forwarded MsgProps of %v entries, want one of %d", props, n)
	}
	c.waitConverged(t, n)
}

// A proposal given a timeout ends with ErrTimeout when no leader applies
// it in time, and leaves no waiter behind.
func TestProposeTimeoutWithoutLeader(t *testing.T) {
	c := newCluster(t, 3)
	m := c.members[0]
	m.start(c.clusterID, c.initialPeers(), true) // alone: no quorum, no leader
	t.Cleanup(m.stop)
	start := time.Now()
	_, err := m.node.ProposeTimeout(context.Background(), []byte("x"), 300*time.Millisecond)
	el := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if el < 300*time.Millisecond || el > 5*time.Second {
		t.Fatalf("timed out after %v, want 300ms and about a tick", el)
	}
	if p := m.node.Metrics().Pending; p != 0 {
		t.Fatalf("%d waiters left", p)
	}
	// Without a timeout the caller's context still ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := m.node.Propose(ctx, []byte("y")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
}

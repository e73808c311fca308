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
	props [][]int // per MsgProp, its entries' payload sizes
}

func (r *propRecorder) Send(msgs []raftpb.Message) {
	r.mu.Lock()
	for _, m := range msgs {
		if m.Type == raftpb.MsgProp {
			var sizes []int
			for _, e := range m.Entries {
				sizes = append(sizes, len(e.Data))
			}
			r.props = append(r.props, sizes)
		}
	}
	r.mu.Unlock()
	r.Transport.Send(msgs)
}

func (r *propRecorder) recorded() [][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]int(nil), r.props...)
}

// proposeOnHeldFollower proposes payloads concurrently on a follower of a
// 3-member cluster while its ready loop is held, releases it once all are
// queued, waits for every proposal, and returns what the follower
// forwarded.
func proposeOnHeldFollower(t *testing.T, payloads [][]byte) (*cluster, [][]int) {
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
	f := c.follower(lead)
	hold.Store(f.id)
	<-blocked // its next Ready (a heartbeat's, at the latest) holds the loop
	errs := make(chan error, len(payloads))
	for _, p := range payloads {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := f.node.Propose(ctx, p)
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "the proposals to queue", func() bool {
		f.node.props.mu.Lock()
		defer f.node.props.mu.Unlock()
		return len(f.node.props.ents) == len(payloads)
	})
	hold.Store(0)
	close(release)
	for range payloads {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return c, recs[f.id].recorded()
}

// Proposals made on a follower while its ready loop is busy reach the
// leader as one MsgProp, and every one is applied on every member.
func TestFollowerForwardsQueuedProposalsAsOneMessage(t *testing.T) {
	const n = 50
	var payloads [][]byte
	for i := range n {
		payloads = append(payloads, fmt.Appendf(nil, "p%d", i))
	}
	c, props := proposeOnHeldFollower(t, payloads)
	if len(props) != 1 || len(props[0]) != n {
		t.Fatalf("the follower forwarded MsgProps of %v, want one of %d entries", props, n)
	}
	c.waitConverged(t, n)
}

// A batch is cut into MsgProps of at most maxPropBatchBytes (an entry
// larger than that goes alone), so a forwarded batch of large requests
// stays inside a peer frame; none is lost.
func TestForwardedProposalBatchesAreBounded(t *testing.T) {
	defer func(v int) { maxPropBatchBytes = v }(maxPropBatchBytes)
	maxPropBatchBytes = 64 << 10 // the proportions of 4 MiB, at -race speed
	const k = 16 << 10
	sizes := []int{k, k, k, k, 1, maxPropBatchBytes + 1, 10, 3 * k, 2 * k}
	var payloads [][]byte
	for _, n := range sizes {
		payloads = append(payloads, make([]byte, n))
	}
	_, props := proposeOnHeldFollower(t, payloads)
	entries := 0
	for _, p := range props {
		sum := 0
		for _, n := range p {
			sum += n
		}
		if len(p) > 1 && sum > maxPropBatchBytes {
			t.Fatalf("a MsgProp of %d bytes in %d entries: %v", sum, len(p), props)
		}
		entries += len(p)
	}
	if entries != len(sizes) || len(props) < 4 {
		t.Fatalf("forwarded %v: want the %d entries in at least 4 MsgProps", props, len(sizes))
	}
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

package raftnode

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// countingTransport counts the messages a node hands its transport.
type countingTransport struct {
	Transport
	msgs *atomic.Int64
}

func (t countingTransport) Send(msgs []raftpb.Message) {
	t.msgs.Add(int64(len(msgs)))
	t.Transport.Send(msgs)
}

// BenchmarkProposeThreeMembers measures the Raft path of a 3-member group
// on loopback with real logs and the peer transport: 100 proposers spread
// over the members (two thirds of the proposals start on a follower and
// are forwarded), 256-byte payloads, etcd's default 100 ms tick. cpu-ns/op
// is the whole process (three members) per proposal; msgs/op the raft
// messages handed to the transports and fsyncs/op the synced log writes,
// summed over the members.
func BenchmarkProposeThreeMembers(b *testing.B) {
	c := newCluster(b, 3)
	var msgs, syncs atomic.Int64
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) {
			cfg.TickInterval = 100 * time.Millisecond
			cfg.Transport = countingTransport{Transport: cfg.Transport, msgs: &msgs}
			cfg.OnSave = func(_ time.Duration, synced bool) {
				if synced {
					syncs.Add(1)
				}
			}
		}
	}
	c.startAll()
	c.leader(b)
	data := make([]byte, 256)
	msgs0, syncs0 := msgs.Load(), syncs.Load()
	cpu0 := benchCPU()
	b.ResetTimer()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for i := range 100 {
		m := c.members[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if _, err := m.node.Propose(context.Background(), data); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(benchCPU()-cpu0)/n, "cpu-ns/op")
	b.ReportMetric(float64(msgs.Load()-msgs0)/n, "msgs/op")
	b.ReportMetric(float64(syncs.Load()-syncs0)/n, "fsyncs/op")
}

// benchCPU is the process's user+system CPU time.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReadIndexThreeMembers measures linearizable-read rounds of a
// 3-member group over the peer transport: 100 readers spread over the
// members (two thirds on followers), etcd's default 100 ms tick. cpu-ns/op
// is the whole process per read; msgs/op the raft messages handed to the
// transports and rounds/op the ReadIndex rounds, summed over the members.
func BenchmarkReadIndexThreeMembers(b *testing.B) {
	benchReadIndexThreeMembers(b, func(n *Node, left *atomic.Int64, done func()) {
		go func() {
			defer done()
			for left.Add(-1) >= 0 {
				if _, err := n.ReadIndex(context.Background()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	})
}

// BenchmarkReadIndexFuncThreeMembers is BenchmarkReadIndexThreeMembers with
// readers that wait without a goroutine (ReadIndexFunc, as the lean
// transport's deferred Ranges): each reader's next read is registered by
// its previous one's callback.
func BenchmarkReadIndexFuncThreeMembers(b *testing.B) {
	benchReadIndexThreeMembers(b, func(n *Node, left *atomic.Int64, done func()) {
		var next func(uint64, error)
		next = func(_ uint64, err error) {
			if err != nil {
				b.Error(err)
				done()
				return
			}
			if left.Add(-1) < 0 {
				done()
				return
			}
			n.ReadIndexFunc(next)
		}
		next(0, nil)
	})
}

// benchReadIndexThreeMembers starts 100 readers with reader, which reads
// on n until left runs out, then calls done.
func benchReadIndexThreeMembers(b *testing.B, reader func(n *Node, left *atomic.Int64, done func())) {
	c := newCluster(b, 3)
	var msgs atomic.Int64
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) {
			cfg.TickInterval = 100 * time.Millisecond
			cfg.Transport = countingTransport{Transport: cfg.Transport, msgs: &msgs}
		}
	}
	c.startAll()
	c.leader(b)
	propose(b, c.members[0], "x")
	rounds := func() (n uint64) {
		for _, m := range c.members {
			n += m.node.Metrics().ReadIndexRounds
		}
		return n
	}
	msgs0, rounds0 := msgs.Load(), rounds()
	cpu0 := benchCPU()
	b.ResetTimer()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		reader(c.members[i%3].node, &left, wg.Done)
	}
	wg.Wait()
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(benchCPU()-cpu0)/n, "cpu-ns/op")
	b.ReportMetric(float64(msgs.Load()-msgs0)/n, "msgs/op")
	b.ReportMetric(float64(rounds()-rounds0)/n, "rounds/op")
}

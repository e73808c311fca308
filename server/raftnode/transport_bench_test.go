package raftnode

import (
	"sync/atomic"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// funcRaft hands every delivered message to step.
type funcRaft struct{ step func(raftpb.Message) }

func (f funcRaft) Step(m raftpb.Message) error              { f.step(m); return nil }
func (funcRaft) ReportUnreachable(uint64)                   {}
func (funcRaft) ReportSnapshot(uint64, raft.SnapshotStatus) {}
func (funcRaft) IsIDRemoved(uint64) bool                    { return false }
func (funcRaft) ReportRemoved()                             {}

// BenchmarkTransportRoundTrip measures the peer path alone: member 1
// sends a MsgApp with one 256-byte entry, member 2 answers each with a
// MsgAppResp, over two transports on loopback (the members' own server).
// inflight is how many appends are outstanding (1: every message is a
// frame of its own; more: frames carry several). cpu-ns/op is the
// process's CPU (both sides) per round trip.
func BenchmarkTransportRoundTrip(b *testing.B) {
	for _, inflight := range []int{1, 16} {
		b.Run(map[int]string{1: "inflight=1", 16: "inflight=16"}[inflight], func(b *testing.B) {
			benchRoundTrip(b, inflight)
		})
	}
}

func benchRoundTrip(b *testing.B, inflight int) {
	ta := NewTransport(TransportConfig{ID: 1, ClusterID: 9})
	tb := NewTransport(TransportConfig{ID: 2, ClusterID: 9})
	defer ta.Close()
	defer tb.Close()
	urlA, urlB := servePeer(b, ta, nil), servePeer(b, tb, nil)
	ta.AddPeer(2, []string{urlB})
	tb.AddPeer(1, []string{urlA})
	tb.SetRaft(funcRaft{func(m raftpb.Message) {
		tb.Send([]raftpb.Message{{Type: raftpb.MsgAppResp, From: 2, To: 1, Term: m.Term, Index: m.Index + 1}})
	}})
	type round struct {
		total       int64
		sent, recvd atomic.Int64
		done        chan struct{}
	}
	var cur atomic.Pointer[round]
	payload := make([]byte, 256)
	app := func(i int64) []raftpb.Message {
		return []raftpb.Message{{Type: raftpb.MsgApp, From: 1, To: 2, Term: 2, Index: uint64(i), LogTerm: 2, Commit: uint64(i),
			Entries: []raftpb.Entry{{Term: 2, Index: uint64(i + 1), Data: payload}}}}
	}
	ta.SetRaft(funcRaft{func(raftpb.Message) {
		r := cur.Load()
		if r.recvd.Add(1) == r.total {
			close(r.done)
			return
		}
		if i := r.sent.Add(1); i <= r.total {
			ta.Send(app(i))
		}
	}})
	run := func(n int) {
		r := &round{total: int64(n), done: make(chan struct{})}
		cur.Store(r)
		for range min(inflight, n) {
			ta.Send(app(r.sent.Add(1)))
		}
		<-r.done
	}
	run(100) // connect both ways
	cpu0 := benchCPU()
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	b.ReportMetric(float64(benchCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

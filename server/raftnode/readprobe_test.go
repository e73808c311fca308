package raftnode

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// readHeartbeats counts the heartbeats a member sends that carry a read
// round: probes (readprobe.go) and raft's own ReadIndex heartbeats.
type readHeartbeats struct {
	Transport
	probes, raft *atomic.Int64
}

func (t readHeartbeats) Send(msgs []raftpb.Message) {
	for _, m := range msgs {
		if m.Type != raftpb.MsgHeartbeat || len(m.Context) == 0 {
			continue
		}
		if isProbeCtx(m.Context) {
			t.probes.Add(1)
		} else {
			t.raft.Add(1)
		}
	}
	t.Transport.Send(msgs)
}

// After raft answered one read in its term, a leader's rounds are probe
// rounds: one follower probed per round (a quorum of three), no heartbeat
// of raft's, and every read still sees the write acknowledged before it.
func TestReadProbeRounds(t *testing.T) {
	c := newCluster(t, 3)
	var probes, raftBeats atomic.Int64
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) {
			cfg.Transport = readHeartbeats{Transport: cfg.Transport, probes: &probes, raft: &raftBeats}
		}
	}
	c.startAll()
	lead := c.leader(t)
	if _, err := lead.node.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	p0, r0 := probes.Load(), raftBeats.Load()
	const reads = 20
	for i := range reads {
		idx := propose(t, lead, fmt.Sprint("w", i))
		ri, err := lead.node.ReadIndex(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ri < idx || lead.node.AppliedIndex() < idx {
			t.Fatalf("read index %d, applied %d, after a write at %d", ri, lead.node.AppliedIndex(), idx)
		}
	}
	p, r := probes.Load()-p0, raftBeats.Load()-r0
	if r != 0 {
		t.Fatalf("%d raft read heartbeats after the term's first read", r)
	}
	// A slow round probes the other follower too.
	if p < reads || p > 2*reads {
		t.Fatalf("%d probes for %d rounds, want one per round", p, reads)
	}
	// Followers' reads are answered from the same rounds.
	f := c.follower(lead)
	idx := propose(t, lead, "last")
	if ri, err := f.node.ReadIndex(context.Background()); err != nil || ri < idx {
		t.Fatalf("follower read: index %d, %v; write at %d", ri, err, idx)
	}
}

// A leader cut off from its followers answers no read, though it still
// believes it leads: its probes get no answer.
func TestReadProbeCutLeader(t *testing.T) {
	c := newCluster(t, 3)
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) { cfg.ReadIndexTimeout = partitionReadTimeout }
	}
	c.startAll()
	lead := c.leader(t)
	propose(t, lead, "before")
	if _, err := lead.node.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	lead.gate.setDown(true)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if ri, err := lead.node.ReadIndex(ctx); err == nil {
			t.Fatalf("the cut-off leader answered a read (index %d) %v after the cut", ri, time.Since(start))
		}
	}
	lead.gate.setDown(false)
}

// probeAnswers records the probe answers a member sends.
type probeAnswers struct {
	Transport
	got chan raftpb.Message
}

func (t probeAnswers) Send(msgs []raftpb.Message) {
	for _, m := range msgs {
		if m.Type == raftpb.MsgHeartbeatResp && isProbeCtx(m.Context) {
			select {
			case t.got <- m:
			default:
			}
		}
	}
	t.Transport.Send(msgs)
}

// A follower answers a probe itself only where raft's follower would
// answer the heartbeat (its leader, its term), and raft answers a probe
// stepped into it (a member of an older build) as any heartbeat, so the
// leader's count works with either.
func TestReadProbeAnswers(t *testing.T) {
	c := newCluster(t, 3)
	got := make(chan raftpb.Message, 16)
	for _, m := range c.members {
		m.wrap = func(_ *member, cfg *Config) { cfg.Transport = probeAnswers{Transport: cfg.Transport, got: got} }
	}
	c.startAll()
	lead := c.leader(t)
	f := c.follower(lead)
	var other *member
	for _, m := range c.members {
		if m != lead && m != f {
			other = m
		}
	}
	f.node.mu.Lock()
	term := f.node.rn.BasicStatus().Term
	f.node.mu.Unlock()
	probe := func(from, to *member, term uint64, id byte) raftpb.Message {
		return probeMsg(from.id, to.id, term, []byte{probeMark, 0, 0, 0, 0, 0, 0, 0, id})
	}
	// Not answered off raft: an earlier term, a sender that is not the
	// leader, a probe to the leader.
	for _, m := range []raftpb.Message{probe(lead, f, term-1, 1), probe(other, f, term, 2)} {
		if f.node.answerProbe(m) {
			t.Fatalf("follower answered %+v itself", m)
		}
	}
	if lead.node.answerProbe(probe(f, lead, term, 3)) {
		t.Fatal("the leader answered a probe")
	}
	drain := func() {
		for {
			select {
			case <-got:
			default:
				return
			}
		}
	}
	drain()
	if !f.node.answerProbe(probe(lead, f, term, 4)) {
		t.Fatal("the follower did not answer its leader's probe")
	}
	want := func(id byte) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-got:
				if m.Context[8] == id {
					if m.From != f.id || m.To != lead.id || m.Term != term {
						t.Fatalf("answer %+v", m)
					}
					return
				}
			case <-deadline:
				t.Fatalf("no answer to probe %d", id)
			}
		}
	}
	want(4)
	// Stepped into raft, as a member of an older build does.
	f.node.mu.Lock()
	err := f.node.rn.Step(probe(lead, f, term, 5))
	f.node.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	f.node.signal()
	want(5)
}

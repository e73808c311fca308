package raftnode

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// syncBuffer is a log sink a test reads while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logLine returns the first line of buf containing every one of parts.
func logLine(buf *syncBuffer, parts ...string) (string, bool) {
	for line := range strings.Lines(buf.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return line, true
		}
	}
	return "", false
}

// gatedLog is a Log whose Save waits while its gate is closed.
type gatedLog struct {
	Log
	gate *valve
}

func (l gatedLog) Save(hs raftpb.HardState, ents []raftpb.Entry, sync bool) error {
	l.gate.pass()
	return l.Log.Save(hs, ents, sync)
}

// gatedSM is a StateMachine whose Apply waits while its gate is closed.
type gatedSM struct {
	StateMachine
	gate *valve
}

func (s gatedSM) Apply(ents []Entry) ([]any, error) {
	s.gate.pass()
	return s.StateMachine.Apply(ents)
}

// valve blocks pass while it is shut; it counts the goroutines held.
type valve struct {
	mu     sync.Mutex
	shut   bool
	open   chan struct{}
	waited chan struct{} // closed by the first pass that waits
	once   sync.Once
}

func newValve() *valve { return &valve{open: make(chan struct{}), waited: make(chan struct{})} }

func (v *valve) close() {
	v.mu.Lock()
	v.shut = true
	v.mu.Unlock()
}

func (v *valve) release() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.shut {
		v.shut = false
		close(v.open)
	}
}

func (v *valve) pass() {
	v.mu.Lock()
	shut, open := v.shut, v.open
	v.mu.Unlock()
	if shut {
		v.once.Do(func() { close(v.waited) })
		<-open
	}
}

// stallMember is a started one-member cluster whose logs land in the
// returned buffer, its watchdog warning after 200ms.
func stallMember(t *testing.T, wrap func(*Config)) (*member, *syncBuffer) {
	t.Helper()
	c := newCluster(t, 1)
	buf := &syncBuffer{}
	c.members[0].wrap = func(_ *member, cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(buf, nil))
		cfg.stallWarning = 200 * time.Millisecond
		cfg.ReadIndexTimeout = 500 * time.Millisecond
		wrap(cfg)
	}
	c.startAll()
	m := c.leader(t)
	propose(t, m, "before")
	return m, buf
}

// A ready loop stuck in its log write (a disk that never answers, a
// Pebble write stall) no longer takes the request timeout with it: the
// proposer gets ErrTimeout from the watchdog, which logs the stage, and
// the stall shows in the metrics until the loop moves on.
func TestStuckLogSaveTimesOutAndIsNamed(t *testing.T) {
	v := newValve()
	m, buf := stallMember(t, func(cfg *Config) { cfg.Log = gatedLog{Log: cfg.Log, gate: v} })
	v.close()
	defer v.release()

	errc := make(chan error, 1)
	go func() {
		_, err := m.node.ProposeTimeout(context.Background(), []byte("stuck"), 300*time.Millisecond)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("proposal with the ready loop stuck in Save: %v, want ErrTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a proposal outlived its 300ms timeout by 5s")
	}
	<-v.waited
	waitFor(t, 5*time.Second, "the watchdog's warning", func() bool {
		_, ok := logLine(buf, "raft ready loop is stuck", `stage="log save"`)
		return ok
	})
	mt := m.node.Metrics()
	if mt.ReadyLoop.Stage != "log save" || mt.ReadyLoop.For < 200*time.Millisecond || mt.ReadyLoop.Stalls != 1 {
		t.Fatalf("ready loop stall in metrics: %+v", mt.ReadyLoop)
	}
	if mt.ApplyLoop.Stage != "" || mt.ApplyLoop.Stalls != 0 {
		t.Fatalf("apply goroutine stall in metrics: %+v (it is idle)", mt.ApplyLoop)
	}

	v.release()
	waitFor(t, 5*time.Second, "the loop to be seen moving again", func() bool {
		_, ok := logLine(buf, "raft ready loop moved on", `stage="log save"`)
		return ok && m.node.Metrics().ReadyLoop.For == 0
	})
	propose(t, m, "after")
	if s := m.node.Metrics().ReadyLoop.Stalls; s != 1 {
		t.Fatalf("stalls %d, want 1", s)
	}
}

// An apply goroutine stuck in the state machine (suspect (a) of issue 15:
// the ready loop then blocks handing it entries) fails the proposers at
// their timeout and a linearizable read at the read timeout, instead of
// holding them for ever; both loops' stages are named.
func TestStuckApplyTimesOutWritesAndReads(t *testing.T) {
	v := newValve()
	m, buf := stallMember(t, func(cfg *Config) {
		cfg.Snapshots = nil // the wrapper is a plain StateMachine
		cfg.StateMachine = gatedSM{StateMachine: cfg.StateMachine, gate: v}
	})
	v.close()
	defer v.release()

	errc := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := m.node.ProposeTimeout(context.Background(), []byte("stuck"), 300*time.Millisecond)
			errc <- err
		}()
	}
	for range 3 {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("proposal with the apply stuck: %v, want ErrTimeout", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a proposal outlived its 300ms timeout by 5s")
		}
	}
	// A read that waits without a context (ReadIndexFunc): its round's
	// wait for the apply ends at the read timeout.
	readc := make(chan error, 1)
	m.node.ReadIndexFunc(func(_ uint64, err error) { readc <- err })
	select {
	case err := <-readc:
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("read with the apply stuck: %v, want ErrTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read waited 5s for an apply that does not come")
	}
	waitFor(t, 5*time.Second, "the watchdog's warning", func() bool {
		_, ok := logLine(buf, "raft apply goroutine is stuck", `stage="state machine apply"`)
		return ok
	})
	mt := m.node.Metrics()
	if st := mt.ApplyLoop; st.Stage != "state machine apply" || st.Stalls != 1 {
		t.Fatalf("apply goroutine stall in metrics: %+v", st)
	}
	// The ready loop blocks behind it only once it waits for the apply (a
	// lone voter's entries durable before the Ready) or the hand-over
	// queue is full, which depends on how raft batched the proposals.
	switch st := mt.ReadyLoop; st.Stage {
	case "", "waiting for the local apply", "handing entries to the apply goroutine":
	default:
		t.Fatalf("ready loop stall in metrics: %+v", st)
	}
	v.release()
	propose(t, m, "after")
}

// The stage word changes on every entry to a stage, so a loop that goes
// round and comes back to the same stage between two looks is not stuck.
func TestLoopProbeSeesProgress(t *testing.T) {
	var p loopProbe
	n := &Node{lg: slog.New(slog.DiscardHandler)}
	w := loopWatch{name: "loop", probe: &p}
	t0 := time.Now()
	p.enter(stageLogSave)
	w.look(n, t0, time.Second)
	p.enter(stageSend)
	p.enter(stageLogSave)
	w.look(n, t0.Add(2*time.Second), time.Second)
	if st := w.metrics(); st.Stalls != 0 || st.For != 0 {
		t.Fatalf("a loop that moved reported stuck: %+v", st)
	}
	w.look(n, t0.Add(4*time.Second), time.Second)
	if st := w.metrics(); st.Stalls != 1 || st.For != 2*time.Second || st.Stage != "log save" {
		t.Fatalf("a loop held 2s in log save: %+v", st)
	}
	p.enter(stageIdle)
	w.look(n, t0.Add(5*time.Second), time.Second)
	w.look(n, t0.Add(60*time.Second), time.Second)
	if st := w.metrics(); st.Stalls != 1 || st.For != 0 {
		t.Fatalf("an idle loop reported stuck: %+v", st)
	}
}

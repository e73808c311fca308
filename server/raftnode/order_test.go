package raftnode

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// The durability rules, checked on a recorded history of what each member
// did, in the order it happened:
//   - an entry is applied only after this member saved it (etcd #14370);
//   - within a Ready, only a leader sends before the Ready's save, and never
//     a response that vouches for its log or vote (MsgAppResp,
//     MsgVoteResp, MsgPreVoteResp); a follower only the requests it
//     forwards to the leader (MsgProp, MsgReadIndex);
//   - an append response claiming index i, or a granted vote, goes out
//     only once that is durable.

type evKind int

const (
	evReady evKind = iota // a Ready taken up (leader: role at that time)
	evSave                // a Ready's save returned
	evSend                // messages handed to the transport
	evApply               // entries handed to the state machine
)

type event struct {
	kind   evKind
	member uint64
	leader bool
	last   uint64 // evSave: last entry index saved (0: none)
	hs     raftpb.HardState
	msgs   []raftpb.Message
	index  uint64 // evApply
}

type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) add(e event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// checkDurability returns the first violation, and how many messages a
// leader sent in parallel with its own write (the path etcd allows).
func checkDurability(events []event) (early int, err error) {
	type state struct {
		inReady, leader, saved bool
		last                   uint64
		hs                     raftpb.HardState
	}
	st := map[uint64]*state{}
	get := func(id uint64) *state {
		if st[id] == nil {
			st[id] = &state{}
		}
		return st[id]
	}
	for i, e := range events {
		s := get(e.member)
		switch e.kind {
		case evReady:
			s.inReady, s.leader, s.saved = true, e.leader, false
		case evSave:
			if e.last != 0 {
				s.last = e.last
			}
			if e.hs.Term != 0 {
				s.hs = e.hs
			}
			s.saved = true
		case evSend:
			for _, m := range e.msgs {
				resp := m.Type == raftpb.MsgAppResp || m.Type == raftpb.MsgVoteResp || m.Type == raftpb.MsgPreVoteResp
				if s.inReady && !s.saved {
					early++
				}
				fwd := m.Type == raftpb.MsgProp || m.Type == raftpb.MsgReadIndex
				if s.inReady && !s.saved && (!s.leader && !fwd || resp) {
					return early, fmt.Errorf("event %d: member %x sent %v before its Ready was saved (leader=%v)", i, e.member, m.Type, s.leader)
				}
				if m.Type == raftpb.MsgAppResp && !m.Reject && m.Index > s.last {
					return early, fmt.Errorf("event %d: member %x acknowledged index %d with only %d durable", i, e.member, m.Index, s.last)
				}
				if m.Type == raftpb.MsgVoteResp && !m.Reject && (s.hs.Term != m.Term || s.hs.Vote != m.To) {
					return early, fmt.Errorf("event %d: member %x granted a vote to %x at term %d, durable state %+v", i, e.member, m.To, m.Term, s.hs)
				}
			}
		case evApply:
			if e.index > s.last {
				return early, fmt.Errorf("event %d: member %x applied %d with its log durable to %d", i, e.member, e.index, s.last)
			}
		}
	}
	return early, nil
}

type recLog struct {
	Log
	rec *recorder
	id  uint64
}

func (l *recLog) Save(hs raftpb.HardState, ents []raftpb.Entry, sync bool) error {
	if err := l.Log.Save(hs, ents, sync); err != nil {
		return err
	}
	e := event{kind: evSave, member: l.id, hs: hs}
	if len(ents) > 0 {
		e.last = ents[len(ents)-1].Index
	}
	l.rec.add(e)
	return nil
}

type recTransport struct {
	Transport
	rec *recorder
	id  uint64
}

func (t *recTransport) Send(msgs []raftpb.Message) {
	t.rec.add(event{kind: evSend, member: t.id, msgs: append([]raftpb.Message(nil), msgs...)})
	t.Transport.Send(msgs)
}

type recSM struct {
	StateMachine
	rec *recorder
	id  uint64
}

func (s *recSM) Apply(ents []Entry) ([]any, error) {
	for _, e := range ents {
		s.rec.add(event{kind: evApply, member: s.id, index: e.Index})
	}
	return s.StateMachine.Apply(ents)
}

func (s *recSM) ApplyConfChange(cc ConfChange, confirm func() raftpb.ConfState) (any, error) {
	s.rec.add(event{kind: evApply, member: s.id, index: cc.Index})
	return s.StateMachine.ApplyConfChange(cc, confirm)
}

func recordCluster(t *testing.T, n int) (*cluster, *recorder) {
	rec := &recorder{}
	c := newCluster(t, n)
	for _, m := range c.members {
		m.wrap = func(m *member, cfg *Config) {
			cfg.Log = &recLog{Log: cfg.Log, rec: rec, id: m.id}
			cfg.Transport = &recTransport{Transport: cfg.Transport, rec: rec, id: m.id}
			cfg.StateMachine = &recSM{StateMachine: cfg.StateMachine, rec: rec, id: m.id}
			cfg.Snapshots = nil // the recording state machine does not install them
			cfg.testHooks = &testHooks{readyStart: func(leader bool) {
				rec.add(event{kind: evReady, member: m.id, leader: leader})
			}}
		}
	}
	return c, rec
}

func TestDurabilityOrder(t *testing.T) {
	for _, size := range []int{1, 3} {
		t.Run(fmt.Sprint(size, "-members"), func(t *testing.T) {
			c, rec := recordCluster(t, size)
			c.startAll()
			lead := c.leader(t)
			var wg sync.WaitGroup
			for i, m := range c.members {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range 40 {
						// A leader transfer drops proposals (raft refuses
						// them meanwhile, or the old leader drops those
						// forwarded to it): retry, as a client would.
						if err := proposeRetry(m, fmt.Sprintf("%d-%d", i, j)); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			if size > 1 {
				// A leader change, for votes and a new term's appends.
				for _, m := range c.members {
					if m != lead {
						if err := lead.node.TransferLeadership(context.Background(), m.id); err != nil {
							t.Fatal(err)
						}
						break
					}
				}
			}
			wg.Wait()
			c.waitConverged(t, 40*size)
			rec.mu.Lock()
			events := append([]event(nil), rec.events...)
			rec.mu.Unlock()
			leaderEarly, err := checkDurability(events)
			if err != nil {
				t.Fatal(err)
			}
			var applies int
			for _, e := range events {
				if e.kind == evApply {
					applies++
				}
			}
			if applies < 40*size || size > 1 && leaderEarly == 0 {
				t.Fatalf("history too thin to check: %d applies, %d leader sends before its save", applies, leaderEarly)
			}
			t.Logf("%d events, %d applies, %d messages sent by a leader in parallel with its write", len(events), applies, leaderEarly)
		})
	}
}

func proposeRetry(m *member, v string) error {
	var err error
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = m.node.Propose(ctx, []byte(v))
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("propose %q on %x: %w", v, m.id, err)
}

// The checker must catch each violation it exists for.
func TestCheckDurabilityCatches(t *testing.T) {
	const a = 1
	ready := func(leader bool) event { return event{kind: evReady, member: a, leader: leader} }
	save := func(last, commit uint64) event {
		return event{kind: evSave, member: a, last: last, hs: raftpb.HardState{Term: 2, Vote: 2, Commit: commit}}
	}
	send := func(m raftpb.Message) event { return event{kind: evSend, member: a, msgs: []raftpb.Message{m}} }
	apply := func(i uint64) event { return event{kind: evApply, member: a, index: i} }
	for name, tc := range map[string]struct {
		events []event
		want   string
	}{
		"ok": {events: []event{ready(true), send(raftpb.Message{Type: raftpb.MsgApp}), save(5, 5), apply(5),
			ready(false), save(6, 5), send(raftpb.Message{Type: raftpb.MsgAppResp, Index: 6})}},
		"apply before save": {events: []event{ready(false), save(4, 4), apply(5), save(5, 5)}, want: "applied 5"},
		"apply in the Ready that appends it": {events: []event{ready(true), save(4, 4), ready(true), apply(5), save(5, 5)},
			want: "applied 5"},
		"follower forwards early": {events: []event{ready(false), send(raftpb.Message{Type: raftpb.MsgProp}),
			send(raftpb.Message{Type: raftpb.MsgReadIndex}), save(1, 1)}},
		"follower sends early": {events: []event{ready(false), send(raftpb.Message{Type: raftpb.MsgHeartbeatResp}), save(1, 1)},
			want: "before its Ready was saved"},
		"leader acks early": {events: []event{ready(true), send(raftpb.Message{Type: raftpb.MsgVoteResp, Reject: true}), save(1, 1)},
			want: "before its Ready was saved"},
		"ack ahead of log": {events: []event{ready(false), save(3, 1), send(raftpb.Message{Type: raftpb.MsgAppResp, Index: 4})},
			want: "acknowledged index 4"},
		"vote not durable": {events: []event{ready(false), save(3, 1), send(raftpb.Message{Type: raftpb.MsgVoteResp, To: 3, Term: 2})},
			want: "granted a vote"},
	} {
		_, err := checkDurability(tc.events)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

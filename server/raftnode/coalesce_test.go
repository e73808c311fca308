package raftnode

import (
	"fmt"
	"log/slog"
	"reflect"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func ents(term uint64, from, to uint64) []raftpb.Entry {
	var out []raftpb.Entry
	for i := from; i <= to; i++ {
		out = append(out, raftpb.Entry{Term: term, Index: i, Data: []byte(fmt.Sprint(i))})
	}
	return out
}

func app(to, term, index, logTerm, commit uint64, e []raftpb.Entry) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgApp, From: 1, To: to, Term: term, Index: index, LogTerm: logTerm, Commit: commit, Entries: e}
}

func appResp(index uint64) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgAppResp, From: 2, To: 1, Term: 3, Index: index}
}

func TestCoalesceAppends(t *testing.T) {
	reject := raftpb.Message{Type: raftpb.MsgAppResp, From: 2, To: 1, Term: 3, Index: 4, Reject: true, RejectHint: 2, LogTerm: 2}
	hb := raftpb.Message{Type: raftpb.MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 6}
	tests := []struct {
		name     string
		in, want []raftpb.Message
	}{
		{
			name: "a leader's appends to each follower",
			in: []raftpb.Message{
				app(2, 3, 5, 2, 4, ents(3, 6, 7)),
				app(3, 3, 5, 2, 4, ents(3, 6, 7)),
				app(2, 3, 7, 3, 5, ents(3, 8, 8)),
				app(2, 3, 8, 3, 6, nil), // commit only
				app(3, 3, 7, 3, 6, nil),
				app(3, 3, 7, 3, 6, ents(3, 8, 9)),
			},
			want: []raftpb.Message{
				app(2, 3, 5, 2, 6, ents(3, 6, 8)),
				app(3, 3, 5, 2, 6, ents(3, 6, 9)),
			},
		},
		{
			name: "an empty append then entries",
			in:   []raftpb.Message{app(2, 3, 5, 2, 4, nil), app(2, 3, 5, 2, 5, ents(3, 6, 6))},
			want: []raftpb.Message{app(2, 3, 5, 2, 5, ents(3, 6, 6))},
		},
		{
			name: "nothing merges across another message to the same member",
			in:   []raftpb.Message{app(2, 3, 5, 2, 4, ents(3, 6, 6)), hb, app(2, 3, 6, 3, 6, ents(3, 7, 7))},
			want: []raftpb.Message{app(2, 3, 5, 2, 4, ents(3, 6, 6)), hb, app(2, 3, 6, 3, 6, ents(3, 7, 7))},
		},
		{
			name: "a gap, a rewind, another term's entry, another term",
			in: []raftpb.Message{
				app(2, 3, 5, 2, 4, ents(3, 6, 6)),
				app(2, 3, 8, 3, 4, ents(3, 9, 9)), // gap
				app(2, 3, 5, 2, 4, ents(3, 6, 6)), // rewind (a probe)
				app(2, 3, 6, 2, 4, ents(3, 7, 7)), // LogTerm does not match entry 6's term
				app(2, 4, 7, 3, 4, ents(4, 8, 8)), // a new term
			},
			want: []raftpb.Message{
				app(2, 3, 5, 2, 4, ents(3, 6, 6)),
				app(2, 3, 8, 3, 4, ents(3, 9, 9)),
				app(2, 3, 5, 2, 4, ents(3, 6, 6)),
				app(2, 3, 6, 2, 4, ents(3, 7, 7)),
				app(2, 4, 7, 3, 4, ents(4, 8, 8)),
			},
		},
		{
			name: "a follower's responses: the highest accepted index, rejections kept in order",
			in:   []raftpb.Message{appResp(5), appResp(7), appResp(6), reject, appResp(8), appResp(9)},
			want: []raftpb.Message{appResp(7), reject, appResp(9)},
		},
		{
			name: "other types pass",
			in:   []raftpb.Message{hb, hb, {Type: raftpb.MsgProp, From: 2, To: 1, Entries: ents(0, 0, 0)}, {Type: raftpb.MsgProp, From: 2, To: 1, Entries: ents(0, 0, 0)}},
			want: []raftpb.Message{hb, hb, {Type: raftpb.MsgProp, From: 2, To: 1, Entries: ents(0, 0, 0)}, {Type: raftpb.MsgProp, From: 2, To: 1, Entries: ents(0, 0, 0)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := clone(tt.in)
			got := coalesceAppends(in, 1<<20)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%v\nwant\n%v", describe(got), describe(tt.want))
			}
			if !reflect.DeepEqual(in, tt.in) {
				t.Errorf("the input was modified:\n%v", describe(in))
			}
		})
	}
}

func TestCoalesceAppendsLeavesRaftsSlices(t *testing.T) {
	// raft's entry slices may have spare capacity holding entries it still
	// uses: a merge must not write there.
	backing := ents(3, 6, 9)
	first := backing[:1:4]
	next := []raftpb.Entry{{Term: 3, Index: 7, Data: []byte("the next entry")}}
	msgs := []raftpb.Message{app(2, 3, 5, 2, 4, first), app(2, 3, 6, 3, 5, next)}
	got := coalesceAppends(msgs, 1<<20)
	if len(got) != 1 || len(got[0].Entries) != 2 || got[0].Entries[1].Index != 7 {
		t.Fatalf("got %v", describe(got))
	}
	if !reflect.DeepEqual(backing, ents(3, 6, 9)) {
		t.Fatalf("raft's backing array was written: %v", backing)
	}
}

func TestCoalesceAppendsBound(t *testing.T) {
	big := func(i uint64) []raftpb.Entry {
		return []raftpb.Entry{{Term: 3, Index: i, Data: make([]byte, 600)}}
	}
	msgs := []raftpb.Message{app(2, 3, 5, 2, 4, big(6)), app(2, 3, 6, 3, 4, big(7)), app(2, 3, 7, 3, 5, nil)}
	got := coalesceAppends(msgs, 1000)
	// The two payloads exceed 1000 bytes; the commit-only append still
	// joins the second.
	if len(got) != 2 || got[0].Entries[0].Index != 6 || got[1].Entries[0].Index != 7 || got[1].Commit != 5 {
		t.Fatalf("got %v", describe(got))
	}
}

// TestCoalescedAppendsSameFollowerState steps a follower's raft with a run
// of appends one by one and, in another raft, merged: both logs, commit
// indexes and answers' highest index must agree.
func TestCoalescedAppendsSameFollowerState(t *testing.T) {
	msgs := []raftpb.Message{
		app(2, 1, 1, 1, 1, ents(1, 2, 3)),
		app(2, 1, 3, 1, 2, ents(1, 4, 4)),
		app(2, 1, 4, 1, 3, nil),
		app(2, 1, 4, 1, 4, ents(1, 5, 7)),
	}
	run := func(in []raftpb.Message) (last, commit, acked uint64) {
		st := raft.NewMemoryStorage()
		if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 1, Term: 1, ConfState: raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}); err != nil {
			t.Fatal(err)
		}
		rn, err := raft.NewRawNode(&raft.Config{ID: 2, ElectionTick: 10, HeartbeatTick: 1, Storage: st, MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256,
			Logger: raftLogger{lg: slog.New(slog.DiscardHandler)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range in {
			if err := rn.Step(m); err != nil {
				t.Fatal(err)
			}
		}
		rd := rn.Ready()
		if err := st.Append(rd.Entries); err != nil {
			t.Fatal(err)
		}
		for _, m := range rd.Messages {
			if m.Type == raftpb.MsgAppResp && !m.Reject {
				acked = max(acked, m.Index)
			}
		}
		rn.Advance(rd)
		last, _ = st.LastIndex()
		return last, rn.Status().Commit, acked
	}
	l1, c1, a1 := run(msgs)
	merged := coalesceAppends(msgs, 1<<20)
	if len(merged) != 1 {
		t.Fatalf("merged into %d messages, want 1", len(merged))
	}
	l2, c2, a2 := run(merged)
	if l1 != 7 || l1 != l2 || c1 != c2 || a1 != a2 || c1 != 4 || a1 != 7 {
		t.Fatalf("one by one: last %d commit %d acked %d; merged: last %d commit %d acked %d", l1, c1, a1, l2, c2, a2)
	}
}

func clone(msgs []raftpb.Message) []raftpb.Message {
	out := make([]raftpb.Message, len(msgs))
	for i, m := range msgs {
		m.Entries = append([]raftpb.Entry(nil), m.Entries...)
		out[i] = m
	}
	return out
}

func describe(msgs []raftpb.Message) string {
	s := ""
	for _, m := range msgs {
		var idx []uint64
		for _, e := range m.Entries {
			idx = append(idx, e.Index)
		}
		s += fmt.Sprintf("  %v %d→%d term %d index %d logterm %d commit %d reject %v entries %v\n", m.Type, m.From, m.To, m.Term, m.Index, m.LogTerm, m.Commit, m.Reject, idx)
	}
	return s
}

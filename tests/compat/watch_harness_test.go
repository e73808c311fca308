package compat

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
)

// wstream is a raw Watch stream of a scenario. Every response received is
// recorded in the env's transcript, so that etcd's and metastore's streams
// are compared message by message.
type wstream struct {
	e      *env
	name   string
	cli    pb.Watch_WatchClient
	cancel context.CancelFunc
	recv   chan *pb.WatchResponse
	n      int // responses taken so far
}

// openWatch opens a Watch stream on the env's connection; it is closed at
// the end of the test.
func (e *env) openWatch(name string) *wstream {
	e.t.Helper()
	return e.openWatchOn(name, e.cli.ActiveConnection(), context.Background())
}

// openWatchOn opens a Watch stream on conn with ctx (e.g. carrying a token).
func (e *env) openWatchOn(name string, conn *grpc.ClientConn, ctx context.Context) *wstream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cli, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		cancel()
		e.t.Fatalf("open watch stream: %v", err)
	}
	w := &wstream{e: e, name: name, cli: cli, cancel: cancel, recv: make(chan *pb.WatchResponse, 1<<16)}
	go func() {
		defer close(w.recv)
		for {
			r, err := cli.Recv()
			if err != nil {
				return
			}
			w.recv <- r
		}
	}()
	e.t.Cleanup(cancel)
	return w
}

func (w *wstream) send(r *pb.WatchRequest) {
	w.e.t.Helper()
	if err := w.cli.Send(r); err != nil {
		w.e.t.Fatalf("watch %s: send %v: %v", w.name, short(r), err)
	}
}

func (w *wstream) create(r *pb.WatchCreateRequest) {
	w.e.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}})
}

func (w *wstream) cancelWatch(id int64) {
	w.e.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
}

func (w *wstream) requestProgress() {
	w.e.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
}

// take waits for the next n responses, records them and returns them.
// Event responses of one revision to different watchers, whose order etcd
// does not define, are sorted by watch id.
func (w *wstream) take(n int) []*pb.WatchResponse {
	w.e.t.Helper()
	var got []*pb.WatchResponse
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case r, ok := <-w.recv:
			if !ok {
				w.e.t.Fatalf("watch %s: stream ended after %d of %d responses", w.name, len(got), n)
			}
			got = append(got, r)
		case <-deadline:
			w.e.t.Fatalf("watch %s: got %d of %d responses within 20s:\n%s", w.name, len(got), n, fmtWatchResps(got))
		}
	}
	for i := 0; i < len(got); {
		j := i + 1
		if len(got[i].Events) > 0 {
			for j < len(got) && len(got[j].Events) > 0 && got[j].Header.GetRevision() == got[i].Header.GetRevision() {
				j++
			}
			slices.SortStableFunc(got[i:j], func(a, b *pb.WatchResponse) int { return int(a.WatchId - b.WatchId) })
		}
		i = j
	}
	for _, r := range got {
		w.e.record(fmt.Sprintf("watch %s response %d", w.name, w.n), r, nil)
		w.n++
	}
	return got
}

// quiet asserts that nothing arrives for d.
func (w *wstream) quiet(d time.Duration) {
	w.e.t.Helper()
	select {
	case r, ok := <-w.recv:
		if ok {
			w.e.t.Errorf("watch %s: unexpected response %s", w.name, fmtWatchResp(r))
		}
	case <-time.After(d):
	}
}

// want takes len(want) responses and compares them with want, ignoring
// the header's cluster, member and raft term.
func (w *wstream) want(want ...*pb.WatchResponse) []*pb.WatchResponse {
	w.e.t.Helper()
	got := w.take(len(want))
	for i := range got {
		if d := cmp.Diff(want[i], normWatch(got[i]), cmpOpts...); d != "" {
			w.e.t.Errorf("watch %s response %d (-want +got):\n%s\nall received:\n%s", w.name, w.n-len(got)+i, d, fmtWatchResps(got))
			break
		}
	}
	return got
}

func normWatch(r *pb.WatchResponse) *pb.WatchResponse {
	c := *r
	if c.Header != nil {
		h := *c.Header
		h.ClusterId, h.MemberId, h.RaftTerm = 0, 0, 0
		c.Header = &h
	}
	return &c
}

func fmtWatchResp(r *pb.WatchResponse) string {
	s := fmt.Sprintf("id=%d rev=%d created=%v canceled=%v compact=%d reason=%q fragment=%v",
		r.WatchId, r.Header.GetRevision(), r.Created, r.Canceled, r.CompactRevision, r.CancelReason, r.Fragment)
	for _, ev := range r.Events {
		s += fmt.Sprintf("\n  %s %q=%q m=%d", ev.Type, ev.Kv.Key, short(string(ev.Kv.Value)), ev.Kv.ModRevision)
		if ev.PrevKv != nil {
			s += fmt.Sprintf(" prev m=%d", ev.PrevKv.ModRevision)
		}
	}
	return s
}

func fmtWatchResps(rs []*pb.WatchResponse) string {
	var s string
	for _, r := range rs {
		s += fmtWatchResp(r) + "\n"
	}
	return s
}

// Expected responses.

func hdr(rev int64) *pb.ResponseHeader { return &pb.ResponseHeader{Revision: rev} }

func wCreated(id, rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: id, Created: true}
}

func wRefused(rev int64, reason string) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: -1, Created: true, Canceled: true, CancelReason: reason}
}

func wCanceled(id, rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: id, Canceled: true}
}

func wCompacted(id, compactRev int64) *pb.WatchResponse {
	// etcd sends the compaction cancellation with header revision 0.
	return &pb.WatchResponse{Header: hdr(0), WatchId: id, Canceled: true, CompactRevision: compactRev}
}

func wProgress(id, rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: id}
}

func wEvents(id, rev int64, evs ...*mvccpb.Event) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: id, Events: evs}
}

func evPut(k *mvccpb.KeyValue) *mvccpb.Event { return &mvccpb.Event{Type: mvccpb.PUT, Kv: k} }

func evDel(key string, mod int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: mod}}
}

// prev sets an expected event's PrevKv.
func prev(ev *mvccpb.Event, p *mvccpb.KeyValue) *mvccpb.Event {
	c := *ev
	c.PrevKv = p
	return &c
}

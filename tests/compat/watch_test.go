package compat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

var (
	noPut    = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
	noDelete = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
)

const (
	reasonCompacted  = "etcdserver: mvcc: required revision has been compacted"
	reasonEmptyRange = "mvcc: watcher range is empty"
	reasonDuplicate  = "mvcc: duplicate watch ID provided on the WatchStream"
)

func TestWatchBasics(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("a", "1") // 2
		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("a")})
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c"), PrevKv: true})
		w.create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte{0}, Filters: noPut}) // from key
		w.want(wCreated(0, 2), wCreated(1, 2), wCreated(2, 2))

		e.mustPut("a", "2") // 3
		w.want(
			wEvents(0, 3, evPut(kv("a", "2", 2, 3, 2))),
			wEvents(1, 3, prev(evPut(kv("a", "2", 2, 3, 2)), kv("a", "1", 2, 2, 1))),
		)
		e.mustPut("b", "1") // 4: watcher 2 filters puts
		w.want(wEvents(1, 4, evPut(kv("b", "1", 4, 4, 1))))
		e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("zz")}) // 5
		w.want(
			wEvents(0, 5, evDel("a", 5)),
			wEvents(1, 5, prev(evDel("a", 5), kv("a", "2", 2, 3, 2)), prev(evDel("b", 5), kv("b", "1", 4, 4, 1))),
			wEvents(2, 5, evDel("b", 5)),
		)

		e.run("cancel", func(e *env) {
			w.cancelWatch(1)
			w.cancelWatch(99) // unknown: no response
			w.want(wCanceled(1, 5))
			e.mustPut("a", "3") // 6
			w.want(wEvents(0, 6, evPut(kv("a", "3", 6, 6, 1))))
		})
		e.run("keys", func(e *env) {
			w.create(&pb.WatchCreateRequest{})                                                     // empty key: "\x00"
			w.create(&pb.WatchCreateRequest{RangeEnd: []byte{0}})                                  // every key
			w.create(&pb.WatchCreateRequest{Key: []byte("p/"), RangeEnd: []byte(prefixEnd("p/"))}) // prefix
			w.want(wCreated(3, 6), wCreated(4, 6), wCreated(5, 6))
			e.mustPut("\x00", "z") // 7
			w.want(
				wEvents(3, 7, evPut(kv("\x00", "z", 7, 7, 1))),
				wEvents(4, 7, evPut(kv("\x00", "z", 7, 7, 1))),
			)
			e.mustPut("p/1", "x") // 8
			w.want(
				wEvents(4, 8, evPut(kv("p/1", "x", 8, 8, 1))),
				wEvents(5, 8, evPut(kv("p/1", "x", 8, 8, 1))),
			)
			e.mustPut("p0", "x") // 9: outside the prefix
			w.want(wEvents(4, 9, evPut(kv("p0", "x", 9, 9, 1))))
			// A txn's events come in one response, in the order of its ops.
			e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("p/2", "y"), opPut("a", "4"), opDelete("p/1", "")}}) // 10
			w.want(
				wEvents(0, 10, evPut(kv("a", "4", 6, 10, 2))),
				wEvents(2, 10, evDel("p/1", 10)), // from "b", puts filtered
				wEvents(4, 10, evPut(kv("p/2", "y", 10, 10, 1)), evPut(kv("a", "4", 6, 10, 2)), evDel("p/1", 10)),
				wEvents(5, 10, evPut(kv("p/2", "y", 10, 10, 1)), evDel("p/1", 10)),
			)
		})
	})
}

func TestWatchCreateRefused(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("a", "1") // 2
		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1})
		w.create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
		w.create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("b")})
		w.want(wRefused(2, reasonCompacted), wRefused(2, reasonEmptyRange), wRefused(2, reasonEmptyRange))

		// Client-chosen ids, duplicates, and automatic ids around them.
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})
		w.create(&pb.WatchCreateRequest{Key: []byte("a")})
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 1})
		w.create(&pb.WatchCreateRequest{Key: []byte("a")})
		w.want(wCreated(7, 2), wRefused(2, reasonDuplicate), wCreated(0, 2), wCreated(1, 2), wCreated(2, 2))
		w.cancelWatch(7)
		w.want(wCanceled(7, 2))
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7}) // free again
		w.want(wCreated(7, 2))
		e.mustPut("a", "2") // 3
		ev := evPut(kv("a", "2", 2, 3, 2))
		w.want(wEvents(0, 3, ev), wEvents(1, 3, ev), wEvents(2, 3, ev), wEvents(7, 3, ev))

		// Ids are per stream.
		w2 := e.openWatch("s2")
		w2.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7})
		w2.create(&pb.WatchCreateRequest{Key: []byte("a")})
		w2.want(wCreated(7, 3), wCreated(0, 3))
	})
}

func TestWatchFromHistory(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("a", "1")                                                                   // 2
		e.mustPut("b", "1")                                                                   // 3
		e.mustTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "2"), opPut("b", "2")}}) // 4
		e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("a")})                                // 5
		e.mustPut("c", "1")                                                                   // 6
		a1, a2 := kv("a", "1", 2, 2, 1), kv("a", "2", 2, 4, 2)
		b1, b2 := kv("b", "1", 3, 3, 1), kv("b", "2", 3, 4, 2)

		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c"), StartRevision: 2, PrevKv: true})
		// Everything up to the current revision in one response, whose
		// header carries the current revision.
		w.want(wCreated(0, 6), wEvents(0, 6,
			evPut(a1), evPut(b1), prev(evPut(a2), a1), prev(evPut(b2), b1), prev(evDel("a", 5), a2)))

		w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c"), StartRevision: 3, Filters: noDelete})
		w.want(wCreated(1, 6), wEvents(1, 6, evPut(b1), evPut(a2), evPut(b2)))
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("c"), StartRevision: 3, Filters: noPut})
		w.want(wCreated(2, 6), wEvents(2, 6, evDel("a", 5)))
		// Nothing to catch up: the watcher is in sync at once.
		w.create(&pb.WatchCreateRequest{Key: []byte("b"), StartRevision: 5})
		w.want(wCreated(3, 6))
		w.create(&pb.WatchCreateRequest{Key: []byte("c"), StartRevision: 6})
		w.want(wCreated(4, 6), wEvents(4, 6, evPut(kv("c", "1", 6, 6, 1))))

		e.mustPut("b", "3") // 7: live, to every watcher of b
		b3 := kv("b", "3", 3, 7, 3)
		w.want(wEvents(0, 7, prev(evPut(b3), b2)), wEvents(1, 7, evPut(b3)), wEvents(3, 7, evPut(b3)))

		e.run("future", func(e *env) {
			w.create(&pb.WatchCreateRequest{Key: []byte("f"), StartRevision: 8}) // the next revision
			w.create(&pb.WatchCreateRequest{Key: []byte("f"), StartRevision: 10})
			w.want(wCreated(5, 7), wCreated(6, 7))
			e.mustPut("f", "1") // 8
			w.want(wEvents(5, 8, evPut(kv("f", "1", 8, 8, 1))))
			e.mustPut("f", "2") // 9
			w.want(wEvents(5, 9, evPut(kv("f", "2", 8, 9, 2))))
			e.mustPut("f", "3") // 10
			f3 := evPut(kv("f", "3", 8, 10, 3))
			w.want(wEvents(5, 10, f3), wEvents(6, 10, f3))
		})
	})
}

func TestWatchCompacted(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		for i := range 5 {
			e.mustPut("a", fmt.Sprint(i)) // 2..6
		}
		e.mustCompact(&pb.CompactionRequest{Revision: 4, Physical: true})
		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 3})
		w.want(wCreated(0, 6), wCompacted(0, 4))
		// At the compacted revision itself: the events are there, but the
		// version before the first one is not.
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 4, PrevKv: true})
		w.want(wCreated(1, 6), wEvents(1, 6,
			evPut(kv("a", "2", 2, 4, 3)),
			prev(evPut(kv("a", "3", 2, 5, 4)), kv("a", "2", 2, 4, 3)),
			prev(evPut(kv("a", "4", 2, 6, 5)), kv("a", "3", 2, 5, 4)),
		))
		// A compacted watcher keeps its id until canceled, and the stream
		// is not in sync meanwhile: progress requests go unanswered.
		w.requestProgress()
		w.create(&pb.WatchCreateRequest{Key: []byte("x"), WatchId: 0})
		w.want(wCreated(2, 6)) // id 0 means "choose one"
		w.create(&pb.WatchCreateRequest{Key: []byte("x"), WatchId: 2})
		w.want(wRefused(6, reasonDuplicate))
		w.cancelWatch(0)
		w.want(wCanceled(0, 6))
		w.requestProgress()
		w.want(wProgress(-1, 6))
	})
}

func TestWatchRequestProgress(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		w := e.openWatch("s")
		w.requestProgress() // no watcher: no answer
		w.create(&pb.WatchCreateRequest{Key: []byte("a")})
		w.want(wCreated(0, 1))
		w.requestProgress()
		w.want(wProgress(-1, 1))
		e.mustPut("b", "1") // 2: not watched
		w.requestProgress()
		w.want(wProgress(-1, 2))
		// A watcher waiting for a future revision is not in sync (etcd
		// 3.6), so the stream gets no answer until it is gone.
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 10})
		w.want(wCreated(1, 2))
		w.requestProgress()
		w.cancelWatch(1)
		w.want(wCanceled(1, 2))
		w.requestProgress()
		w.want(wProgress(-1, 2))
		// The answer comes after every event it covers.
		e.mustPut("a", "1") // 3
		w.requestProgress()
		w.want(wEvents(0, 3, evPut(kv("a", "1", 3, 3, 1))), wProgress(-1, 3))
		w.quiet(300 * time.Millisecond)
	})
}

func TestWatchProgressNotify(t *testing.T) {
	scenario(t, framework.Options{WatchProgressNotifyInterval: 300 * time.Millisecond}, func(e *env) {
		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true})
		w.create(&pb.WatchCreateRequest{Key: []byte("b")})
		w.want(wCreated(0, 1), wCreated(1, 1))
		w.want(wProgress(0, 1)) // only the watcher that asked, with its own id
		e.mustPut("c", "1")     // 2
		w.want(wProgress(0, 2))
		e.mustPut("a", "1") // 3: an event; the next tick is skipped
		w.want(wEvents(0, 3, evPut(kv("a", "1", 3, 3, 1))))
		w.want(wProgress(0, 3))
	})
}

// TestWatchFragment: with fragment set, a response larger than
// --max-request-bytes plus etcd's 512 KiB gRPC allowance is split between
// events; without it, it goes whole.
func TestWatchFragment(t *testing.T) {
	scenario(t, framework.Options{MaxRequestBytes: 16 * 1024}, func(e *env) {
		big := strings.Repeat("v", 10000)
		for i := range 60 {
			e.mustPut(fmt.Sprintf("f/%02d", i), big) // 2..61
		}
		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte(prefixEnd("f/")), StartRevision: 2, Fragment: true})
		got := w.take(3)
		e.wantEqual("created", normWatch(got[0]), wCreated(0, 61))
		e.wantEqual("fragment flags", []bool{got[1].Fragment, got[2].Fragment}, []bool{true, false})
		e.wantEqual("events", len(got[1].Events)+len(got[2].Events), 60)

		w.create(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte(prefixEnd("f/")), PrevKv: true, Fragment: true})
		w.create(&pb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte(prefixEnd("f/")), PrevKv: true})
		w.want(wCreated(1, 61), wCreated(2, 61))
		e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("f/"), RangeEnd: []byte(prefixEnd("f/"))}) // 62
		got = w.take(4)                                                                            // watcher 0: one response; 1: fragments; 2: whole
		byID := map[int64][]*pb.WatchResponse{}
		for _, r := range got {
			byID[r.WatchId] = append(byID[r.WatchId], r)
		}
		e.wantEqual("responses per watcher", []int{len(byID[0]), len(byID[1]), len(byID[2])}, []int{1, 2, 1})
		e.wantEqual("whole", len(byID[2][0].Events), 60)
	})
}

// TestWatchCatchUpLimit: a watcher catching up gets at most 1000
// revisions per response.
func TestWatchCatchUpLimit(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		for i := range 1100 {
			e.mustPut("k", fmt.Sprint(i)) // 2..1101
		}
		w := e.openWatch("s")
		w.create(&pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 2})
		got := w.take(3)
		e.wantEqual("created", normWatch(got[0]), wCreated(0, 1101))
		e.wantEqual("events per response", []int{len(got[1].Events), len(got[2].Events)}, []int{1000, 100})
		e.wantEqual("first and last", []int64{got[1].Events[0].Kv.ModRevision, got[2].Events[99].Kv.ModRevision}, []int64{2, 1101})
	})
}

// TestWatchAuth: with auth enabled a watch needs READ on its whole range,
// checked at creation; refusals are created-and-canceled responses whose
// reason is etcd's gRPC error text ("rpc error: code = ... desc = ...").
func TestWatchAuth(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		a := newAuthEnv(e)
		root := a.setupRootAndEnable()
		_, err := a.UserAdd(root, &pb.AuthUserAddRequest{Name: "u", Password: "upw"})
		a.must(err)
		_, err = a.RoleAdd(root, "r")
		a.must(err)
		_, err = a.RoleGrant(root, "r", authpb.READ, "a/", prefixEnd("a/"))
		a.must(err)
		_, err = a.UserGrantRole(root, "u", "r")
		a.must(err)
		u := a.as("u", "upw")
		p, err := a.Put(root, &pb.PutRequest{Key: []byte("a/1"), Value: []byte("x")})
		a.must(err)
		rev := p.(*pb.PutResponse).Header.Revision

		w := e.openWatchOn("u", a.conn, withToken(context.Background(), u.token))
		w.create(&pb.WatchCreateRequest{Key: []byte("a/1")})
		w.create(&pb.WatchCreateRequest{Key: []byte("a/"), RangeEnd: []byte(prefixEnd("a/"))})
		w.create(&pb.WatchCreateRequest{Key: []byte("a/"), RangeEnd: []byte{0}}) // from key: beyond the grant
		w.create(&pb.WatchCreateRequest{Key: []byte("b")})
		w.create(&pb.WatchCreateRequest{}) // "\x00"
		w.want(wCreated(0, rev), wCreated(1, rev),
			wRefused(rev, rpctypes.ErrGRPCPermissionDenied.Error()), wRefused(rev, rpctypes.ErrGRPCPermissionDenied.Error()), wRefused(rev, rpctypes.ErrGRPCPermissionDenied.Error()))
		_, err = a.Put(root, &pb.PutRequest{Key: []byte("a/1"), Value: []byte("y")})
		a.must(err)
		ev := evPut(kv("a/1", "y", rev, rev+1, 2))
		w.want(wEvents(0, rev+1, ev), wEvents(1, rev+1, ev))

		anonW := e.openWatchOn("anon", a.conn, context.Background())
		anonW.create(&pb.WatchCreateRequest{Key: []byte("a/1")})
		anonW.want(wRefused(rev+1, rpctypes.ErrGRPCUserEmpty.Error()))
		bad := e.openWatchOn("bad-token", a.conn, withToken(context.Background(), "garbage.1"))
		bad.create(&pb.WatchCreateRequest{Key: []byte("a/1")})
		bad.want(wRefused(rev+1, rpctypes.ErrGRPCInvalidAuthToken.Error()))
		rootW := e.openWatchOn("root", a.conn, withToken(context.Background(), root.token))
		rootW.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		rootW.want(wCreated(0, rev+1))
	})
}

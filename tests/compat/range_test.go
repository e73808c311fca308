package compat

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/tests/framework"
)

// rangeData writes a data set in which every sort target orders the five
// keys under r/ differently from the others (no ties):
//
//	key  value create mod version
//	r/a  2     6      6   1
//	r/b  4     5      16  2
//	r/c  3     4      10  3
//	r/d  5     3      13  4
//	r/e  1     2      15  5
//
// plus q (rev 17) and s (rev 18) around the prefix. Current revision: 18.
func rangeData(e *env) map[string]*mvccpb.KeyValue {
	e.t.Helper()
	for _, p := range [][2]string{
		{"r/e", "1"}, {"r/d", "5"}, {"r/c", "3"}, {"r/b", "4"}, {"r/a", "2"}, // revs 2..6
		{"r/c", "3"}, {"r/d", "5"}, {"r/e", "1"}, {"r/c", "3"}, {"r/d", "5"}, // 7..11
		{"r/e", "1"}, {"r/d", "5"}, {"r/e", "1"}, {"r/e", "1"}, {"r/b", "4"}, // 12..16
		{"q", "x"}, {"s", "y"}, // 17, 18
	} {
		e.mustPut(p[0], p[1])
	}
	return map[string]*mvccpb.KeyValue{
		"a": kv("r/a", "2", 6, 6, 1),
		"b": kv("r/b", "4", 5, 16, 2),
		"c": kv("r/c", "3", 4, 10, 3),
		"d": kv("r/d", "5", 3, 13, 4),
		"e": kv("r/e", "1", 2, 15, 5),
		"q": kv("q", "x", 17, 17, 1),
		"s": kv("s", "y", 18, 18, 1),
	}
}

func pick(m map[string]*mvccpb.KeyValue, names ...string) []*mvccpb.KeyValue {
	out := make([]*mvccpb.KeyValue, len(names))
	for i, n := range names {
		out[i] = m[n]
	}
	return out
}

func TestRange(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		m := rangeData(e)
		pre := func() *pb.RangeRequest { return &pb.RangeRequest{Key: []byte("r/"), RangeEnd: []byte(prefixEnd("r/"))} }

		e.run("prefix", func(e *env) {
			r := e.mustRange(pre())
			e.wantRev(r.Header, 18)
			e.wantKVs(r.Kvs, pick(m, "a", "b", "c", "d", "e")...)
			e.wantEqual("count", r.Count, int64(5))
			e.wantEqual("more", r.More, false)
		})
		e.run("single-key", func(e *env) {
			r := e.get("r/c")
			e.wantKVs(r.Kvs, m["c"])
			e.wantEqual("count", r.Count, int64(1))
			r = e.get("r/x")
			e.wantKVs(r.Kvs)
			e.wantEqual("count", r.Count, int64(0))
			// A key that is a prefix of others matches only itself.
			e.wantKVs(e.get("r").Kvs)
		})
		e.run("explicit-range-end", func(e *env) {
			e.wantKVs(e.mustRange(rng("r/b", "r/d")).Kvs, pick(m, "b", "c")...)
			e.wantKVs(e.mustRange(rng("r/b", "r/b\x00")).Kvs, m["b"])
			e.wantKVs(e.mustRange(rng("a", "r/b")).Kvs, pick(m, "q", "a")...)
			// range_end before key: empty.
			r := e.mustRange(rng("r/d", "r/b"))
			e.wantKVs(r.Kvs)
			e.wantEqual("count", r.Count, int64(0))
			r = e.mustRange(rng("r/d", "r/d"))
			e.wantKVs(r.Kvs)
		})
		e.run("from-key", func(e *env) {
			r := e.mustRange(rng("r/c", "\x00"))
			e.wantKVs(r.Kvs, pick(m, "c", "d", "e", "s")...)
			e.wantEqual("count", r.Count, int64(4))
			r = e.mustRange(rng("\x00", "\x00"))
			e.wantKVs(r.Kvs, pick(m, "q", "a", "b", "c", "d", "e", "s")...)
			e.wantEqual("count", r.Count, int64(7))
			r = e.mustRange(rng("t", "\x00"))
			e.wantKVs(r.Kvs)
		})
		e.run("limit", func(e *env) {
			for _, c := range []struct {
				limit int64
				keys  []string
				more  bool
			}{
				{1, []string{"a"}, true},
				{2, []string{"a", "b"}, true},
				{4, []string{"a", "b", "c", "d"}, true},
				{5, []string{"a", "b", "c", "d", "e"}, false},
				{6, []string{"a", "b", "c", "d", "e"}, false},
				{0, []string{"a", "b", "c", "d", "e"}, false},
			} {
				r := pre()
				r.Limit = c.limit
				resp := e.mustRange(r)
				e.wantKVs(resp.Kvs, pick(m, c.keys...)...)
				e.wantEqual(fmt.Sprintf("more (limit %d)", c.limit), resp.More, c.more)
				e.wantEqual(fmt.Sprintf("count (limit %d)", c.limit), resp.Count, int64(5))
			}
			r := rng("\x00", "\x00")
			r.Limit = 3
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs, pick(m, "q", "a", "b")...)
			e.wantEqual("more", resp.More, true)
			e.wantEqual("count", resp.Count, int64(7))
		})
		e.run("count-only", func(e *env) {
			r := pre()
			r.CountOnly = true
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs)
			e.wantEqual("count", resp.Count, int64(5))
			e.wantEqual("more", resp.More, false)
			r.Limit = 2
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs)
			e.wantEqual("count", resp.Count, int64(5))
			e.wantEqual("more (count_only+limit)", resp.More, false)
			r = pre()
			r.CountOnly, r.Revision = true, 6
			resp = e.mustRange(r)
			e.wantEqual("count at rev 6", resp.Count, int64(5))
			r = pre()
			r.CountOnly, r.Revision = true, 4
			resp = e.mustRange(r)
			e.wantEqual("count at rev 4", resp.Count, int64(3))
			r = pre()
			r.CountOnly, r.MinModRevision = true, 13
			resp = e.mustRange(r)
			e.wantEqual("count (count_only+filter)", resp.Count, int64(5))
			e.wantKVs(resp.Kvs)
		})
		e.run("keys-only", func(e *env) {
			r := pre()
			r.KeysOnly = true
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs, keysOnly(pick(m, "a", "b", "c", "d", "e")...)...)
			e.wantEqual("count", resp.Count, int64(5))
			r.Limit = 2
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, keysOnly(pick(m, "a", "b")...)...)
			e.wantEqual("more", resp.More, true)
			r = pre()
			r.KeysOnly, r.SortTarget, r.SortOrder = true, pb.RangeRequest_VALUE, pb.RangeRequest_ASCEND
			resp = e.mustRange(r)
			// sorted by the values that are then dropped
			e.wantKVs(resp.Kvs, keysOnly(pick(m, "e", "a", "c", "b", "d")...)...)
		})
		e.run("sort", func(e *env) {
			orders := map[pb.RangeRequest_SortTarget][]string{
				pb.RangeRequest_KEY:     {"a", "b", "c", "d", "e"},
				pb.RangeRequest_VERSION: {"a", "b", "c", "d", "e"},
				pb.RangeRequest_CREATE:  {"e", "d", "c", "b", "a"},
				pb.RangeRequest_MOD:     {"a", "c", "d", "e", "b"},
				pb.RangeRequest_VALUE:   {"e", "a", "c", "b", "d"},
			}
			for _, target := range []pb.RangeRequest_SortTarget{pb.RangeRequest_KEY, pb.RangeRequest_VERSION, pb.RangeRequest_CREATE, pb.RangeRequest_MOD, pb.RangeRequest_VALUE} {
				asc := orders[target]
				desc := make([]string, len(asc))
				for i := range asc {
					desc[len(asc)-1-i] = asc[i]
				}
				for _, order := range []pb.RangeRequest_SortOrder{pb.RangeRequest_NONE, pb.RangeRequest_ASCEND, pb.RangeRequest_DESCEND} {
					r := pre()
					r.SortTarget, r.SortOrder = target, order
					want := asc // NONE with any target sorts ascending by it
					if order == pb.RangeRequest_DESCEND {
						want = desc
					}
					resp := e.mustRange(r)
					e.t.Run(fmt.Sprintf("%v-%v", target, order), func(t *testing.T) {
						ee := *e
						ee.t = t
						ee.wantKVs(resp.Kvs, pick(m, want...)...)
						ee.wantEqual("count", resp.Count, int64(5))
					})
					// sort, then limit
					r.Limit = 2
					resp = e.mustRange(r)
					wantLimited := want[:2]
					if order == pb.RangeRequest_NONE && target != pb.RangeRequest_KEY {
						// etcd quirk: with order NONE the limit is not lifted
						// before sorting, so etcd reads limit+1 keys in key
						// order, sorts those ascending by the target and
						// truncates: a sorted prefix of the key order.
						wantLimited = sortedPrefix(asc, []string{"a", "b", "c"})[:2]
					}
					e.t.Run(fmt.Sprintf("%v-%v-limit2", target, order), func(t *testing.T) {
						ee := *e
						ee.t = t
						ee.wantKVs(resp.Kvs, pick(m, wantLimited...)...)
						ee.wantEqual("more", resp.More, true)
						ee.wantEqual("count", resp.Count, int64(5))
					})
				}
			}
			// Invalid sort options.
			r := pre()
			r.SortOrder = 7
			_, err := e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCInvalidSortOption)
			r = pre()
			r.SortTarget = 9
			_, err = e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCInvalidSortOption)
		})
		e.run("mod-create-filters", func(e *env) {
			for _, c := range []struct {
				name                           string
				minMod, maxMod, minCre, maxCre int64
				keys                           []string
			}{
				{"min-mod", 13, 0, 0, 0, []string{"b", "d", "e"}},
				{"max-mod", 0, 10, 0, 0, []string{"a", "c"}},
				{"min-max-mod", 10, 15, 0, 0, []string{"c", "d", "e"}},
				{"min-mod-equal", 16, 0, 0, 0, []string{"b"}},
				{"min-create", 0, 0, 4, 0, []string{"a", "b", "c"}},
				{"max-create", 0, 0, 0, 3, []string{"d", "e"}},
				{"min-max-create", 0, 0, 3, 5, []string{"b", "c", "d"}},
				{"mod-and-create", 13, 0, 0, 4, []string{"d", "e"}},
				{"none-match", 17, 0, 0, 0, nil},
				{"empty-window", 12, 11, 0, 0, nil},
			} {
				r := pre()
				r.MinModRevision, r.MaxModRevision, r.MinCreateRevision, r.MaxCreateRevision = c.minMod, c.maxMod, c.minCre, c.maxCre
				resp := e.mustRange(r)
				e.t.Run(c.name, func(t *testing.T) {
					ee := *e
					ee.t = t
					ee.wantKVs(resp.Kvs, pick(m, c.keys...)...)
					ee.wantEqual("count (unaffected by filters)", resp.Count, int64(5))
					ee.wantEqual("more", resp.More, false)
				})
			}
			// filters + limit: more reflects the filtered list
			r := pre()
			r.MinModRevision, r.Limit = 13, 2
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs, pick(m, "b", "d")...)
			e.wantEqual("more", resp.More, true)
			e.wantEqual("count", resp.Count, int64(5))
			r.Limit = 3
			resp = e.mustRange(r)
			e.wantEqual("more (limit = filtered)", resp.More, false)
			// filters + sort + limit
			r = pre()
			r.MinModRevision, r.SortTarget, r.SortOrder, r.Limit = 13, pb.RangeRequest_MOD, pb.RangeRequest_DESCEND, 2
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, pick(m, "b", "e")...)
			e.wantEqual("more", resp.More, true)
			// filters at a past revision
			r = pre()
			r.Revision, r.MinModRevision = 12, 9
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/c", "3", 4, 10, 3), kv("r/d", "5", 3, 11, 3), kv("r/e", "1", 2, 12, 3))
			e.wantEqual("count", resp.Count, int64(5))
			e.wantRev(resp.Header, 18)
		})
		e.run("revision", func(e *env) {
			r := pre()
			r.Revision = 6
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/a", "2", 6, 6, 1), kv("r/b", "4", 5, 5, 1), kv("r/c", "3", 4, 4, 1), kv("r/d", "5", 3, 3, 1), kv("r/e", "1", 2, 2, 1))
			e.wantRev(resp.Header, 18)
			r.Revision = 3
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/d", "5", 3, 3, 1), kv("r/e", "1", 2, 2, 1))
			e.wantEqual("count", resp.Count, int64(2))
			r.Revision = 1
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs)
			r.Revision = 18
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, pick(m, "a", "b", "c", "d", "e")...)
			r.Revision, r.Limit, r.SortTarget, r.SortOrder = 12, 2, pb.RangeRequest_MOD, pb.RangeRequest_DESCEND
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/e", "1", 2, 12, 3), kv("r/d", "5", 3, 11, 3))
			e.wantEqual("more", resp.More, true)
			e.wantEqual("count", resp.Count, int64(5))
			r = pre()
			r.Revision = 19
			_, err := e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCFutureRev)
			r.Revision = 1000
			_, err = e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCFutureRev)
		})
		e.run("serializable", func(e *env) {
			r := pre()
			r.Serializable = true
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs, pick(m, "a", "b", "c", "d", "e")...)
			e.wantRev(resp.Header, 18)
			r.Revision, r.Limit = 6, 1
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/a", "2", 6, 6, 1))
			e.wantEqual("more", resp.More, true)
		})
		e.run("empty-key", func(e *env) {
			_, err := e.Range(&pb.RangeRequest{})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
			_, err = e.Range(&pb.RangeRequest{RangeEnd: []byte("z")})
			e.wantErr(err, rpctypes.ErrGRPCEmptyKey)
		})
		e.run("compacted", func(e *env) {
			e.mustCompact(&pb.CompactionRequest{Revision: 10})
			r := pre()
			r.Revision = 9
			_, err := e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			r.Revision = 1
			_, err = e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			r.Revision = 10 // the compaction revision itself is still readable
			resp := e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/a", "2", 6, 6, 1), kv("r/b", "4", 5, 5, 1), kv("r/c", "3", 4, 10, 3), kv("r/d", "5", 3, 8, 2), kv("r/e", "1", 2, 9, 2))
			r.Revision = 11
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, kv("r/a", "2", 6, 6, 1), kv("r/b", "4", 5, 5, 1), kv("r/c", "3", 4, 10, 3), kv("r/d", "5", 3, 11, 3), kv("r/e", "1", 2, 9, 2))
			r.Revision = 0
			resp = e.mustRange(r)
			e.wantKVs(resp.Kvs, pick(m, "a", "b", "c", "d", "e")...)
			r = pre()
			r.Revision, r.CountOnly = 5, true
			_, err = e.Range(r)
			e.wantErr(err, rpctypes.ErrGRPCCompacted)
			r = pre()
			r.Revision = 100
			_, err = e.Range(r) // future is checked as well after a compaction
			e.wantErr(err, rpctypes.ErrGRPCFutureRev)
		})
	})
}

// sortedPrefix returns subset ordered as in order.
func sortedPrefix(order, subset []string) []string {
	in := map[string]bool{}
	for _, k := range subset {
		in[k] = true
	}
	var out []string
	for _, k := range order {
		if in[k] {
			out = append(out, k)
		}
	}
	return out
}

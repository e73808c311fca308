package compat

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	gogoproto "github.com/gogo/protobuf/proto"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/tests/framework"
)

// env is one backend's side of a scenario: raw etcdserverpb stubs over a
// clientv3 connection (so that every request field is sent exactly as
// written), plus a transcript of every KV call for the cross-backend
// comparison.
type env struct {
	t       *testing.T
	backend string
	srv     *framework.Server
	cli     *clientv3.Client
	kv      pb.KVClient
	maint   pb.MaintenanceClient
	cluster pb.ClusterClient
	lease   pb.LeaseClient
	log     *[]entry
	base    string // name of the backend's test; transcript labels are relative to it
}

// entry is one recorded call: a label, the response (nil on error) and the
// error.
type entry struct {
	label string
	resp  any
	err   error
}

func newEnv(t *testing.T, backend string, srv *framework.Server) *env {
	cli := srv.Client(t)
	conn := cli.ActiveConnection()
	return &env{
		t: t, backend: backend, srv: srv, cli: cli,
		kv:      pb.NewKVClient(conn),
		maint:   pb.NewMaintenanceClient(conn),
		cluster: pb.NewClusterClient(conn),
		lease:   pb.NewLeaseClient(conn),
		log:     new([]entry),
		base:    t.Name(),
	}
}

// run runs f as a subtest sharing this env's server and transcript.
func (e *env) run(name string, f func(e *env)) {
	e.t.Helper()
	e.t.Run(name, func(t *testing.T) {
		sub := *e
		sub.t = t
		f(&sub)
	})
}

func (e *env) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (e *env) record(label string, resp any, err error) {
	if err != nil {
		resp = nil
	}
	sub := strings.TrimPrefix(strings.TrimPrefix(e.t.Name(), e.base), "/")
	if sub != "" {
		sub += ": "
	}
	label = short(label)
	*e.log = append(*e.log, entry{label: sub + label, resp: resp, err: err})
}

func (e *env) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.Range(ctx, r)
	e.record(fmt.Sprintf("Range(%v)", r), resp, err)
	return resp, err
}

func (e *env) Put(r *pb.PutRequest) (*pb.PutResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.Put(ctx, r)
	e.record(fmt.Sprintf("Put(%v)", r), resp, err)
	return resp, err
}

func (e *env) Delete(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.DeleteRange(ctx, r)
	e.record(fmt.Sprintf("DeleteRange(%v)", r), resp, err)
	return resp, err
}

func (e *env) Txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.Txn(ctx, r)
	e.record(fmt.Sprintf("Txn(%v)", r), resp, err)
	return resp, err
}

func (e *env) Compact(r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.Compact(ctx, r)
	e.record(fmt.Sprintf("Compact(%v)", r), resp, err)
	return resp, err
}

// must* variants fail the test on error.

func (e *env) mustRange(r *pb.RangeRequest) *pb.RangeResponse {
	e.t.Helper()
	resp, err := e.Range(r)
	if err != nil {
		e.t.Fatalf("Range(%s): %v", short(r), err)
	}
	return resp
}

func (e *env) mustPut(key, value string) *pb.PutResponse {
	e.t.Helper()
	r := &pb.PutRequest{Key: []byte(key), Value: []byte(value)}
	resp, err := e.Put(r)
	if err != nil {
		e.t.Fatalf("Put(%s): %v", short(r), err)
	}
	return resp
}

func (e *env) mustPutReq(r *pb.PutRequest) *pb.PutResponse {
	e.t.Helper()
	resp, err := e.Put(r)
	if err != nil {
		e.t.Fatalf("Put(%s): %v", short(r), err)
	}
	return resp
}

func (e *env) mustDelete(r *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	e.t.Helper()
	resp, err := e.Delete(r)
	if err != nil {
		e.t.Fatalf("DeleteRange(%s): %v", short(r), err)
	}
	return resp
}

func (e *env) mustTxn(r *pb.TxnRequest) *pb.TxnResponse {
	e.t.Helper()
	resp, err := e.Txn(r)
	if err != nil {
		e.t.Fatalf("Txn(%s): %v", short(r), err)
	}
	return resp
}

func (e *env) mustCompact(r *pb.CompactionRequest) *pb.CompactionResponse {
	e.t.Helper()
	resp, err := e.Compact(r)
	if err != nil {
		e.t.Fatalf("Compact(%s): %v", short(r), err)
	}
	return resp
}

// get is a plain linearizable single-key Range.
func (e *env) get(key string) *pb.RangeResponse {
	e.t.Helper()
	return e.mustRange(&pb.RangeRequest{Key: []byte(key)})
}

// rev returns the current revision (from an unrecorded serializable read of
// a key no scenario uses, so it does not disturb the transcript).
func (e *env) rev() int64 {
	e.t.Helper()
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.kv.Range(ctx, &pb.RangeRequest{Key: []byte("\xff/rev-probe")})
	if err != nil {
		e.t.Fatalf("rev probe: %v", err)
	}
	return resp.Header.Revision
}

// wantRev asserts the header's revision.
func (e *env) wantRev(h *pb.ResponseHeader, want int64) {
	e.t.Helper()
	if h == nil {
		e.t.Errorf("header is nil, want revision %d", want)
		return
	}
	if h.Revision != want {
		e.t.Errorf("header.revision = %d, want %d", h.Revision, want)
	}
}

// wantErr asserts that err has exactly want's gRPC code and message.
func (e *env) wantErr(err, want error) {
	e.t.Helper()
	if err == nil {
		e.t.Errorf("got no error, want %v", want)
		return
	}
	g, w := status.Convert(err), status.Convert(want)
	if g.Code() != w.Code() || g.Message() != w.Message() {
		e.t.Errorf("error = code %v %q, want code %v %q", g.Code(), g.Message(), w.Code(), w.Message())
	}
}

// kv builds an expected KeyValue.
func kv(key, value string, create, mod, version int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(key), Value: []byte(value), CreateRevision: create, ModRevision: mod, Version: version}
}

// keysOnly strips the value of expected KeyValues.
func keysOnly(kvs ...*mvccpb.KeyValue) []*mvccpb.KeyValue {
	out := make([]*mvccpb.KeyValue, len(kvs))
	for i, k := range kvs {
		c := *k
		c.Value = nil
		out[i] = &c
	}
	return out
}

var cmpOpts = []cmp.Option{
	cmp.FilterPath(func(p cmp.Path) bool {
		sf, ok := p.Last().(cmp.StructField)
		return ok && strings.HasPrefix(sf.Name(), "XXX_")
	}, cmp.Ignore()),
	cmpopts.EquateEmpty(),
}

// wantKVs asserts the exact list of KeyValues.
func (e *env) wantKVs(got []*mvccpb.KeyValue, want ...*mvccpb.KeyValue) {
	e.t.Helper()
	if d := cmp.Diff(want, got, cmpOpts...); d != "" {
		e.t.Errorf("kvs mismatch (-want +got):\n%s", d)
	}
}

// wantKeys asserts the keys (in order) of a list of KeyValues.
func (e *env) wantKeys(got []*mvccpb.KeyValue, want ...string) {
	e.t.Helper()
	var keys []string
	for _, k := range got {
		keys = append(keys, string(k.Key))
	}
	if d := cmp.Diff(want, keys, cmpopts.EquateEmpty()); d != "" {
		e.t.Errorf("keys mismatch (-want +got):\n%s", d)
	}
}

func (e *env) wantEqual(what string, got, want any) {
	e.t.Helper()
	if d := cmp.Diff(want, got, cmpOpts...); d != "" {
		e.t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// scenario runs f against every backend (etcd first, each on a fresh
// server), then requires the metastore transcript to equal etcd's, call by
// call, with cluster_id, member_id and raft_term of top-level headers
// ignored.
func scenario(t *testing.T, o framework.Options, f func(e *env)) {
	t.Helper()
	t.Parallel()
	var logs [][]entry
	for _, b := range framework.Backends() {
		var log []entry
		ok := t.Run(b.Name, func(t *testing.T) {
			srv := b.Start(t, o)
			e := newEnv(t, b.Name, srv)
			f(e)
			log = *e.log
		})
		if !ok && b.Name == "etcd" {
			t.Fatalf("the scenario's expectations do not hold on etcd; fix the test before comparing metastore")
		}
		logs = append(logs, log) // a failed metastore run is still compared, for the diff
	}
	if len(logs) == 2 {
		t.Run("same-transcript", func(t *testing.T) { compareTranscripts(t, logs[0], logs[1]) })
	}
}

// normalize clears what legitimately differs between two servers: the
// identity fields of the top-level response header.
func normalize(resp any) any {
	if resp == nil {
		return nil
	}
	v := reflect.ValueOf(resp)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		h := v.Elem().FieldByName("Header")
		if h.IsValid() && h.Type() == reflect.TypeOf(&pb.ResponseHeader{}) && !h.IsNil() {
			hdr := h.Interface().(*pb.ResponseHeader)
			hdr.ClusterId, hdr.MemberId, hdr.RaftTerm = 0, 0, 0
		}
	}
	return resp
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	s := status.Convert(err)
	return fmt.Sprintf("code=%v message=%q", s.Code(), s.Message())
}

func compareTranscripts(t *testing.T, want, got []entry) {
	t.Helper()
	n := min(len(want), len(got))
	diffs := 0
	for i := 0; i < n && diffs < 10; i++ {
		w, g := want[i], got[i]
		if w.label != g.label {
			t.Fatalf("transcripts diverge at call %d: etcd %s, metastore %s", i, w.label, g.label)
		}
		if we, ge := errString(w.err), errString(g.err); we != ge {
			t.Errorf("%s:\n  etcd error      %s\n  metastore error %s", w.label, we, ge)
			diffs++
			continue
		}
		wn, gn := normalize(w.resp), normalize(g.resp)
		if reflect.DeepEqual(wn, gn) {
			continue // comparing large equal responses with cmp is slow
		}
		if d := respDiff(wn, gn); d != "" {
			t.Errorf("%s: response differs (-etcd +metastore):\n%s", w.label, d)
			diffs++
		}
	}
	if len(want) != len(got) {
		t.Errorf("transcript lengths differ: etcd %d calls, metastore %d", len(want), len(got))
	}
}

// Request builders.

func rng(key, end string) *pb.RangeRequest {
	r := &pb.RangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return r
}

func prefixEnd(p string) string { return string(clientv3.GetPrefixRangeEnd(p)) }

func opPut(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func opPutReq(r *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: r}}
}

func opRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func opDelete(key, end string) *pb.RequestOp {
	r := &pb.DeleteRangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}
}

func opTxn(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}

func cmpValue(key string, res pb.Compare_CompareResult, v string) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_VALUE, Result: res, TargetUnion: &pb.Compare_Value{Value: []byte(v)}}
}

func cmpVersion(key string, res pb.Compare_CompareResult, v int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_VERSION, Result: res, TargetUnion: &pb.Compare_Version{Version: v}}
}

func cmpCreate(key string, res pb.Compare_CompareResult, v int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_CREATE, Result: res, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: v}}
}

func cmpMod(key string, res pb.Compare_CompareResult, v int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_MOD, Result: res, TargetUnion: &pb.Compare_ModRevision{ModRevision: v}}
}

func cmpLease(key string, res pb.Compare_CompareResult, v int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_LEASE, Result: res, TargetUnion: &pb.Compare_Lease{Lease: v}}
}

// nilSafe turns an optional KeyValue into a list for wantKVs.
func nilSafe(k *mvccpb.KeyValue) []*mvccpb.KeyValue {
	if k == nil {
		return nil
	}
	return []*mvccpb.KeyValue{k}
}

// short renders v for a message, cut to a readable length.
func short(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 400 {
		s = s[:400] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return s
}

// respDiff compares two responses (cmpOpts semantics) and, if they differ,
// renders the difference line by line in protobuf text format, where keys
// and values read as strings.
func respDiff(a, b any) string {
	if cmp.Equal(a, b, cmpOpts...) {
		return ""
	}
	text := func(v any) []string {
		if m, ok := v.(gogoproto.Message); ok && m != nil && !reflect.ValueOf(m).IsNil() {
			return strings.Split(strings.TrimSpace(gogoproto.MarshalTextString(m)), "\n")
		}
		return []string{fmt.Sprintf("%#v", v)}
	}
	if d := cmp.Diff(text(a), text(b)); d != "" {
		return d
	}
	return cmp.Diff(a, b, cmpOpts...)
}

package compat

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/metastore-dev/metastore/tests/framework"
)

// TestMaintenanceAndCluster covers Status, Alarm list, MemberList and
// health. These carry server identities and sizes, so they are checked by
// assertion (each must hold on etcd too) rather than by transcript.
func TestMaintenanceAndCluster(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		e.mustPut("a", "1")
		e.mustPut("b", "2")
		ctx, cancel := e.ctx()
		defer cancel()

		e.run("status", func(e *env) {
			s, err := e.maint.Status(ctx, &pb.StatusRequest{})
			if err != nil {
				e.t.Fatalf("Status: %v", err)
			}
			e.wantRev(s.Header, 3)
			if s.Header.MemberId == 0 || s.Header.ClusterId == 0 {
				e.t.Errorf("header member_id=%x cluster_id=%x, want both non-zero", s.Header.MemberId, s.Header.ClusterId)
			}
			if s.Leader != s.Header.MemberId {
				e.t.Errorf("leader = %x, want the member itself (%x)", s.Leader, s.Header.MemberId)
			}
			if !strings.HasPrefix(s.Version, "3.") {
				e.t.Errorf("version = %q, want an etcd 3.x version string", s.Version)
			}
			if s.DbSize <= 0 || s.DbSizeInUse <= 0 || s.DbSizeInUse > s.DbSize {
				e.t.Errorf("db_size = %d, db_size_in_use = %d; want 0 < in_use <= size", s.DbSize, s.DbSizeInUse)
			}
			if s.IsLearner {
				e.t.Errorf("is_learner = true")
			}
			if len(s.Errors) != 0 {
				e.t.Errorf("errors = %v, want none", s.Errors)
			}
			if s.RaftTerm == 0 || s.RaftIndex == 0 || s.RaftAppliedIndex == 0 {
				e.t.Errorf("raft_term=%d raft_index=%d raft_applied_index=%d; want non-zero (etcdctl shows them)", s.RaftTerm, s.RaftIndex, s.RaftAppliedIndex)
			}
			if s.RaftAppliedIndex > s.RaftIndex {
				e.t.Errorf("raft_applied_index %d > raft_index %d", s.RaftAppliedIndex, s.RaftIndex)
			}
		})
		e.run("alarm-list", func(e *env) {
			a, err := e.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
			if err != nil {
				e.t.Fatalf("Alarm GET: %v", err)
			}
			e.wantRev(a.Header, 3)
			if len(a.Alarms) != 0 {
				e.t.Errorf("alarms = %v, want none", a.Alarms)
			}
			ca, err := e.cli.AlarmList(ctx)
			if err != nil {
				e.t.Fatalf("clientv3 AlarmList: %v", err)
			}
			if len(ca.Alarms) != 0 {
				e.t.Errorf("clientv3 alarms = %v", ca.Alarms)
			}
		})
		e.run("member-list", func(e *env) {
			for _, linearizable := range []bool{true, false} {
				m, err := e.cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: linearizable})
				if err != nil {
					e.t.Fatalf("MemberList: %v", err)
				}
				if len(m.Members) != 1 {
					e.t.Fatalf("members = %v, want one", m.Members)
				}
				mem := m.Members[0]
				if mem.ID == 0 || mem.ID != m.Header.MemberId {
					e.t.Errorf("member id = %x, header member_id = %x; want equal and non-zero", mem.ID, m.Header.MemberId)
				}
				e.wantEqual("name", mem.Name, "default")
				e.wantEqual("client_urls", mem.ClientURLs, []string{"http://" + e.srv.Endpoint})
				e.wantEqual("is_learner", mem.IsLearner, false)
				if m.Header.ClusterId == 0 {
					e.t.Errorf("cluster_id is 0")
				}
			}
			s, err := e.maint.Status(ctx, &pb.StatusRequest{})
			if err == nil {
				m, err := e.cli.MemberList(ctx)
				if err != nil {
					e.t.Fatalf("clientv3 MemberList: %v", err)
				}
				if m.Header.ClusterId != s.Header.ClusterId || m.Members[0].ID != s.Header.MemberId {
					e.t.Errorf("MemberList and Status disagree on cluster/member ids")
				}
			}
		})
		e.run("grpc-health", func(e *env) {
			h, err := healthpb.NewHealthClient(e.cli.ActiveConnection()).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				e.t.Fatalf("grpc health: %v", err)
			}
			e.wantEqual("status", h.Status, healthpb.HealthCheckResponse_SERVING)
		})
		e.run("http-health", func(e *env) {
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + e.srv.Endpoint + "/health")
			if err != nil {
				e.t.Fatalf("GET /health: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e.wantEqual("status code", resp.StatusCode, 200)
			var h map[string]any
			if err := json.Unmarshal(body, &h); err != nil {
				e.t.Fatalf("/health body %q: %v", body, err)
			}
			e.wantEqual("/health", h, map[string]any{"health": "true", "reason": ""})
		})
	})
}

// TestClientErrors: clients map errors back by identity (kube-apiserver
// compares err == rpctypes.ErrCompacted); through clientv3 every error must
// come back as the very rpctypes value etcd gives.
func TestClientErrors(t *testing.T) {
	scenario(t, framework.Options{}, func(e *env) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cli := e.cli
		want := func(what string, err, w error) {
			e.t.Helper()
			if err != w { //nolint:errorlint // identity is the point
				e.t.Errorf("%s: err = %#v, want %#v (identical)", what, err, w)
			}
			if !errors.Is(err, w) {
				e.t.Errorf("%s: errors.Is(%v, %v) = false", what, err, w)
			}
		}
		if _, err := cli.Put(ctx, "a", "1"); err != nil {
			e.t.Fatal(err)
		}
		if _, err := cli.Put(ctx, "a", "2"); err != nil {
			e.t.Fatal(err)
		}
		if _, err := cli.Compact(ctx, 2, clientv3.WithCompactPhysical()); err != nil {
			e.t.Fatal(err)
		}
		_, err := cli.Get(ctx, "a", clientv3.WithRev(1))
		want("get compacted", err, rpctypes.ErrCompacted)
		_, err = cli.Get(ctx, "a", clientv3.WithRev(100))
		want("get future", err, rpctypes.ErrFutureRev)
		_, err = cli.Compact(ctx, 2)
		want("compact compacted", err, rpctypes.ErrCompacted)
		_, err = cli.Compact(ctx, 100)
		want("compact future", err, rpctypes.ErrFutureRev)
		_, err = cli.Put(ctx, "", "v")
		want("put empty key", err, rpctypes.ErrEmptyKey)
		_, err = cli.Get(ctx, "")
		want("get empty key", err, rpctypes.ErrEmptyKey)
		_, err = cli.Delete(ctx, "")
		want("delete empty key", err, rpctypes.ErrEmptyKey)
		_, err = cli.Put(ctx, "missing", "", clientv3.WithIgnoreValue())
		want("ignore value missing", err, rpctypes.ErrKeyNotFound)
		_, err = cli.Put(ctx, "a", "x", clientv3.WithIgnoreValue())
		want("ignore value with value", err, rpctypes.ErrValueProvided)
		_, err = cli.Put(ctx, "a", "x", clientv3.WithLease(99))
		want("lease not found", err, rpctypes.ErrLeaseNotFound)
		_, err = cli.Txn(ctx).Then(clientv3.OpPut("d", "1"), clientv3.OpPut("d", "2")).Commit()
		want("duplicate key", err, rpctypes.ErrDuplicateKey)
		ops := make([]clientv3.Op, 129)
		for i := range ops {
			ops[i] = clientv3.OpGet("k")
		}
		_, err = cli.Txn(ctx).Then(ops...).Commit()
		want("too many ops", err, rpctypes.ErrTooManyOps)
		_, err = cli.Txn(ctx).Then(clientv3.OpGet("a", clientv3.WithRev(1))).Commit()
		want("txn get compacted", err, rpctypes.ErrCompacted)
	})
}

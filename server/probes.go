package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// etcd's /livez and /readyz: named checks, each also at its own sub-path
// (/readyz/linearizable_read), skipped with ?exclude=<name>, listed as
// "[+]<name> ok" or "[-]<name> failed: <reason>" when ?verbose is given or
// one fails (then 503). /livez is the local read; /readyz adds the
// CORRUPT alarm, a linearizable read and whether this member is a learner.

type probeCheck struct {
	name  string
	check func(ctx context.Context) error
}

func (s *Server) probeChecks(kind string) []probeCheck {
	serializableRead := probeCheck{"serializable_read", func(ctx context.Context) error { return s.readCheck(ctx, true) }}
	if kind == "livez" {
		return []probeCheck{serializableRead}
	}
	return []probeCheck{
		{"data_corruption", func(context.Context) error {
			for _, a := range s.applier.Alarms() {
				if a.Alarm == pb.AlarmType_CORRUPT {
					return fmt.Errorf("alarm activated: %s", a.Alarm)
				}
			}
			return nil
		}},
		serializableRead,
		{"linearizable_read", func(ctx context.Context) error { return s.readCheck(ctx, false) }},
		{"non_learner", func(context.Context) error {
			if m := s.applier.Members().Member(s.ids.Member); s.node != nil && m != nil && m.IsLearner {
				return errors.New("not supported for learner")
			}
			return nil
		}},
	}
}

// handleProbes answers /livez, /readyz and their sub-paths.
func (s *Server) handleProbes(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	kind, sub, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	all := s.probeChecks(kind)
	var run []probeCheck
	if sub != "" {
		for _, c := range all {
			if c.name == sub {
				run = append(run, c)
			}
		}
		if run == nil {
			http.NotFound(w, r)
			return
		}
	} else {
		excluded := map[string]bool{}
		for _, e := range r.URL.Query()["exclude"] {
			excluded[e] = true
		}
		for _, c := range all {
			if !excluded[c.name] {
				run = append(run, c)
			}
		}
	}
	var out strings.Builder
	failed := false
	for _, c := range run {
		if err := c.check(r.Context()); err != nil {
			failed = true
			fmt.Fprintf(&out, "[-]%s failed: %v\n", c.name, err)
		} else {
			fmt.Fprintf(&out, "[+]%s ok\n", c.name)
		}
	}
	if failed {
		http.Error(w, out.String(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		fmt.Fprint(w, out.String())
	}
	fmt.Fprint(w, "ok\n")
}

// readCheck is etcd's health read: a range of one key, from this member
// (serializable) or after a ReadIndex round (linearizable, on a cluster),
// within etcd's request timeout; errors as etcd words them.
func (s *Server) readCheck(ctx context.Context, serializable bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second+2*s.cfg.Cluster.ElectionTimeout)
	defer cancel()
	if !serializable && s.node != nil {
		if _, err := s.node.ReadIndex(ctx); err != nil {
			return errors.New(rpctypes.ErrorDesc(v3rpc.GRPCError(err)))
		}
	}
	if _, err := s.store.Range(ctx, []byte("health"), nil, mvcc.RangeOptions{Limit: 1}); err != nil {
		return errors.New(rpctypes.ErrorDesc(v3rpc.GRPCError(err)))
	}
	return nil
}

package v3rpc

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/guard"
)

// The services' way through the guard (server/guard) to the proposer: a
// write is checked by the guard as a whole (identity, size, alarm,
// authorization, admission, quotas) and the request it returns is
// proposed; a read is authorized, read, then authorized again while auth
// moved meanwhile. Errors leave through the one error table.

// proposeGuarded checks r with the guard and proposes what it returns; if
// auth changed between the two, apply refuses the write untouched and it is
// checked again.
func (s *Server) proposeGuarded(ctx context.Context, r *apply.Request) (apply.Result, error) {
	for {
		final, err := s.guard.Write(ctx, r)
		if err != nil {
			return apply.Result{}, toGRPCError(err)
		}
		res, err := s.loop.Propose(ctx, final)
		if err != nil {
			return res, toGRPCError(err)
		}
		if errors.Is(res.Err, apply.ErrAuthRetry) {
			continue
		}
		if res.Err != nil {
			return res, toGRPCError(res.Err)
		}
		return res, nil
	}
}

// recheck authorizes a read again while the auth state moved since id was
// identified, so that a read is never answered under permissions older
// than its own start.
// It returns the identity of the last check.
func (s *Server) recheck(ctx context.Context, id guard.Identity, req any) (guard.Identity, error) {
	for s.guard.AuthMoved(id) {
		var err error
		if id, err = s.guard.Read(ctx, req); err != nil {
			return id, toGRPCError(err)
		}
	}
	return id, nil
}

// propose sends a mutation that needs no authorization of its own (the
// server's: alarms, lease expiry, versions) and maps its errors.
func (s *Server) propose(ctx context.Context, r *apply.Request) (apply.Result, error) {
	res, err := s.loop.Propose(ctx, r)
	if err != nil {
		return res, toGRPCError(err)
	}
	if res.Err != nil {
		return res, toGRPCError(res.Err)
	}
	return res, nil
}

// requireUser is etcd's requireAuthInfo: with auth enabled the caller must
// be authenticated (any user).
func (s *Server) requireUser(ctx context.Context) error { return s.guard.RequireUser(ctx) }

// requireAdmin is etcd's admin check (maintenance and auth management).
func (s *Server) requireAdmin(ctx context.Context) error { return s.guard.RequireAdmin(ctx) }

// authorizeWatch checks READ on a watch's key range, as etcd's watch create.
// On an error, etcd answers the create with created and canceled set and
// watchCancelReason(err) as the cancel reason.
func (s *Server) authorizeWatch(ctx context.Context, key, end []byte) error {
	return s.guard.AuthorizeWatch(ctx, key, end)
}

// Validators are the checks admission runs on a policy's mutation: those of
// a client's request, with --max-txn-ops.
func Validators(maxTxnOps int) guard.Validators {
	return guard.Validators{
		Put:         checkPutRequest,
		DeleteRange: checkDeleteRequest,
		Txn: func(m *pb.TxnRequest) error {
			if err := checkTxnRequest(m, maxTxnOps); err != nil {
				return err
			}
			if _, _, err := checkIntervals(m.Success); err != nil {
				return err
			}
			_, _, err := checkIntervals(m.Failure)
			return err
		},
	}
}

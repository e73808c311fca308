package server

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/server/apply"
)

// Enforcement of etcd's auth on every RPC. Requests are authorized on the
// caller's goroutine, against the current auth state, by the Authorizer
// chain (s.authz; the built-in RBAC is its last member), before they are
// queued for apply. Writes carry the auth revision they were authorized at;
// if auth changed before they are applied, apply refuses them untouched
// (apply.ErrAuthRetry) and they are authorized again. Reads check the auth
// epoch after reading and authorize again if it moved.
//
// Entry points for the services:
//
//	identify(ctx)                      who is calling (token, else client-cert CN)
//	authorizeKV(ctx, id, op, fill)     run the chain on the auth.Request fill describes
//	proposeAuthorized(ctx, r, check)   authorize a mutation and apply it, retrying on auth changes
//	readAuthorized(ctx, check, read)   authorize, read, re-check if auth moved meanwhile
//	requireUser(ctx)                   etcd's requireAuthInfo: any authenticated user
//	requireAdmin(ctx)                  etcd's admin check: the root role
//	authorizeWatch(ctx, key, end)      READ on a watch's range; watchCancelReason maps the error
//	authorizeLeaseKeys(ctx, perm, ks)  perm on every key of a lease unless root (needs a user)
//
// As etcd uses them: Watch create calls authorizeWatch(stream ctx, key, end)
// after turning an empty key into "\x00" and refusing a negative start
// revision, and on an error answers WatchId -1, Created and Canceled with
// CancelReason watchCancelReason(err). LeaseGrant calls requireUser;
// LeaseRevoke proposes through proposeAuthorized with the check
// authorizeLeaseKeysAs(ctx, id, auth.PermWrite, s.leaseKeysOf(r.ID));
// keep-alive calls authorizeLeaseKeys(ctx, auth.PermWrite, keys) per
// request, TimeToLive with Keys set and Leases use auth.PermRead (Leases over
// the keys of every lease). The lessor sets s.leaseKeys so that a put to a
// lease is refused when the user could not write the lease's other keys.
// Hash, HashKV, Snapshot and Downgrade call requireAdmin, as Defragment does.

// identity is the caller of one request.
type identity struct {
	user string
	// rev is the auth revision the caller was identified at, 0 when auth
	// is disabled; it goes into the request header for apply's check.
	rev uint64
	// epoch is the auth store's epoch at identification.
	epoch uint64
	// chain is the policy generation the request decides with, held for
	// the whole of a check (proposeAuthorized, readAuthorized); nil makes
	// each decision take the current one.
	chain       *policyChain
	chainStripe uint32
}

// metadata key gRPC-gateway adds to proxied requests; their client
// certificate is the gateway's, not the user's.
const gatewayHeader = "grpcgateway-accept"

// identify resolves the caller as etcd does: nobody while auth is disabled;
// else the user of the "token" (or "authorization") metadata, failing with
// ErrInvalidAuthToken for a bad token; else, under client-certificate auth,
// the verified certificate's common name.
func (s *Server) identify(ctx context.Context) (identity, error) {
	enabled, rev, epoch := s.auth.State()
	if !enabled {
		return identity{epoch: epoch}, nil
	}
	id := identity{rev: rev, epoch: epoch}
	// NB: "authorization" is looked up only without "token": a missing key
	// costs a scan of all the metadata.
	// The JSON gateway forwards the HTTP Authorization header as
	// "authorization"; etcd strips a "Bearer " prefix from either key.
	v := metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameGRPC)
	if len(v) == 0 {
		v = metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameSwagger)
	}
	if len(v) > 0 {
		user, err := s.tokens.Resolve(strings.TrimPrefix(v[0], "Bearer "))
		if err != nil {
			return id, err
		}
		id.user = user
		return id, nil
	}
	if s.cfg.Server.TLS.ClientCertAuth {
		id.user = commonNameFromTLS(ctx)
	}
	return id, nil
}

// commonNameFromTLS returns the CN of the client's verified certificate, or
// "" (also for requests proxied by the gRPC gateway).
func commonNameFromTLS(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ""
	}
	var leaf *x509.Certificate
	for _, chain := range ti.State.VerifiedChains {
		if len(chain) > 0 {
			leaf = chain[0]
			break
		}
	}
	if leaf == nil {
		return ""
	}
	if len(metadata.ValueFromIncomingContext(ctx, gatewayHeader)) > 0 {
		return ""
	}
	return leaf.Subject.CommonName
}

var authRequests = sync.Pool{New: func() any { return new(auth.Request) }}

// authorizeKV runs the chain on a request that fill describes. With auth
// disabled and only the built-in RBAC configured it costs nothing.
func (s *Server) authorizeKV(ctx context.Context, id identity, op auth.Op, fill func(*auth.Request)) error {
	c := id.chain
	if c == nil {
		var stripe uint32
		c, stripe = s.acquireChain()
		defer c.release(stripe)
	}
	if id.rev == 0 && c.rbacOnly {
		return nil
	}
	ar := authRequests.Get().(*auth.Request)
	ar.Reset(op, id.user)
	fill(ar)
	err := auth.Check(ctx, c.authz, ar)
	ar.Release()
	authRequests.Put(ar)
	return err
}

// requireUser is etcd's requireAuthInfo: with auth enabled the caller must
// be authenticated (any user).
func (s *Server) requireUser(ctx context.Context) error {
	id, err := s.identify(ctx)
	if err != nil {
		return err
	}
	if id.rev != 0 && id.user == "" {
		return auth.ErrUserEmpty
	}
	return nil
}

// requireAdmin is etcd's admin check (maintenance and auth management): with
// auth enabled the caller must hold the root role.
func (s *Server) requireAdmin(ctx context.Context) error {
	id, err := s.identify(ctx)
	if err != nil {
		return err
	}
	return s.authorizeAdmin(ctx, id)
}

func (s *Server) authorizeAdmin(ctx context.Context, id identity) error {
	return s.authorizeKV(ctx, id, auth.OpAdmin, func(*auth.Request) {})
}

// authorizeWatch checks READ on a watch's key range, as etcd's watch create.
// On an error, etcd answers the create with created and canceled set and
// watchCancelReason(err) as the cancel reason.
func (s *Server) authorizeWatch(ctx context.Context, key, end []byte) error {
	id, err := s.identify(ctx)
	if err != nil {
		return err
	}
	return s.authorizeKV(ctx, id, auth.OpWatch, func(ar *auth.Request) { ar.Add(auth.PermRead, key, end) })
}

// watchCancelReason is the cancel_reason etcd sends for a watch refused by
// auth.
func watchCancelReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCInvalidAuthToken.Error()
	case errors.Is(err, auth.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision.Error()
	case errors.Is(err, auth.ErrUserEmpty):
		return rpctypes.ErrGRPCUserEmpty.Error()
	default:
		return rpctypes.ErrGRPCPermissionDenied.Error()
	}
}

// authorizeLeaseKeys checks perm on every key attached to a lease, unless
// the caller is root (etcd's checks for LeaseRevoke and keep-alive with
// PermWrite, TimeToLive and Leases with PermRead). It needs an
// authenticated caller when auth is enabled.
func (s *Server) authorizeLeaseKeys(ctx context.Context, perm auth.Perm, keys [][]byte) error {
	id, err := s.identify(ctx)
	if err != nil {
		return err
	}
	return s.authorizeLeaseKeysAs(ctx, id, perm, keys)
}

func (s *Server) authorizeLeaseKeysAs(ctx context.Context, id identity, perm auth.Perm, keys [][]byte) error {
	if id.rev == 0 {
		return s.authorizeKV(ctx, id, auth.OpLeaseRevoke, func(*auth.Request) {})
	}
	if id.user == "" {
		return auth.ErrUserEmpty
	}
	if s.auth.IsAdmin(id.user) == nil {
		return nil
	}
	return s.authorizeKV(ctx, id, auth.OpLeaseRevoke, func(ar *auth.Request) {
		for _, k := range keys {
			ar.Add(perm, k, nil)
		}
	})
}

// leaseKeysOf returns the keys attached to a lease, for the check of a put
// that attaches another key to it. Set by the lessor; nil means no lease
// has keys.
func (s *Server) leaseKeysOf(id int64) [][]byte {
	if s.leaseKeys == nil || id == 0 {
		return nil
	}
	return s.leaseKeys(id)
}

// addPut adds what a put needs as etcd checks it: WRITE on the key, WRITE on
// every key already attached to its lease (a key the user could not write
// would be revoked with it) unless the user is root, and READ with prev_kv.
func (s *Server) addPut(ar *auth.Request, id identity, r *pb.PutRequest) {
	ar.Add(auth.PermWrite, r.Key, nil)
	if keys := s.leaseKeysOf(r.Lease); len(keys) > 0 && s.auth.IsAdmin(id.user) != nil {
		for _, k := range keys {
			ar.Add(auth.PermWrite, k, nil)
		}
	}
	if r.PrevKv {
		ar.Add(auth.PermRead, r.Key, nil)
	}
}

// addTxn adds the ranges etcd checks for a txn: READ on every compare, then
// every op of both branches, nested txns included.
func (s *Server) addTxn(ar *auth.Request, id identity, rt *pb.TxnRequest) {
	for _, c := range rt.Compare {
		ar.Add(auth.PermRead, c.Key, c.RangeEnd)
	}
	for _, ops := range [2][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if v.RequestRange != nil {
					ar.Add(auth.PermRead, v.RequestRange.Key, v.RequestRange.RangeEnd)
				}
			case *pb.RequestOp_RequestPut:
				if v.RequestPut != nil {
					s.addPut(ar, id, v.RequestPut)
				}
			case *pb.RequestOp_RequestDeleteRange:
				if d := v.RequestDeleteRange; d != nil {
					if d.PrevKv {
						ar.Add(auth.PermRead, d.Key, d.RangeEnd)
					}
					ar.Add(auth.PermWrite, d.Key, d.RangeEnd)
				}
			case *pb.RequestOp_RequestTxn:
				if v.RequestTxn != nil {
					s.addTxn(ar, id, v.RequestTxn)
				}
			}
		}
	}
}

// proposeAuthorized authorizes a mutation (check) and applies it; if auth
// changed between the two, it authorizes again. check also runs after the
// caller is identified and may reject before anything is queued (e.g. on
// size, in etcd's order).
func (s *Server) proposeAuthorized(ctx context.Context, r *apply.Request, check func(identity) error) (apply.Result, error) {
	hdr := &pb.RequestHeader{}
	for {
		id, err := s.identify(ctx)
		if err != nil {
			return apply.Result{}, toGRPCError(err)
		}
		if err := s.checkHolding(id, check); err != nil {
			return apply.Result{}, toGRPCError(err)
		}
		hdr.Username, hdr.AuthRevision = id.user, id.rev
		r.Header = hdr
		res, err := s.loop.Propose(ctx, r)
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

// readAuthorized runs check, then read, and checks again while the auth
// state moved during the read, so that a read is never answered under
// permissions older than its own start.
func (s *Server) readAuthorized(ctx context.Context, check func(identity) error, read func() error) error {
	id, err := s.identify(ctx)
	if err != nil {
		return toGRPCError(err)
	}
	if err := s.checkHolding(id, check); err != nil {
		return toGRPCError(err)
	}
	if err := read(); err != nil {
		return toGRPCError(err)
	}
	for s.auth.Epoch() != id.epoch {
		if id, err = s.identify(ctx); err != nil {
			return toGRPCError(err)
		}
		if err := s.checkHolding(id, check); err != nil {
			return toGRPCError(err)
		}
	}
	return nil
}

// checkHolding runs check with one policy generation held throughout, so
// that its authorization and admission decide with the same policies.
func (s *Server) checkHolding(id identity, check func(identity) error) error {
	id.chain, id.chainStripe = s.acquireChain()
	defer id.chain.release(id.chainStripe)
	return check(id)
}

package guard

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

	"github.com/metastore-dev/metastore/internal/policyabi"
)

// Enforcement of etcd's auth on every RPC. Requests are authorized on the
// caller's goroutine, against the current auth state, by the Authorizer
// chain (the built-in RBAC is its last member), before they are queued for
// apply. Writes carry the auth revision they were authorized at (Header);
// if auth changed before they are applied, apply refuses them untouched
// (apply.ErrAuthRetry) and the caller checks them again. Reads check
// AuthMoved after reading and authorize again if it did.
//
// Entry points for the RPC layer:
//
//	Identify(ctx)                   who is calling (token, else client-cert CN)
//	Write(ctx, r)                   everything a write needs before it is proposed
//	Read(ctx, req)                  authorize a Range or read-only Txn
//	AuthMoved(id)                   whether a read must be authorized again
//	RequireUser(ctx), RequireAdmin  etcd's requireAuthInfo and admin check
//	AuthorizeWatch(ctx, key, end)   READ on a watch's range
//	AuthorizeLease(ctx, id, perm, lease), AuthorizeLeaseKeys
//	                                perm on a lease's keys unless root
//
// The lessor's keys come through Options.LeaseKeys, so that a put to a
// lease is refused when the user could not write the lease's other keys.

// Identity is the caller of one request.
type Identity struct {
	User string
	// Rev is the auth revision the caller was identified at, 0 when auth
	// is disabled; it goes into the request header for apply's check.
	Rev uint64
	// Epoch is the auth store's epoch at identification.
	Epoch uint64
	// chain is the policy generation the request decides with, held for
	// the whole of a check; nil makes each decision take the current one.
	chain       *policyChain
	chainStripe uint32
}

// AuthEnabled reports whether auth was enabled when the caller was
// identified.
func (id Identity) AuthEnabled() bool { return id.Rev != 0 }

// Header is the request header a write proposed for id carries.
func (id Identity) Header() *pb.RequestHeader {
	h := id.header()
	return &h
}

func (id Identity) header() pb.RequestHeader {
	return pb.RequestHeader{Username: id.User, AuthRevision: id.Rev}
}

// GatewayHeader is the metadata key gRPC-gateway adds to proxied requests;
// their client certificate is the gateway's, not the user's.
const GatewayHeader = "grpcgateway-accept"

// Identify resolves the caller as etcd does: nobody while auth is disabled;
// else the user of the "token" (or "authorization") metadata, failing with
// ErrInvalidAuthToken for a bad token; else, under client-certificate auth,
// the verified certificate's common name.
func (s *Guard) Identify(ctx context.Context) (Identity, error) {
	enabled, rev, epoch := s.auth.State()
	// NB: disabled auth is answered before the context is searched: a
	// lookup that misses walks gRPC's whole chain of contexts (2.8% of the
	// in-process Range benchmark's CPU), and CheckRate stores nothing else
	// then. Only CheckRate with a rate limit on stores an identity.
	if !enabled {
		return Identity{Epoch: epoch}, nil
	}
	if s.rates != nil && s.rates.any() {
		if id, ok := ctx.Value(identityKey{}).(Identity); ok && id.Epoch == epoch {
			// Identified by CheckRate under the same auth state.
			return id, nil
		}
	}
	id := Identity{Rev: rev, Epoch: epoch}
	// NB: "authorization" is looked up only without "token": a missing key
	// costs a scan of all the metadata.
	// The JSON gateway forwards the HTTP Authorization header as
	// "authorization"; etcd strips a "Bearer " prefix from either key.
	v := metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameGRPC)
	if len(v) == 0 {
		v = metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameSwagger)
	}
	if len(v) > 0 {
		token := strings.TrimPrefix(v[0], "Bearer ")
		user, err := s.tokens.Resolve(token)
		if err != nil && s.catchUp != nil && s.tokens.Simple() && errors.Is(err, auth.ErrInvalidAuthToken) {
			// Issued on another member, maybe not applied here yet.
			if cerr := s.catchUp(ctx); cerr == nil {
				user, err = s.tokens.Resolve(token)
			}
		}
		if err != nil {
			return id, err
		}
		id.User = user
		return id, nil
	}
	if s.cfg.Server.TLS.ClientCertAuth {
		id.User = commonNameFromTLS(ctx)
	}
	return id, nil
}

// ClientCertUser returns the common name of the verified client certificate
// of the request in ctx, the user etcd authenticates a request as under
// --client-cert-auth; "" when client-cert-auth is off or the request has no
// verified certificate.
func (s *Guard) ClientCertUser(ctx context.Context) string {
	if !s.cfg.Server.TLS.ClientCertAuth {
		return ""
	}
	return commonNameFromTLS(ctx)
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
	if len(metadata.ValueFromIncomingContext(ctx, GatewayHeader)) > 0 {
		return ""
	}
	return leaf.Subject.CommonName
}

var authRequests = sync.Pool{New: func() any { return new(auth.Request) }}

// authorize runs the chain on req as Describe describes it. With auth
// disabled and only the built-in RBAC configured it costs nothing.
func (s *Guard) authorize(ctx context.Context, id Identity, req any) error {
	c := id.chain
	if c == nil {
		var stripe uint32
		c, stripe = s.acquireChain()
		defer c.release(stripe)
	}
	if id.Rev == 0 && c.rbacOnly {
		return nil
	}
	ar := authRequests.Get().(*auth.Request)
	Describe(ar, id.User, req, s)
	err := auth.Check(ctx, c.authz, ar)
	ar.Release()
	authRequests.Put(ar)
	return err
}

// authorizeRanges runs the chain on op with perm on each key (no ranges
// when keys is empty).
func (s *Guard) authorizeRanges(ctx context.Context, id Identity, op auth.Op, perm auth.Perm, keys [][]byte) error {
	c := id.chain
	if c == nil {
		var stripe uint32
		c, stripe = s.acquireChain()
		defer c.release(stripe)
	}
	if id.Rev == 0 && c.rbacOnly {
		return nil
	}
	ar := authRequests.Get().(*auth.Request)
	ar.Reset(op, id.User)
	addKeys(ar, perm, keys)
	err := auth.Check(ctx, c.authz, ar)
	ar.Release()
	authRequests.Put(ar)
	return err
}

// LeaseKeys implements Leases with the lessor's keys.
func (s *Guard) LeaseKeys(id int64) [][]byte {
	if s.leaseKeys == nil || id == 0 {
		return nil
	}
	return s.leaseKeys(id)
}

// LeaseExempt implements Leases: the root role is exempt, as on etcd.
func (s *Guard) LeaseExempt(user string) bool { return s.auth.IsAdmin(user) == nil }

// RequireUser is etcd's requireAuthInfo: with auth enabled the caller must
// be authenticated (any user).
func (s *Guard) RequireUser(ctx context.Context) error {
	id, err := s.Identify(ctx)
	if err != nil {
		return err
	}
	return requireUser(id)
}

func requireUser(id Identity) error {
	if id.Rev != 0 && id.User == "" {
		return auth.ErrUserEmpty
	}
	return nil
}

// RequireAdmin is etcd's admin check (maintenance and auth management): with
// auth enabled the caller must hold the root role.
func (s *Guard) RequireAdmin(ctx context.Context) error {
	id, err := s.Identify(ctx)
	if err != nil {
		return err
	}
	return s.AuthorizeAdmin(ctx, id)
}

// AuthorizeAdmin is RequireAdmin for an identified caller.
func (s *Guard) AuthorizeAdmin(ctx context.Context, id Identity) error {
	return s.authorizeRanges(ctx, id, policyabi.OpAdmin, 0, nil)
}

// AuthorizeWatch checks READ on a watch's key range, as etcd's watch create.
func (s *Guard) AuthorizeWatch(ctx context.Context, key, end []byte) error {
	id, err := s.Identify(ctx)
	if err != nil {
		return err
	}
	c, stripe := s.acquireChain()
	defer c.release(stripe)
	if id.Rev == 0 && c.rbacOnly {
		return nil
	}
	ar := authRequests.Get().(*auth.Request)
	ar.Reset(policyabi.OpWatch, id.User)
	ar.Add(policyabi.PermRead, key, end)
	err = auth.Check(ctx, c.authz, ar)
	ar.Release()
	authRequests.Put(ar)
	return err
}

// AuthorizeLease is etcd's check of a lease's keys: perm on every key
// attached to lease leaseID unless the caller is root (LeaseRevoke and
// keep-alive with PermWrite, TimeToLive with PermRead). The keys are read
// only when the check needs them, so with auth disabled a keep-alive costs
// no store read.
func (s *Guard) AuthorizeLease(ctx context.Context, id Identity, perm auth.Perm, leaseID int64) error {
	var keys [][]byte
	if id.Rev != 0 && id.User != "" && !s.LeaseExempt(id.User) {
		keys = s.LeaseKeys(leaseID)
	}
	return s.AuthorizeLeaseKeys(ctx, id, perm, keys)
}

// AuthorizeLeaseKeys checks perm on keys (of one or more leases) unless the
// caller is root; it needs an authenticated caller when auth is enabled.
func (s *Guard) AuthorizeLeaseKeys(ctx context.Context, id Identity, perm auth.Perm, keys [][]byte) error {
	if id.Rev == 0 {
		return s.authorizeRanges(ctx, id, policyabi.OpLeaseRevoke, perm, nil)
	}
	if id.User == "" {
		return auth.ErrUserEmpty
	}
	if s.LeaseExempt(id.User) {
		return nil
	}
	return s.authorizeRanges(ctx, id, policyabi.OpLeaseRevoke, perm, keys)
}

// authorizeLeaseRevoke is etcd's check of a revoke: revoking deletes the
// lease's keys, so it needs WRITE on every one of them (Describe), unless
// the caller is root; with auth enabled it needs a user, and with auth
// disabled the keys are not read.
func (s *Guard) authorizeLeaseRevoke(ctx context.Context, id Identity, r *pb.LeaseRevokeRequest) error {
	switch {
	case id.Rev == 0:
		return s.authorizeRanges(ctx, id, policyabi.OpLeaseRevoke, policyabi.PermWrite, nil)
	case id.User == "":
		return auth.ErrUserEmpty
	case s.LeaseExempt(id.User):
		return nil
	}
	return s.authorize(ctx, id, r)
}

// AuthMoved reports whether the auth state changed since id was identified:
// a read must then be authorized again before it is answered.
func (s *Guard) AuthMoved(id Identity) bool { return s.auth.Epoch() != id.Epoch }

// hold makes id decide with one policy generation until release, so that
// its authorization and admission decide with the same policies.
func (s *Guard) hold(id *Identity) {
	id.chain, id.chainStripe = s.acquireChain()
}

func (id *Identity) release() {
	id.chain.release(id.chainStripe)
	id.chain = nil
}

// Read authorizes a read (a *pb.RangeRequest or a read-only
// *pb.TxnRequest) for the caller of ctx. After reading, the caller checks
// AuthMoved and, while it did, calls Read again.
func (s *Guard) Read(ctx context.Context, req any) (Identity, error) {
	id, err := s.Identify(ctx)
	if err != nil {
		return id, err
	}
	return id, s.authorize(ctx, id, req)
}

// Write decides everything a write needs before it is proposed, for the
// caller of ctx, with one policy generation held throughout: in etcd's
// order, the size limit, the NOSPACE alarm (puts only), authorization,
// admission (which may replace the write) and the tenants' quotas. It
// returns the request to propose, with the caller's header; r is not
// changed. A Put, DeleteRange, Txn or LeaseRevoke is authorized on its
// ranges; an Alarm GET needs a user; every other request needs root.
func (s *Guard) Write(ctx context.Context, r *apply.Request) (*apply.Request, error) {
	id, err := s.Identify(ctx)
	if err != nil {
		return nil, err
	}
	s.hold(&id)
	defer id.release()
	// The request and its header in one allocation (two per write before).
	a := &requestWithHeader{req: *r, hdr: id.header()}
	out := &a.req
	out.Header = &a.hdr
	switch {
	case r.Put != nil:
		out.Put, err = s.checkPut(ctx, id, r.Put)
	case r.DeleteRange != nil:
		out.DeleteRange, err = s.checkDeleteRange(ctx, id, r.DeleteRange)
	case r.Txn != nil:
		out.Txn, err = s.checkTxn(ctx, id, r.Txn)
	case r.LeaseRevoke != nil:
		err = s.authorizeLeaseRevoke(ctx, id, r.LeaseRevoke)
	case r.Alarm != nil && r.Alarm.Action == pb.AlarmRequest_GET:
		err = requireUser(id)
	default:
		err = s.AuthorizeAdmin(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// requestWithHeader is what Write returns: a request and its header.
type requestWithHeader struct {
	req apply.Request
	hdr pb.RequestHeader
}

// checkRequestSize refuses writes larger than --max-request-bytes, as etcd
// refuses proposals larger than that.
func (s *Guard) checkRequestSize(n int) error {
	if n > s.cfg.Limits.MaxRequestBytes {
		return ErrRequestTooLarge
	}
	return nil
}

func (s *Guard) checkPut(ctx context.Context, id Identity, r *pb.PutRequest) (*pb.PutRequest, error) {
	if err := s.checkRequestSize(r.Size()); err != nil {
		return nil, err
	}
	// As etcd's, a full database refuses puts before auth is consulted.
	if s.applier.HasAlarm(pb.AlarmType_NOSPACE) {
		return nil, apply.ErrNoSpace
	}
	if err := s.authorize(ctx, id, r); err != nil {
		return nil, err
	}
	final := r
	if hasAdmission(id) {
		// Admission starts from the client's request on every attempt.
		var err error
		if final, err = s.admitPut(ctx, id, r); err != nil {
			return nil, err
		}
	}
	return final, s.checkQuota(ctx, final, nil)
}

func (s *Guard) checkDeleteRange(ctx context.Context, id Identity, r *pb.DeleteRangeRequest) (*pb.DeleteRangeRequest, error) {
	if err := s.checkRequestSize(r.Size()); err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, id, r); err != nil || !hasAdmission(id) {
		return r, err
	}
	return s.admitDeleteRange(ctx, id, r)
}

func (s *Guard) checkTxn(ctx context.Context, id Identity, r *pb.TxnRequest) (*pb.TxnRequest, error) {
	if err := s.checkRequestSize(r.Size()); err != nil {
		return nil, err
	}
	if s.applier.HasAlarm(pb.AlarmType_NOSPACE) && apply.TxnHasPut(r) {
		return nil, apply.ErrNoSpace
	}
	if err := s.authorize(ctx, id, r); err != nil {
		return nil, err
	}
	final := r
	if hasAdmission(id) {
		// Both branches are admitted up front, as one message.
		var err error
		if final, err = s.admitTxn(ctx, id, r); err != nil {
			return nil, err
		}
	}
	return final, s.checkQuota(ctx, nil, final)
}

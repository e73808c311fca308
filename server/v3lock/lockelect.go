package v3lock

import (
	"context"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/mvcc"
	cpb "github.com/metastore-dev/metastore/server/v3lock/v3lockpb"
)

// etcd's Lock and Election services (server/etcdserver/api/v3lock and
// v3election) are client/v3/concurrency's Mutex and Election run inside
// the server over an in-process client. This file runs the same
// algorithms, call for call, against this server's own KV, Lease and watch
// hub, with the caller's context, so each request is validated and
// authorized as the caller exactly as etcd's in-process client forwards
// the caller's token. The key layout (<name>/<lease id in hex>), the
// revision ordering (the lowest create revision holds the lock or leads),
// the response headers each step leaves behind and the errors are
// concurrency's.

// Errors of client/v3/concurrency and v3election, with their texts. They
// reach etcd's clients as code Unknown: etcd returns plain errors.
var (
	errElectionNotLeader = status.Error(codes.Unknown, "election: not leader")
	errElectionNoLeader  = status.Error(codes.Unknown, "election: no leader")
	errSessionExpired    = status.Error(codes.Unknown, "mutex: session is expired")
	errMissingLeaderKey  = status.Error(codes.Unknown, `"leader" field must be provided`)
	errLostWatcher       = status.Error(codes.Unknown, "lost watcher waiting for delete")
)

// sessionTTL is concurrency's default session TTL: a Lock or Campaign
// without a lease runs under a fresh lease of this many seconds, which
// nobody keeps alive.
const sessionTTL = 60

// cleanupTimeout bounds the deletes concurrency issues on its client's own
// context after a wait fails.
const cleanupTimeout = 5 * time.Second

// Deps are what the services run on: this member's own KV and Lease
// services (so each call is validated and authorized as the caller), its
// watch hub, and the member's header and shutdown.
type Deps struct {
	KV    pb.KVServer
	Lease pb.LeaseServer
	Hub   *mvcc.Hub
	// AuthorizeWatch checks READ on a watch's range as the caller; its
	// error is the watch's cancel reason (etcd's watch create).
	AuthorizeWatch func(ctx context.Context, key, end []byte) error
	// FillHeader completes a response header as the member's own.
	FillHeader func(*pb.ResponseHeader)
	// Stopping is closed when the member shuts down.
	Stopping <-chan struct{}
}

// Register adds the Lock and Election services to g (a grpc.Server or
// the lean transport).
func Register(g grpc.ServiceRegistrar, d Deps) {
	c := &concurrency{d: d, kv: d.KV, lease: d.Lease}
	cpb.RegisterLockServer(g, &lockServer{c: c})
	cpb.RegisterElectionServer(g, &electionServer{c: c})
}

// concurrency runs concurrency's algorithms for one server.
type concurrency struct {
	d     Deps
	kv    pb.KVServer
	lease pb.LeaseServer
}

// clientError is what the error of a KV or Lease call becomes on its way
// through etcd's in-process client: an etcd error keeps its message but
// arrives as code Unknown (clientv3 turns it into an rpctypes.EtcdError,
// which carries no gRPC status); anything else passes through.
func clientError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := rpctypes.Error(err).(rpctypes.EtcdError); ok {
		return status.Error(codes.Unknown, rpctypes.ErrorDesc(err))
	}
	return err
}

// session is concurrency.NewSession with the request's lease: lease 0
// grants a new one of sessionTTL seconds as the caller; any other id
// (even an unknown one) is used as is.
func (c *concurrency) session(ctx context.Context, lease int64) (int64, error) {
	if lease != 0 {
		return lease, nil
	}
	resp, err := c.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: sessionTTL})
	if err != nil {
		return 0, err
	}
	return resp.ID, nil
}

// cleanupContext is the in-process client's own context, on which
// concurrency releases what a failed wait left behind: it carries no
// caller, so with auth enabled the release is refused, as on etcd.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cleanupTimeout)
}

func sessionKey(pfx string, lease int64) string { return fmt.Sprintf("%s%x", pfx, lease) }

func createRevIs(key string, rev int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
		TargetUnion: &pb.Compare_CreateRevision{CreateRevision: rev}}
}

func lockPutOp(key, value string, lease int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}}}
}

func lockGetOp(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

// firstCreate is clientv3's Get(pfx, WithFirstCreate()...): the key under
// pfx with the lowest create revision.
func firstCreate(pfx string) *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte(pfx), RangeEnd: rangeEndOfPrefix([]byte(pfx)),
		SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_CREATE, Limit: 1}
}

// rangeEndOfPrefix is clientv3.GetPrefixRangeEnd ("\x00" when every byte
// is 0xff: all keys from the prefix on).
func rangeEndOfPrefix(p []byte) []byte {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] < 0xff {
			end := append([]byte(nil), p[:i+1]...)
			end[i]++
			return end
		}
	}
	return []byte{0}
}

// watchFrom watches key (with etcd's range end end) from startRev as the
// caller, and hands each response with events to visit until visit says
// done. A watch refused or canceled ends with the error clientv3 reports
// for it (compaction, permission), a shutdown with ErrGRPCStopped.
func (c *concurrency) watchFrom(ctx context.Context, key, end []byte, startRev int64, visit func(rev int64, evs []*mvccpb.Event) (done bool, err error)) error {
	if err := c.d.AuthorizeWatch(ctx, key, end); err != nil {
		return status.Error(codes.Unknown, err.Error())
	}
	var mend []byte
	switch {
	case len(end) == 0:
	case len(end) == 1 && end[0] == 0:
		mend = []byte{}
	default:
		mend = end
	}
	ws := c.d.Hub.NewStream()
	defer ws.Close()
	if _, err := ws.Watch(mvcc.WatchOptions{Key: key, End: mend, StartRev: startRev}); err != nil {
		return status.Error(codes.Unknown, err.Error())
	}
	var buf []mvcc.WatchResponse
	for {
		out, more, err := ws.Next(ctx, buf[:0])
		if err != nil {
			return err
		}
		for _, r := range out {
			switch {
			case r.CompactRevision != 0:
				return status.Error(codes.Unknown, rpctypes.ErrCompacted.Error())
			case r.Canceled:
				return errLostWatcher
			case len(r.Events) == 0:
				continue
			}
			if done, err := visit(r.Revision, r.Events); done || err != nil {
				return err
			}
		}
		buf = out
		if more {
			continue
		}
		select {
		case <-ws.Ready():
		case <-ctx.Done():
			return ctx.Err()
		case <-c.d.Stopping:
			return status.Error(codes.Unknown, rpctypes.ErrStopped.Error())
		}
	}
}

// waitDelete waits for key to be deleted at or after rev.
func (c *concurrency) waitDelete(ctx context.Context, key []byte, rev int64) error {
	return c.watchFrom(ctx, key, nil, rev, func(_ int64, evs []*mvccpb.Event) (bool, error) {
		for _, ev := range evs {
			if ev.Type == mvccpb.DELETE {
				return true, nil
			}
		}
		return false, nil
	})
}

// waitDeletes waits until no key under pfx created at or before
// maxCreateRev is left, watching the newest of them at a time.
func (c *concurrency) waitDeletes(ctx context.Context, pfx string, maxCreateRev int64) error {
	for {
		resp, err := c.kv.Range(ctx, &pb.RangeRequest{Key: []byte(pfx), RangeEnd: rangeEndOfPrefix([]byte(pfx)),
			SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_CREATE, Limit: 1,
			MaxCreateRevision: maxCreateRev})
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if err := c.waitDelete(ctx, resp.Kvs[0].Key, resp.Header.Revision); err != nil {
			return err
		}
	}
}

// lockServer is etcd's v3lockpb.Lock service.
type lockServer struct{ c *concurrency }

var _ cpb.LockServer = (*lockServer)(nil)

// Lock is concurrency.Mutex.Lock under the request's lease: put
// <name>/<lease> if absent, and own the lock once every key under the
// name created before it is gone.
func (l *lockServer) Lock(ctx context.Context, r *cpb.LockRequest) (*cpb.LockResponse, error) {
	resp, err := l.c.lock(ctx, r)
	return resp, clientError(err)
}

func (c *concurrency) lock(ctx context.Context, r *cpb.LockRequest) (*cpb.LockResponse, error) {
	lease, err := c.session(ctx, r.Lease)
	if err != nil {
		return nil, err
	}
	pfx := string(r.Name) + "/"
	myKey := sessionKey(pfx, lease)
	tresp, err := c.kv.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{createRevIs(myKey, 0)},
		Success: []*pb.RequestOp{lockPutOp(myKey, "", lease), lockGetOp(firstCreate(pfx))},
		Failure: []*pb.RequestOp{lockGetOp(&pb.RangeRequest{Key: []byte(myKey)}), lockGetOp(firstCreate(pfx))},
	})
	if err != nil {
		return nil, err
	}
	myRev := tresp.Header.Revision
	if !tresp.Succeeded {
		// The session already queued (or holds) this key: reuse it.
		myRev = tresp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	owner := tresp.Responses[1].GetResponseRange().Kvs
	if len(owner) == 0 || owner[0].CreateRevision == myRev {
		return &cpb.LockResponse{Header: tresp.Header, Key: []byte(myKey)}, nil
	}
	release := func() {
		cctx, cancel := cleanupContext()
		defer cancel()
		c.kv.DeleteRange(cctx, &pb.DeleteRangeRequest{Key: []byte(myKey)})
	}
	if err := c.waitDeletes(ctx, pfx, myRev-1); err != nil {
		release()
		return nil, err
	}
	// The waiters ahead are gone; the key must still be there (its lease
	// may have ended meanwhile).
	gresp, err := c.kv.Range(ctx, &pb.RangeRequest{Key: []byte(myKey)})
	if err != nil {
		release()
		return nil, err
	}
	if len(gresp.Kvs) == 0 {
		return nil, errSessionExpired
	}
	return &cpb.LockResponse{Header: gresp.Header, Key: []byte(myKey)}, nil
}

// Unlock deletes the lock's key.
func (l *lockServer) Unlock(ctx context.Context, r *cpb.UnlockRequest) (*cpb.UnlockResponse, error) {
	resp, err := l.c.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: r.Key})
	if err != nil {
		return nil, clientError(err)
	}
	return &cpb.UnlockResponse{Header: resp.Header}, nil
}

// electionServer is etcd's v3electionpb.Election service.
type electionServer struct{ c *concurrency }

var _ cpb.ElectionServer = (*electionServer)(nil)

// Campaign is concurrency.Election.Campaign under the request's lease:
// put <name>/<lease> with the value if absent (else proclaim the value on
// the existing key), then wait to lead.
func (e *electionServer) Campaign(ctx context.Context, r *cpb.CampaignRequest) (*cpb.CampaignResponse, error) {
	resp, err := e.c.campaign(ctx, r)
	return resp, clientError(err)
}

func (c *concurrency) campaign(ctx context.Context, r *cpb.CampaignRequest) (*cpb.CampaignResponse, error) {
	lease, err := c.session(ctx, r.Lease)
	if err != nil {
		return nil, err
	}
	pfx := string(r.Name) + "/"
	key := sessionKey(pfx, lease)
	tresp, err := c.kv.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{createRevIs(key, 0)},
		Success: []*pb.RequestOp{lockPutOp(key, string(r.Value), lease)},
		Failure: []*pb.RequestOp{lockGetOp(&pb.RangeRequest{Key: []byte(key)})},
	})
	if err != nil {
		return nil, err
	}
	rev := tresp.Header.Revision
	if !tresp.Succeeded {
		kv := tresp.Responses[0].GetResponseRange().Kvs[0]
		rev = kv.CreateRevision
		if string(kv.Value) != string(r.Value) {
			if _, err := c.proclaim(ctx, key, rev, lease, r.Value); err != nil {
				c.resign(ctx, key, rev)
				return nil, err
			}
		}
	}
	if err := c.waitDeletes(ctx, pfx, rev-1); err != nil {
		// A caller that gave up withdraws; any other failure leaves the
		// candidacy in place.
		if ctx.Err() != nil {
			cctx, cancel := cleanupContext()
			c.resign(cctx, key, rev)
			cancel()
		}
		return nil, err
	}
	return &cpb.CampaignResponse{
		// NB: the header of the first txn, as concurrency keeps it.
		Header: tresp.Header,
		Leader: &cpb.LeaderKey{Name: r.Name, Key: []byte(key), Rev: rev, Lease: lease},
	}, nil
}

// proclaim puts value on the leader's key if it is still the one created
// at rev.
func (c *concurrency) proclaim(ctx context.Context, key string, rev, lease int64, value []byte) (*pb.ResponseHeader, error) {
	tresp, err := c.kv.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{createRevIs(key, rev)},
		Success: []*pb.RequestOp{lockPutOp(key, string(value), lease)},
	})
	if err != nil {
		return nil, err
	}
	if !tresp.Succeeded {
		return nil, errElectionNotLeader
	}
	return tresp.Header, nil
}

// resign deletes the leader's key if it is still the one created at rev;
// a key that is gone or newer is not an error.
func (c *concurrency) resign(ctx context.Context, key string, rev int64) (*pb.ResponseHeader, error) {
	tresp, err := c.kv.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{createRevIs(key, rev)},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}}}},
	})
	if err != nil {
		return nil, err
	}
	return tresp.Header, nil
}

// Proclaim updates the leader's value, if the caller still leads.
func (e *electionServer) Proclaim(ctx context.Context, r *cpb.ProclaimRequest) (*cpb.ProclaimResponse, error) {
	if r.Leader == nil {
		return nil, errMissingLeaderKey
	}
	// NB: as on etcd, a leader key without a lease gets a fresh one, which
	// the new value is put with.
	lease, err := e.c.session(ctx, r.Leader.Lease)
	if err != nil {
		return nil, clientError(err)
	}
	hdr, err := e.c.proclaim(ctx, string(r.Leader.Key), r.Leader.Rev, lease, r.Value)
	if err != nil {
		return nil, clientError(err)
	}
	return &cpb.ProclaimResponse{Header: hdr}, nil
}

// Resign gives up leadership (or a pending campaign).
func (e *electionServer) Resign(ctx context.Context, r *cpb.ResignRequest) (*cpb.ResignResponse, error) {
	if r.Leader == nil {
		return nil, errMissingLeaderKey
	}
	// The session is opened for its side effect only: lease 0 grants one.
	if _, err := e.c.session(ctx, r.Leader.Lease); err != nil {
		return nil, clientError(err)
	}
	hdr, err := e.c.resign(ctx, string(r.Leader.Key), r.Leader.Rev)
	if err != nil {
		return nil, clientError(err)
	}
	return &cpb.ResignResponse{Header: hdr}, nil
}

// Leader returns the key-value of the election's oldest candidate.
func (e *electionServer) Leader(ctx context.Context, r *cpb.LeaderRequest) (*cpb.LeaderResponse, error) {
	resp, err := e.c.kv.Range(ctx, firstCreate(string(r.Name)+"/"))
	if err != nil {
		return nil, clientError(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errElectionNoLeader
	}
	return &cpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}, nil
}

// Observe streams the leader and every change of it: the current leader
// (or the first one put), each new value it proclaims, and its successor
// once its key is deleted. As on etcd, the stream ends without an error
// when a read or watch fails.
func (e *electionServer) Observe(r *cpb.LeaderRequest, stream cpb.ObserveServer) error {
	ctx := stream.Context()
	c := e.c
	pfx := string(r.Name) + "/"
	for {
		resp, err := c.kv.Range(ctx, firstCreate(pfx))
		if err != nil {
			return observeEnd(ctx)
		}
		var kv *mvccpb.KeyValue
		var hdr *pb.ResponseHeader
		if len(resp.Kvs) == 0 {
			// No leader: wait for the first put under the prefix.
			err := c.watchFrom(ctx, []byte(pfx), rangeEndOfPrefix([]byte(pfx)), resp.Header.Revision,
				func(rev int64, evs []*mvccpb.Event) (bool, error) {
					for _, ev := range evs {
						if ev.Type == mvccpb.PUT {
							kv = ev.Kv
							hdr = c.header(kv.ModRevision)
							return true, nil
						}
					}
					return false, nil
				})
			if err != nil || kv == nil {
				return observeEnd(ctx)
			}
		} else {
			hdr, kv = resp.Header, resp.Kvs[0]
		}
		if err := stream.Send(&cpb.LeaderResponse{Header: hdr, Kv: kv}); err != nil {
			return err
		}
		// Follow the leader's key until it is deleted.
		var sendErr error
		err = c.watchFrom(ctx, kv.Key, nil, hdr.Revision+1, func(rev int64, evs []*mvccpb.Event) (bool, error) {
			for _, ev := range evs {
				if ev.Type == mvccpb.DELETE {
					return true, nil
				}
				if sendErr = stream.Send(&cpb.LeaderResponse{Header: c.header(rev), Kv: ev.Kv}); sendErr != nil {
					return true, sendErr
				}
			}
			return false, nil
		})
		if sendErr != nil {
			return sendErr
		}
		if err != nil {
			return observeEnd(ctx)
		}
	}
}

// observeEnd is how etcd's Observe ends when its observer stops: cleanly,
// unless the client went away.
func observeEnd(ctx context.Context) error {
	return ctx.Err()
}

// header is a response header at rev, as a watch response carries.
func (c *concurrency) header(rev int64) *pb.ResponseHeader {
	h := &pb.ResponseHeader{Revision: rev}
	c.d.FillHeader(h)
	return h
}

package v3rpc

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/guard"
)

// leaseKeepAliveMethod is the Lease service's LeaseKeepAlive, as the
// transport names it.
const leaseKeepAliveMethod = "/etcdserverpb.Lease/LeaseKeepAlive"

// InlineStream is a streaming call answered message by message by the
// lean transport's connection reader, without a goroutine of its own (the
// method set of h2grpc.StreamHandler, which this package may not import).
type InlineStream interface {
	Open(ctx context.Context) error
	Message(ctx context.Context, msg []byte, onReader bool) (reply any, ok bool, err error)
	Ended(ctx context.Context, start time.Time, err error)
	Stopped() error
}

// InlineStream returns the handler of a streaming method the lean
// transport may answer on its reader, or nil: LeaseKeepAlive on a single
// member. clientv3's KeepAliveOnce opens a stream per renewal, and a
// renewal is a few lock-free operations, far less than a goroutine's
// hand-offs. On a cluster a renewal waits for a read round or the
// leader, so it keeps its goroutine. The handler does what the stream
// interceptor and LeaseKeepAlive do for a stream, and sends a message
// whose answer would wait (a policy is loaded, auth must read the lease's
// keys, the lease is being revoked) to a goroutine.
func (s *Server) InlineStream(path string) InlineStream {
	if path != leaseKeepAliveMethod || s.raft != nil {
		return nil
	}
	return (*keepAliveInline)(s)
}

// keepAliveInline answers LeaseKeepAlive streams message by message.
type keepAliveInline Server

var _ InlineStream = (*keepAliveInline)(nil)

func (k *keepAliveInline) mm() *methodMetrics {
	return k.metrics.method(leaseKeepAliveMethod, grpcBidiStream)
}

// Open is streamInterceptor's part before the handler.
func (k *keepAliveInline) Open(ctx context.Context) error {
	s := (*Server)(k)
	k.mm().started.Inc()
	s.metrics.clientRequest(ctx, clientStream)
	if err := s.requireLeader(ctx); err != nil {
		return err
	}
	if err := s.learnerStream(leaseKeepAliveMethod); err != nil {
		return err
	}
	if _, err := s.guard.CheckRate(ctx, leaseKeepAliveMethod, guard.StreamKind(leaseKeepAliveMethod)); err != nil {
		return toGRPCError(err)
	}
	return nil
}

// Message is one turn of keepAlive's loop.
func (k *keepAliveInline) Message(ctx context.Context, msg []byte, onReader bool) (reply any, ok bool, err error) {
	s := (*Server)(k)
	if s.cfg.Reliability.PanicRecovery {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(leaseKeepAliveMethod, r)
				reply, ok, err = nil, true, errInternal
			}
		}()
	}
	var req pb.LeaseKeepAliveRequest
	if err := req.Unmarshal(msg); err != nil {
		return nil, true, status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	resp, ok, err := s.keepAliveOne(ctx, &req, onReader)
	if !ok {
		return nil, false, nil // counted when it is answered
	}
	mm := k.mm()
	mm.msgRecv.Inc()
	if err != nil {
		return nil, true, err
	}
	// NB: counted as sent when handed to the transport; a reply the
	// stream's reset drops is counted all the same.
	mm.msgSent.Inc()
	return resp, true, nil
}

// Stopped is what LeaseKeepAlive returns when the server stops.
func (k *keepAliveInline) Stopped() error { return rpctypes.ErrGRPCStopped }

// Ended is streamInterceptor's part after the handler.
func (k *keepAliveInline) Ended(_ context.Context, start time.Time, err error) {
	if err != nil {
		err = toGRPCError(err)
	}
	k.mm().done(status.Code(err), time.Since(start))
}

package v3rpc

import (
	"context"
	"runtime/debug"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/guard"
)

// errInternal is what a client sees when its request's handler panicked.
var errInternal = status.Error(codes.Internal, "etcdserver: internal error")

// sizer is implemented by every etcd request and response (gogo protobuf).
type sizer interface{ Size() int }

// unaryInterceptor wraps every unary call: metrics and the slow-request log
// outermost (so they see rate-limit refusals and recovered panics), then
// panic recovery, then the rate limits.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	mm := s.metrics.method(info.FullMethod, grpcUnary)
	mm.started.Inc()
	mm.msgRecv.Inc()
	s.metrics.clientRequest(ctx, clientUnary)
	start := time.Now()
	defer func() {
		took := time.Since(start)
		mm.done(status.Code(err), took)
		if err == nil {
			mm.msgSent.Inc()
		}
		if t := s.slowThreshold(); t > 0 && took > t {
			s.logSlowRequest(ctx, info.FullMethod, req, resp, err, took)
		}
	}()
	if s.cfg.Reliability.PanicRecovery {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(info.FullMethod, r)
				resp, err = nil, errInternal
			}
		}()
	}
	if err := s.requireLeader(ctx); err != nil {
		return nil, err
	}
	if err := s.learnerUnary(req); err != nil {
		return nil, err
	}
	ctx, err = s.guard.CheckRate(ctx, info.FullMethod, guard.KindUnary)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp, err = handler(ctx, req)
	return resp, s.checkSendSize(info.FullMethod, resp, err)
}

// streamInterceptor does for streams what unaryInterceptor does for unary
// calls; the rate limit applies when the stream opens.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	mm := s.metrics.method(info.FullMethod, streamType(info))
	mm.started.Inc()
	s.metrics.clientRequest(ss.Context(), clientStream)
	start := time.Now()
	defer func() { mm.done(status.Code(err), time.Since(start)) }()
	if s.cfg.Reliability.PanicRecovery {
		defer func() {
			if r := recover(); r != nil {
				s.recovered(info.FullMethod, r)
				err = errInternal
			}
		}()
	}
	if err := s.requireLeader(ss.Context()); err != nil {
		return err
	}
	if err := s.learnerStream(info.FullMethod); err != nil {
		return err
	}
	// A stream's handler identifies its caller itself (per request).
	if _, err := s.guard.CheckRate(ss.Context(), info.FullMethod, guard.StreamKind(info.FullMethod)); err != nil {
		return toGRPCError(err)
	}
	ctx, lost, stop := s.monitorLeader(ss.Context())
	defer stop()
	if ctx != ss.Context() {
		ss = &leaderStream{ServerStream: ss, ctx: ctx}
	}
	err = handler(srv, &countingStream{ServerStream: ss, mm: mm})
	if lost() {
		return rpctypes.ErrGRPCNoLeader
	}
	return err
}

func (s *Server) recovered(method string, r any) {
	s.metrics.panics.Inc()
	s.lg.Error("request handler panicked; answered Internal and kept serving",
		"method", method, "panic", r, "stack", string(debug.Stack()))
}

// logSlowRequest logs a request that took longer than the threshold, with
// what etcd logs for one ("request stats").
func (s *Server) logSlowRequest(ctx context.Context, method string, req, resp any, err error, took time.Duration) {
	s.metrics.slowRequests.Inc()
	attrs := []any{"method", method, "took", took, "threshold", s.slowThreshold()}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote := p.Addr.String()
		// A JSON gateway request arrives over the in-memory connection;
		// the gateway forwards the HTTP client's address.
		if v := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for"); len(v) > 0 && remote == "bufconn" {
			remote = v[0]
		}
		attrs = append(attrs, "remote", remote)
	}
	if r, ok := req.(sizer); ok {
		attrs = append(attrs, "request-size", r.Size())
	}
	if r, ok := resp.(sizer); ok && err == nil {
		attrs = append(attrs, "response-size", r.Size())
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	s.lg.Warn("request took too long", attrs...)
}

// countingStream counts stream messages for grpc_server_msg_*_total.
type countingStream struct {
	grpc.ServerStream
	mm *methodMetrics
}

func (c *countingStream) SendMsg(m any) error {
	err := c.ServerStream.SendMsg(m)
	if err == nil {
		c.mm.msgSent.Inc()
	}
	return err
}

func (c *countingStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	if err == nil {
		c.mm.msgRecv.Inc()
	}
	return err
}

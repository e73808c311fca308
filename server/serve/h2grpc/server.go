package h2grpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
)

// Options configure a Server; zero values take grpc-go's defaults.
type Options struct {
	// Codec encodes messages (grpc.ForceServerCodecV2's); required.
	Codec             encoding.CodecV2
	UnaryInterceptor  grpc.UnaryServerInterceptor
	StreamInterceptor grpc.StreamServerInterceptor
	// MaxRecvMsgSize and MaxSendMsgSize bound a message (0: 4 MiB and
	// math.MaxInt32, grpc-go's defaults).
	MaxRecvMsgSize, MaxSendMsgSize int
	// MaxConcurrentStreams per connection (0: unlimited).
	MaxConcurrentStreams uint32
	// Workers is how many goroutines are kept to run calls; a new one
	// runs a call while all are busy (0: a goroutine per call).
	Workers     uint32
	Keepalive   keepalive.ServerParameters
	Enforcement keepalive.EnforcementPolicy
	// Creds, if set, handshake every accepted connection (TLS); their
	// AuthInfo is the peer's.
	Creds credentials.TransportCredentials
	// Inline, if set, reports whether a unary call of method path with
	// request msg (uncompressed) may run on the connection's reader
	// instead of a worker (see inline.go).
	Inline func(path string, msg []byte) bool
	// Defer, if set, is offered each unary call that Inline did not take,
	// with its context and request msg (uncompressed). It returns false
	// for a call that runs as usual; true promises to call run exactly
	// once, with ctx or a context derived from it, on a goroutine that
	// may run the call and must not wait for its client (see
	// deferred.go).
	Defer func(ctx context.Context, path string, msg []byte, run func(context.Context)) bool
	// InlineStream, if set, returns the handler with which the reader
	// answers the messages of a streaming call of method path, or nil:
	// the method's registered handler runs on a worker
	// (inlinestream.go). The interceptors do not run for such a call.
	InlineStream func(path string) StreamHandler
}

// BytesCodec is a codec that also encodes into and decodes from plain
// byte slices. When Options.Codec is one, a call's messages go through
// these, not through mem.BufferSlice: a reply is marshalled straight into
// the frame buffer rather than into its own allocation and then copied,
// and a request is decoded without two small allocations around it.
type BytesCodec interface {
	// AppendMarshal appends v's encoding to b.
	AppendMarshal(b []byte, v any) ([]byte, error)
	// UnmarshalBytes decodes data into v; v keeps no reference to data.
	UnmarshalBytes(data []byte, v any) error
}

// ErrServerStopped is what Serve returns when the server was already
// stopped (the same value as grpc's, so callers treat both transports
// alike).
var ErrServerStopped = grpc.ErrServerStopped

// Server serves gRPC calls to the registered services.
type Server struct {
	o       Options
	methods map[string]*method // by path, "/service/method"
	// services records which service names are registered ("unknown
	// method" vs "unknown service").
	services map[string]bool
	work     chan *stream
	// bc is o.Codec when it is a BytesCodec.
	bc BytesCodec

	mu      sync.Mutex
	lis     map[net.Listener]struct{}
	conns   map[*conn]struct{}
	stopped bool // Stop or GracefulStop began
	connWG  sync.WaitGroup
	serveWG sync.WaitGroup
	quit    chan struct{}
}

// method is one registered method: a unary MethodDesc or a StreamDesc.
type method struct {
	path    string
	impl    any
	unary   grpc.MethodHandler
	stream  *grpc.StreamDesc
	sinfo   grpc.StreamServerInfo
	service string
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// NewServer returns a server with no services.
func NewServer(o Options) *Server {
	if o.Codec == nil {
		panic("h2grpc: Options.Codec is required")
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = 4 << 20
	}
	if o.MaxSendMsgSize <= 0 {
		o.MaxSendMsgSize = math.MaxInt32
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = math.MaxUint32
	}
	if o.Keepalive.Time == 0 {
		o.Keepalive.Time = 2 * time.Hour // grpc-go's default
	}
	if o.Keepalive.Timeout == 0 {
		o.Keepalive.Timeout = 20 * time.Second
	}
	if o.Keepalive.Time < time.Second {
		o.Keepalive.Time = time.Second // grpc-go's floor
	}
	if o.Enforcement.MinTime == 0 {
		o.Enforcement.MinTime = 5 * time.Minute
	}
	s := &Server{
		o: o, methods: map[string]*method{}, services: map[string]bool{},
		lis: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}, quit: make(chan struct{}),
	}
	s.bc, _ = o.Codec.(BytesCodec)
	if o.Workers > 0 {
		s.work = make(chan *stream)
		for range o.Workers {
			go s.worker()
		}
	}
	return s
}

// RegisterService registers a service and its implementation, as
// grpc.Server.RegisterService; it must be called before Serve.
func (s *Server) RegisterService(sd *grpc.ServiceDesc, impl any) {
	if s.services[sd.ServiceName] {
		panic(fmt.Sprintf("h2grpc: service %s registered twice", sd.ServiceName))
	}
	s.services[sd.ServiceName] = true
	for i := range sd.Methods {
		d := &sd.Methods[i]
		p := "/" + sd.ServiceName + "/" + d.MethodName
		s.methods[p] = &method{path: p, impl: impl, unary: d.Handler, service: sd.ServiceName}
	}
	for i := range sd.Streams {
		d := &sd.Streams[i]
		p := "/" + sd.ServiceName + "/" + d.StreamName
		s.methods[p] = &method{path: p, impl: impl, stream: d, service: sd.ServiceName,
			sinfo: grpc.StreamServerInfo{FullMethod: p, IsClientStream: d.ClientStreams, IsServerStream: d.ServerStreams}}
	}
}

// lookup finds a path's method, or the status message grpc-go answers
// with when there is none.
func (s *Server) lookup(path string) (*method, string) {
	if m := s.methods[path]; m != nil {
		return m, ""
	}
	p := strings.TrimPrefix(path, "/")
	i := strings.LastIndex(p, "/")
	if p == path || i < 0 {
		return nil, fmt.Sprintf("malformed method name: %q", path)
	}
	svc, name := p[:i], p[i+1:]
	if s.services[svc] {
		return nil, fmt.Sprintf("unknown method %v for service %v", name, svc)
	}
	return nil, fmt.Sprintf("unknown service %v", svc)
}

// workerStack is the stack a worker holds while it waits for a call.
// A call (a Range down through Pebble's iterators) needs a deeper stack
// than a new goroutine's; the collector shrinks the stack of a parked
// goroutine using under a quarter of it, so without this reserve a worker
// grew its stack again, copying it, after every GC (measured: 12% of the
// server's CPU on a serializable Range). Held below the wait, it keeps the
// stack from shrinking while a call needs up to three times as much.
const workerStack = 16 << 10

// worker runs calls handed to it until the server stops.
func (s *Server) worker() {
	var reserve [workerStack]byte
	s.workLoop(&reserve)
}

// workLoop is the worker's loop, below the reserve.
//
//go:noinline
func (s *Server) workLoop(*[workerStack]byte) {
	// A plain receive, not a select with s.quit: a select costs a parked
	// worker twice the channel locking and queueing (measured: 8% of the
	// server's CPU on a serializable Range). stop sends each worker a nil.
	for {
		st := <-s.work
		if st == nil {
			return
		}
		st.run()
	}
}

// dispatch runs a call on an idle worker, or a new goroutine.
func (s *Server) dispatch(st *stream) {
	if s.work != nil {
		select {
		case s.work <- st:
			return
		default:
		}
	}
	go st.run()
}

// Serve accepts connections on l until it fails or the server stops
// (then nil, as grpc.Server.Serve; ErrServerStopped when it was already
// stopped).
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		l.Close()
		return ErrServerStopped
	}
	s.lis[l] = struct{}{}
	s.serveWG.Add(1)
	s.mu.Unlock()
	defer s.serveWG.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			stopped := s.stopped
			s.mu.Unlock()
			if stopped {
				return nil
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-s.quit:
					return nil
				}
			}
			s.mu.Lock()
			delete(s.lis, l)
			s.mu.Unlock()
			l.Close()
			return err
		}
		delay = 0
		s.connWG.Add(1)
		go s.handshake(nc)
	}
}

// handshake runs the connection's credentials' handshake, then serves it
// on this goroutine.
func (s *Server) handshake(nc net.Conn) {
	defer s.connWG.Done()
	var auth credentials.AuthInfo
	if s.o.Creds != nil {
		hc, ai, err := s.o.Creds.ServerHandshake(nc)
		if err != nil {
			nc.Close()
			return
		}
		nc, auth = hc, ai
	}
	c := newConn(s, nc, auth)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeListeners closes every listener; mu is held.
func (s *Server) closeListeners() {
	for l := range s.lis {
		l.Close()
	}
	s.lis = map[net.Listener]struct{}{}
}

// Stop closes the listeners and every connection at once; running calls
// see their contexts canceled.
func (s *Server) Stop() {
	s.stop(func(c *conn) { c.close(errors.New("server stopped")) })
}

// GracefulStop closes the listeners, sends every connection a GOAWAY,
// ends its inline stream calls (StreamHandler.Stopped) and waits until
// the other calls are done and the connections closed.
func (s *Server) GracefulStop() {
	s.stop(func(c *conn) {
		c.goAway()
		c.drainInline()
	})
}

// stop closes the listeners, ends each connection with end and waits for
// the serving goroutines.
func (s *Server) stop(end func(*conn)) {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.quit)
		if s.work != nil {
			// Each worker takes one once its call (if any) is done.
			go func() {
				for range s.o.Workers {
					s.work <- nil
				}
			}()
		}
	}
	s.closeListeners()
	for c := range s.conns {
		end(c)
	}
	s.mu.Unlock()
	s.serveWG.Wait()
	s.connWG.Wait()
}

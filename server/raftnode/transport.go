package raftnode

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The peer service: one client-streaming call per (sender, receiver) pair
// carries frames of raft messages. Its messages are raw frames in a bytes
// codec (each raftpb.Message marshalled by its own gogo Marshal), so no
// generated code is needed and the wire form is raft's own.
const (
	peerServiceName  = "metastore.raftnode.Peer"
	peerStreamMethod = "/" + peerServiceName + "/Messages"
	// peerSnapshotMethod streams one snapshot (snapshot_transport.go).
	peerSnapshotMethod = "/" + peerServiceName + "/Snapshot"

	mdClusterID = "metastore-cluster-id"
	mdFrom      = "metastore-from"
	mdTo        = "metastore-to"

	// maxFrameBytes caps how many queued messages share one frame; a
	// single larger message still goes alone.
	maxFrameBytes = 4 << 20
	// maxPeerMsgBytes bounds one frame on the wire.
	maxPeerMsgBytes = 256 << 20
	// Static HTTP/2 flow-control windows for peer connections, at the
	// ceiling gRPC's dynamic windows grow to. A dynamic window costs a
	// BDP ping and its ack after nearly every frame of a sparse stream
	// (a ReadIndex round's heartbeats), two more frames read and written
	// per raft message (RATIONALE.md, "Static windows on peer streams").
	peerStreamWindow = 8 << 20
	peerConnWindow   = 16 << 20
)

// Raft is what the transport delivers to: a Node.
type Raft interface {
	Step(m raftpb.Message) error
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
	// IsIDRemoved reports whether id was removed from the cluster; its
	// streams are refused.
	IsIDRemoved(id uint64) bool
	// ReportRemoved is called when a peer refuses this member as removed.
	ReportRemoved()
}

var _ Raft = (*Node)(nil)

// TransportConfig configures a Transport.
type TransportConfig struct {
	// ID is this member's ID; ClusterID the cluster's, checked on every
	// call in both directions.
	ID, ClusterID uint64
	// TLS is the client configuration for https peer URLs (etcd's
	// --peer-cert-file, --peer-key-file, --peer-trusted-ca-file).
	TLS *tls.Config
	// Dialer replaces the network dialer (tests inject faults with it).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// QueueSize is each peer's send queue (4096 messages, as rafthttp's
	// stream buffer); a full queue drops the message and reports the peer
	// unreachable.
	QueueSize int
	// RetryInterval is the pause after a failed connection (100ms).
	RetryInterval time.Duration
	// Logger receives connection errors.
	Logger *slog.Logger
	// Snapshots, if set, sees every snapshot transfer start and end, for
	// etcd's etcd_network_snapshot_* series.
	Snapshots SnapshotObserver

	// snapshotFrameHook, in tests, sees (and may alter or delay) each
	// snapshot data frame after its checksum was taken.
	snapshotFrameHook func(frame []byte)
}

// PeerTransport sends raft messages to peers over the gRPC peer service and
// serves it for incoming ones. Each peer has a bounded queue drained by one
// goroutine over one long-lived stream, so a slow or dead peer never blocks
// the ready loop or other peers.
type PeerTransport struct {
	cfg  TransportConfig
	lg   *slog.Logger
	raft atomic.Pointer[Raft]

	mu     sync.RWMutex
	peers  map[uint64]*peer
	closed bool
	snapWG sync.WaitGroup

	recvFail map[uint64]uint64 // messages received but not handed to raft, by sender (recvMu)
	recvMu   sync.Mutex
	received map[uint64]uint64 // bytes received, by sender
	snaps    map[uint64]*snapshotCounters
	snapsIn  atomic.Int64 // snapshots being received
	snapsOut atomic.Int64 // snapshots being sent
	ctx      context.Context
	cancel   context.CancelFunc
}

var _ Transport = (*PeerTransport)(nil)

// NewTransport returns a transport with no peers. Call SetRaft before
// serving; messages that arrive earlier are refused.
func NewTransport(cfg TransportConfig) *PeerTransport {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &PeerTransport{
		cfg:      cfg,
		lg:       cfg.Logger.With("member", FormatID(cfg.ID), "component", "peer-transport"),
		recvFail: make(map[uint64]uint64),
		peers:    make(map[uint64]*peer),
		received: make(map[uint64]uint64),
		snaps:    make(map[uint64]*snapshotCounters),
		ctx:      ctx,
		cancel:   cancel,
	}
}

// SetRaft sets the node incoming messages are delivered to.
func (t *PeerTransport) SetRaft(r Raft) { t.raft.Store(&r) }

func (t *PeerTransport) getRaft() Raft {
	if p := t.raft.Load(); p != nil {
		return *p
	}
	return nil
}

// Send queues msgs for their peers without blocking. Each peer's sender
// is woken once per call, not once per message: a Ready's messages to one
// peer leave together, in one frame.
func (t *PeerTransport) Send(msgs []raftpb.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	var (
		woken [4]*peer // the peers to wake; a group rarely has more
		wake  = woken[:0]
	)
	for _, m := range msgs {
		if m.To == 0 {
			continue
		}
		p := t.peers[m.To]
		if m.Type == raftpb.MsgSnap {
			t.sendSnapshot(p, m)
			continue
		}
		if p == nil {
			// A member not (or no longer) known: raft will learn of the
			// configuration change; nothing to report.
			continue
		}
		p.qmu.Lock()
		full := len(p.q) >= t.cfg.QueueSize
		if !full {
			p.q = append(p.q, m)
		}
		p.qmu.Unlock()
		if full {
			p.failures.Add(1)
			t.lg.Warn("dropped raft message: peer's send queue is full", "peer", FormatID(m.To), "type", m.Type.String())
			t.report(m.To)
			continue
		}
		if !slices.Contains(wake, p) {
			wake = append(wake, p)
		}
	}
	for _, p := range wake {
		select {
		case p.wake <- struct{}{}:
		default: // already due to look
		}
	}
}

// sendSnapshot streams m's snapshot to its peer on a goroutine of its own
// and reports the outcome to raft; see snapshot_transport.go.
func (t *PeerTransport) sendSnapshot(p *peer, m raftpb.Message) {
	r := t.getRaft()
	sp, ok := r.(snapshotPeer)
	if p == nil || !ok {
		if r != nil {
			r.ReportSnapshot(m.To, raft.SnapshotFailure)
		}
		return
	}
	t.snapWG.Add(1)
	go func() {
		defer t.snapWG.Done()
		start := time.Now()
		t.snapsOut.Add(1)
		t.observeStart(m.To, true)
		size, err := p.streamSnapshot(sp, m)
		t.snapsOut.Add(-1)
		t.countSnapshot(m.To, true, err == nil, time.Since(start))
		if r := t.getRaft(); r != nil {
			if err != nil {
				t.lg.Warn("sending snapshot failed", "peer", FormatID(m.To), "err", err)
				r.ReportUnreachable(m.To)
				r.ReportSnapshot(m.To, raft.SnapshotFailure)
			} else {
				t.lg.Info("sent snapshot", "peer", FormatID(m.To), "bytes", size, "took", time.Since(start))
				r.ReportSnapshot(m.To, raft.SnapshotFinish)
			}
		}
	}()
}

func (t *PeerTransport) report(id uint64) {
	if r := t.getRaft(); r != nil {
		r.ReportUnreachable(id)
	}
}

// AddPeer starts sending to id at peerURLs (a no-op if id is known).
func (t *PeerTransport) AddPeer(id uint64, peerURLs []string) {
	if id == t.cfg.ID {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.peers[id] != nil {
		return
	}
	p := &peer{
		t:     t,
		id:    id,
		urls:  append([]string(nil), peerURLs...),
		wake:  make(chan struct{}, 1),
		stopc: make(chan struct{}),
		donec: make(chan struct{}),
	}
	t.peers[id] = p
	go p.run()
}

// UpdatePeer changes id's peer URLs; the next connection uses them.
func (t *PeerTransport) UpdatePeer(id uint64, peerURLs []string) {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p == nil {
		t.AddPeer(id, peerURLs)
		return
	}
	p.mu.Lock()
	p.urls, p.next = append([]string(nil), peerURLs...), 0
	p.mu.Unlock()
	p.resetc.Store(true)
}

// RemovePeer stops sending to id.
func (t *PeerTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Close stops every peer's sender and waits for them.
func (t *PeerTransport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	peers := t.peers
	t.peers = nil
	t.mu.Unlock()
	t.cancel()
	for _, p := range peers {
		p.stop()
	}
	t.snapWG.Wait()
}

// PeerMetrics are one peer's counters, pulled by the server's collector
// under etcd's names (etcd_network_peer_sent_bytes_total,
// etcd_network_peer_received_bytes_total, etcd_network_peer_sent_failures_total).
type PeerMetrics struct {
	SentBytes, ReceivedBytes, SentFailures uint64
	// ReceivedFailures counts messages from the peer that could not be
	// decoded or that raft refused (etcd_network_peer_received_failures_total).
	ReceivedFailures uint64
}

// Metrics returns the counters of every peer known or heard from.
func (t *PeerTransport) Metrics() map[uint64]PeerMetrics {
	out := map[uint64]PeerMetrics{}
	t.mu.RLock()
	for id, p := range t.peers {
		out[id] = PeerMetrics{SentBytes: p.sentBytes.Load(), SentFailures: p.failures.Load()}
	}
	t.mu.RUnlock()
	t.recvMu.Lock()
	for id, n := range t.received {
		m := out[id]
		m.ReceivedBytes = n
		out[id] = m
	}
	for id, n := range t.recvFail {
		m := out[id]
		m.ReceivedFailures = n
		out[id] = m
	}
	t.recvMu.Unlock()
	return out
}

// countRecvFailure counts a message from peer from that was lost here.
func (t *PeerTransport) countRecvFailure(from uint64) {
	t.recvMu.Lock()
	t.recvFail[from]++
	t.recvMu.Unlock()
}

// peer is the sender to one member.
type peer struct {
	t  *PeerTransport
	id uint64

	// q is the send queue (at most QueueSize messages), filled by Send
	// and taken whole by the sender, which wake wakes (cap 1).
	qmu  sync.Mutex
	q    []raftpb.Message
	wake chan struct{}

	mu     sync.Mutex
	urls   []string
	next   int // the URL to try next (round robin on failure, as rafthttp)
	resetc atomic.Bool

	sentBytes atomic.Uint64
	failures  atomic.Uint64 // messages dropped or lost with a stream

	stopOnce sync.Once
	stopc    chan struct{}
	donec    chan struct{}
}

func (p *peer) stop() {
	p.stopOnce.Do(func() { close(p.stopc) })
	<-p.donec
}

func (p *peer) run() {
	defer close(p.donec)
	ctx, cancel := context.WithCancel(p.t.ctx)
	defer cancel()
	go func() {
		select {
		case <-p.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	ps := peerSender{p: p, ctx: ctx}
	defer func() { ps.s.close() }()
	var spare []raftpb.Message
	for {
		select {
		case <-p.wake:
		case <-p.stopc:
			return
		}
		p.qmu.Lock()
		queued := p.q
		p.q = spare
		p.qmu.Unlock()
		for rest := queued; len(rest) > 0; {
			// Frames of up to maxFrameBytes (a larger message alone).
			n, size := 1, rest[0].Size()
			for n < len(rest) && size < maxFrameBytes {
				size += rest[n].Size()
				n++
			}
			if !ps.send(rest[:n], size) {
				return
			}
			rest = rest[n:]
		}
		clear(queued) // the entries' data is not kept alive here
		spare = queued[:0]
	}
}

// peerSender is a peer's sending side: its stream, opened on demand.
type peerSender struct {
	p        *peer
	ctx      context.Context
	s        *msgStream
	retryAt  time.Time
	lastWarn time.Time
}

// send sends batch, of size bytes marshalled, as one frame; a batch that
// cannot go is counted and reported to raft. false: the transport stops.
func (ps *peerSender) send(batch []raftpb.Message, size int) bool {
	p := ps.p
	lost := func() bool {
		ps.retryAt = time.Now().Add(p.t.cfg.RetryInterval)
		p.failures.Add(uint64(len(batch)))
		p.t.report(p.id)
		return true
	}
	if p.resetc.Swap(false) {
		ps.s.close()
		ps.s = nil
	}
	if ps.s != nil && ps.s.ended() {
		// The stream ended while it had nothing to send (a follower's
		// stream to another follower is idle for a whole term; the
		// peer restarted, or its connection was cut and healed). That
		// failure is not this batch's: open a new stream for it now
		// rather than drop it and pause. Dropping it lost the first
		// messages to a new leader, a forwarded proposal among them,
		// whose client then waited out the request timeout.
		p.t.lg.Info("peer stream ended while idle; reopening", "peer", FormatID(p.id), "err", ps.s.err)
		ps.s.close()
		ps.s = nil
	}
	if ps.s == nil {
		if time.Now().Before(ps.retryAt) {
			p.failures.Add(uint64(len(batch)))
			p.t.report(p.id)
			return true
		}
		var err error
		if ps.s, err = p.open(ps.ctx); err != nil {
			if ps.ctx.Err() != nil {
				return false
			}
			if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied && st.Message() == msgMemberRemoved {
				if r := p.t.getRaft(); r != nil {
					r.ReportRemoved()
				}
			}
			if time.Since(ps.lastWarn) > 5*time.Second {
				p.t.lg.Warn("cannot reach peer", "peer", FormatID(p.id), "err", err)
				ps.lastWarn = time.Now()
			}
			return lost()
		}
	}
	n, err := ps.s.send(batch, size)
	if err != nil {
		if ps.ctx.Err() != nil {
			return false
		}
		p.t.lg.Warn("lost stream to peer", "peer", FormatID(p.id), "err", err)
		ps.s.close()
		ps.s = nil
		return lost()
	}
	p.sentBytes.Add(uint64(n))
	return true
}

type peerStream struct {
	conn   *grpc.ClientConn
	stream grpc.ClientStream
	cancel context.CancelFunc
}

func (s *peerStream) close() {
	if s == nil {
		return
	}
	s.cancel()
	s.conn.Close()
}

// finish returns the status the receiver ended the stream with.
func (s *peerStream) finish(err error) error {
	if errors.Is(err, io.EOF) {
		var b []byte
		if rerr := s.stream.RecvMsg(&b); rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr
		}
	}
	return err
}

// open dials the peer's next URL and opens the message stream; the
// receiver's cluster and member ID check answers before any message goes.
func (p *peer) open(ctx context.Context) (*msgStream, error) {
	raw, err := p.nextURL()
	if err != nil {
		return nil, err
	}
	return openMsgStream(ctx, raw, &p.t.cfg, p.id)
}

// nextURL is the peer URL to try (round robin on failure, as rafthttp).
func (p *peer) nextURL() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.urls) == 0 {
		return "", errors.New("raftnode: peer has no URLs")
	}
	raw := p.urls[p.next%len(p.urls)]
	p.next++
	return raw, nil
}

// openStream opens a stream of method on a connection of its own.
func (p *peer) openStream(ctx context.Context, desc *grpc.StreamDesc, method string) (*peerStream, error) {
	raw, err := p.nextURL()
	if err != nil {
		return nil, err
	}
	target, opts, err := PeerDial(raw, p.t.cfg.TLS)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		grpc.WithDefaultCallOptions(grpc.ForceCodec(frameCodec{}), grpc.MaxCallSendMsgSize(maxPeerMsgBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithStaticStreamWindowSize(peerStreamWindow),
		grpc.WithStaticConnWindowSize(peerConnWindow),
	)
	if d := p.t.cfg.Dialer; d != nil {
		opts = append(opts, grpc.WithContextDialer(d))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	sctx = metadata.AppendToOutgoingContext(sctx,
		mdClusterID, FormatID(p.t.cfg.ClusterID), mdFrom, FormatID(p.t.cfg.ID), mdTo, FormatID(p.id))
	s := &peerStream{conn: conn, cancel: cancel}
	s.stream, err = conn.NewStream(sctx, desc, method)
	if err == nil {
		var md metadata.MD
		if md, err = s.stream.Header(); err == nil && md == nil {
			err = s.finish(io.EOF)
			if err == nil {
				err = errors.New("raftnode: peer closed the stream")
			}
		}
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

var peerServiceDesc = grpc.ServiceDesc{
	ServiceName: peerServiceName,
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Messages",
		ClientStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			return srv.(*PeerTransport).serveMessages(ss)
		},
	}, {
		StreamName:    "Snapshot",
		ClientStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			return srv.(*PeerTransport).serveSnapshot(ss)
		},
	}},
}

// Register adds the peer service to s, which must use PeerCodec and allow
// messages of MaxPeerMessageBytes and PeerEnforcement's pings (the
// server's newPeerServer serves it with the lean transport, h2grpc).
func (t *PeerTransport) Register(s grpc.ServiceRegistrar) { s.RegisterService(&peerServiceDesc, t) }

// MaxPeerMessageBytes bounds one message of the peer services.
const MaxPeerMessageBytes = maxPeerMsgBytes

// PeerEnforcement is the keepalive policy a peer server enforces: the
// senders ping every 10 s, with or without a stream.
var PeerEnforcement = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}

// Status messages of refused streams (checked by tests).
const (
	msgClusterMismatch = "raftnode: cluster ID mismatch"
	msgMemberMismatch  = "raftnode: member ID mismatch"
	msgMemberRemoved   = "raftnode: the member has been permanently removed from the cluster"
)

func (t *PeerTransport) serveMessages(ss grpc.ServerStream) error {
	from, r, err := t.acceptStream(ss)
	if err != nil {
		return err
	}
	var frame []byte
	for {
		if err := ss.RecvMsg(&frame); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if r.IsIDRemoved(from) {
			// Removed while its stream was open: end it, so that the
			// sender reconnects, is refused and learns it was removed.
			return status.Error(codes.PermissionDenied, msgMemberRemoved)
		}
		t.recvMu.Lock()
		t.received[from] += uint64(len(frame))
		t.recvMu.Unlock()
		err := decodeFrame(frame, func(m raftpb.Message) error {
			if m.From != from || m.To != t.cfg.ID {
				return fmt.Errorf("raftnode: message %s→%s on the stream %s→%s", FormatID(m.From), FormatID(m.To), FormatID(from), FormatID(t.cfg.ID))
			}
			if err := r.Step(m); errors.Is(err, ErrStopped) {
				return err
			} else if err != nil {
				t.countRecvFailure(from)
			}
			return nil // raft ignores what it must (stale terms, …)
		})
		if errors.Is(err, ErrStopped) {
			return status.Error(codes.Unavailable, err.Error())
		}
		if err != nil {
			t.countRecvFailure(from)
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
}

// acceptStream checks an incoming stream's cluster, receiver and sender
// and answers its header.
func (t *PeerTransport) acceptStream(ss grpc.ServerStream) (uint64, Raft, error) {
	md, _ := metadata.FromIncomingContext(ss.Context())
	get := func(k string) uint64 {
		if v := md.Get(k); len(v) == 1 {
			id, err := strconv.ParseUint(v[0], 16, 64)
			if err == nil {
				return id
			}
		}
		return 0
	}
	if cid := get(mdClusterID); cid != t.cfg.ClusterID {
		return 0, nil, status.Errorf(codes.FailedPrecondition, "%s: local %s, remote %s", msgClusterMismatch, FormatID(t.cfg.ClusterID), FormatID(cid))
	}
	if to := get(mdTo); to != t.cfg.ID {
		return 0, nil, status.Errorf(codes.FailedPrecondition, "%s: message for %s reached %s", msgMemberMismatch, FormatID(to), FormatID(t.cfg.ID))
	}
	from := get(mdFrom)
	if from == 0 {
		return 0, nil, status.Error(codes.InvalidArgument, "raftnode: stream without a sender member ID")
	}
	r := t.getRaft()
	if r == nil {
		return 0, nil, status.Error(codes.Unavailable, "raftnode: member not started")
	}
	if r.IsIDRemoved(from) {
		return 0, nil, status.Error(codes.PermissionDenied, msgMemberRemoved)
	}
	if err := ss.SendHeader(metadata.MD{}); err != nil {
		return 0, nil, err
	}
	return from, r, nil
}

// A frame is messages, each as uvarint(length) then raftpb.Message bytes.
func appendFrame(b []byte, msgs []raftpb.Message) []byte {
	for i := range msgs {
		n := msgs[i].Size()
		b = binary.AppendUvarint(b, uint64(n))
		start := len(b)
		b = append(b, make([]byte, n)...)
		if _, err := msgs[i].MarshalTo(b[start:]); err != nil {
			panic(err) // sized above: cannot fail
		}
	}
	return b
}

func decodeFrame(b []byte, fn func(raftpb.Message) error) error {
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return errors.New("raftnode: malformed frame")
		}
		var m raftpb.Message
		if err := m.Unmarshal(b[k : k+int(n)]); err != nil {
			return fmt.Errorf("raftnode: malformed message: %w", err)
		}
		if err := fn(m); err != nil {
			return err
		}
		b = b[k+int(n):]
	}
	return nil
}

// frameCodec passes frames through: a *[]byte each way.
type frameCodec struct{}

func (frameCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raftnode: codec cannot marshal %T", v)
	}
	return *b, nil
}

func (frameCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raftnode: codec cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (frameCodec) Name() string { return "raftnode-frame" }

// PeerCodec is the peer server's codec: raw frames, a *[]byte each way,
// as frameCodec, in grpc's CodecV2 form and the lean transport's
// BytesCodec one (a reply appended straight into the frame buffer).
type PeerCodec struct{}

// Marshal implements encoding.CodecV2.
func (PeerCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := frameCodec{}.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal implements encoding.CodecV2.
func (PeerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raftnode: codec cannot unmarshal into %T", v)
	}
	*b = (*b)[:0]
	for _, d := range data {
		*b = append(*b, d.ReadOnlyData()...)
	}
	return nil
}

// AppendMarshal appends v's frame to b.
func (PeerCodec) AppendMarshal(b []byte, v any) ([]byte, error) {
	f, err := frameCodec{}.Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, f...), nil
}

// UnmarshalBytes copies data into v, a *[]byte (its buffer reused).
func (PeerCodec) UnmarshalBytes(data []byte, v any) error { return frameCodec{}.Unmarshal(data, v) }

// Name implements encoding.CodecV2.
func (PeerCodec) Name() string { return frameCodec{}.Name() }

package v3rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/guard"
)

// minProgressNotifyInterval is etcd's floor for the progress interval.
const minProgressNotifyInterval = 100 * time.Millisecond

// A watch stream is busy when, since its previous burst of responses,
// events were queued for its watchers more than busyBacklog times (etcd's
// watch streams overflow their 128-response channel at that point, and the
// watchers then get up to 100 ms of revisions at a time). A busy stream
// sends its next burst no sooner than busyBatchInterval after the previous
// one, so that events arriving meanwhile join the responses still queued
// and the client gets fewer, larger messages. A stream that keeps up sends
// each response at once, and control responses are never held back.
var (
	busyBacklog       uint64 = 128
	busyBatchInterval        = 50 * time.Millisecond
)

// defaultProgressNotifyInterval is etcd's interval when none is configured.
const defaultProgressNotifyInterval = 10 * time.Minute

// watchServer implements etcd's Watch service over the mvcc hub. Each gRPC
// stream is one mvcc.WatchStream: a receive goroutine turns requests into
// Watch/Cancel/RequestProgress calls, and a send goroutine drains the
// stream's ordered responses to the client, catching lagging watchers up as
// it goes, so a slow client only slows itself.
type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
	// maxRequestBytes is the fragmenting threshold: etcd's
	// --max-request-bytes plus the gRPC overhead it allows.
	maxRequestBytes int
	interval        time.Duration
}

var _ pb.WatchServer = (*watchServer)(nil)

func newWatchServer(s *Server) *watchServer {
	interval := s.cfg.Watch.ProgressNotifyInterval
	switch {
	case interval <= 0:
		interval = defaultProgressNotifyInterval
	case interval < minProgressNotifyInterval:
		s.lg.Warn("adjusting watch progress notify interval to minimum period",
			"min-watch-progress-notify-interval", minProgressNotifyInterval)
		interval = minProgressNotifyInterval
	}
	return &watchServer{s: s, maxRequestBytes: watchFragmentBytes(s.cfg.Limits), interval: interval}
}

// watchMetrics reports the hub's numbers under etcd's metric names, and
// metastore's own for what etcd does not have.
func watchMetrics(h *mvcc.Hub) []prometheus.Collector {
	gauge := func(name, help string, f func(mvcc.HubMetrics) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(h.Metrics())) })
	}
	counter := func(name, help string, labels prometheus.Labels, f func(mvcc.HubMetrics) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(f(h.Metrics())) })
	}
	return []prometheus.Collector{
		gauge("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", func(m mvcc.HubMetrics) int64 { return m.Streams }),
		gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", func(m mvcc.HubMetrics) int64 { return m.Watchers }),
		gauge("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", func(m mvcc.HubMetrics) int64 { return m.Lagging }),
		counter("etcd_debugging_mvcc_events_total", "Total number of events sent by this member.", nil, func(m mvcc.HubMetrics) int64 { return m.EventsSent }),
		gauge("etcd_debugging_mvcc_pending_events_total", "Total number of pending events to be sent.", func(m mvcc.HubMetrics) int64 { return m.EventsPending }),
		counter("metastore_watch_responses_total", "Watch responses handed to watch streams.", nil, func(m mvcc.HubMetrics) int64 { return m.Responses }),
		counter("metastore_watch_overflows_total", "Times a watcher fell behind because its stream's queue was full.", nil, func(m mvcc.HubMetrics) int64 { return m.Overflows }),
		counter("metastore_watch_compacted_total", "Watchers canceled because the revision they needed was compacted.", nil, func(m mvcc.HubMetrics) int64 { return m.Compacted }),
		counter("metastore_watch_catchup_reads_total", "Catch-up reads, by where the history came from.", prometheus.Labels{"source": "memory"}, func(m mvcc.HubMetrics) int64 { return m.ReadsMemory }),
		counter("metastore_watch_catchup_reads_total", "Catch-up reads, by where the history came from.", prometheus.Labels{"source": "store"}, func(m mvcc.HubMetrics) int64 { return m.ReadsStore }),
	}
}

// watchTag is the server's part of one watcher, carried with its responses.
type watchTag struct {
	fragment bool
	// progress is set for a watcher created with progress_notify; quiet
	// means no event was sent to it since the last tick (etcd's
	// bookkeeping: the next tick then sends it a progress notification).
	progress bool
	quiet    atomic.Bool
}

// serverWatchStream is one Watch RPC.
type serverWatchStream struct {
	srv    *watchServer
	grpc   pb.Watch_WatchServer
	stream *mvcc.WatchStream

	// progress holds the watchers created with progress_notify.
	mu       sync.Mutex
	progress map[int64]*watchTag

	closec chan struct{}
	sendc  chan error // the send loop's failure, if any
	wg     sync.WaitGroup
}

// Watch serves one bidirectional watch stream until the client goes away.
func (ws *watchServer) Watch(stream pb.Watch_WatchServer) error {
	sws := &serverWatchStream{
		srv:      ws,
		grpc:     ws.s.limitWatchSend(stream), // sendlimit.go
		stream:   ws.s.hub.NewStream(),
		progress: make(map[int64]*watchTag),
		closec:   make(chan struct{}),
		sendc:    make(chan error, 1),
	}
	sws.wg.Add(1)
	go func() {
		defer sws.wg.Done()
		if err := sws.sendLoop(); err != nil {
			sws.sendc <- err
		}
	}()
	recvc := make(chan error, 1)
	// NB: Recv is not tied to the handler's return, so it runs on its own
	// goroutine, which gRPC unblocks once the stream ends.
	go func() {
		if err := sws.recvLoop(); err != nil {
			recvc <- err
		}
	}()
	var err error
	select {
	case err = <-recvc:
		if errors.Is(err, context.Canceled) {
			err = rpctypes.ErrGRPCWatchCanceled
		}
	case err = <-sws.sendc:
	case <-sws.srv.s.stopping:
		// Shutdown: end the stream now (clients reconnect and resume)
		// rather than hold graceful stop for its full timeout.
		err = rpctypes.ErrGRPCStopped
	case <-stream.Context().Done():
		err = stream.Context().Err()
		if errors.Is(err, context.Canceled) {
			err = rpctypes.ErrGRPCWatchCanceled
		}
	}
	sws.stream.Close()
	close(sws.closec)
	sws.wg.Wait()
	return err
}

func (sws *serverWatchStream) recvLoop() error {
	for {
		req, err := sws.grpc.Recv()
		if errors.Is(err, io.EOF) {
			return nil // the client will send nothing more; keep sending
		}
		if err != nil {
			return err
		}
		switch u := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if u.CreateRequest != nil {
				sws.create(u.CreateRequest)
			}
		case *pb.WatchRequest_CancelRequest:
			if u.CancelRequest != nil && sws.stream.Cancel(u.CancelRequest.WatchId) {
				sws.mu.Lock()
				delete(sws.progress, u.CancelRequest.WatchId)
				sws.mu.Unlock()
			}
		case *pb.WatchRequest_ProgressRequest:
			if u.ProgressRequest != nil {
				sws.stream.RequestProgressAll()
			}
		default:
			// etcd keeps the stream open on a request it does not know.
			sws.srv.s.lg.Debug("ignoring unknown watch request", "type", fmt.Sprintf("%T", u))
		}
	}
}

// create handles a WatchCreateRequest with etcd's edge rules.
func (sws *serverWatchStream) create(r *pb.WatchCreateRequest) {
	key := r.Key
	if len(key) == 0 {
		key = []byte{0} // the smallest key, as etcd
	}
	if r.StartRevision < 0 {
		sws.stream.Reject(rpctypes.ErrCompacted.Error())
		return
	}
	if reason := sws.srv.s.allowWatchCreate(sws.grpc.Context()); reason != "" { // limits.stream_rate_limit
		sws.stream.Reject(reason)
		return
	}
	// etcd checks READ on the range as the client sent it ("\x00" end:
	// every key from key), at creation only.
	if err := sws.srv.s.authorizeWatch(sws.grpc.Context(), key, r.RangeEnd); err != nil {
		sws.stream.Reject(watchCancelReason(err))
		return
	}
	// etcd's range_end convention to the mvcc one: none is a single key,
	// "\x00" every key >= key.
	var end []byte
	switch {
	case len(r.RangeEnd) == 0:
	case len(r.RangeEnd) == 1 && r.RangeEnd[0] == 0:
		end = []byte{}
	default:
		end = r.RangeEnd
	}
	o := mvcc.WatchOptions{ID: r.WatchId, Key: key, End: end, StartRev: r.StartRevision, PrevKV: r.PrevKv, Fragment: r.Fragment}
	for _, f := range r.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			o.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			o.NoDelete = true
		}
	}
	var tag *watchTag
	if r.Fragment || r.ProgressNotify {
		tag = &watchTag{fragment: r.Fragment, progress: r.ProgressNotify}
		tag.quiet.Store(true)
		o.Tag = tag
	}
	sws.mu.Lock()
	id, err := sws.stream.Watch(o)
	if err == nil && r.ProgressNotify {
		sws.progress[id] = tag
	}
	sws.mu.Unlock()
}

func (sws *serverWatchStream) sendLoop() error {
	interval := sws.srv.interval
	// etcd adds up to a tenth of jitter so that watchers created together
	// do not get their notifications together.
	ticker := time.NewTicker(interval + rand.N(interval/10+1))
	defer ticker.Stop()
	var buf []mvcc.WatchResponse
	ctx := sws.grpc.Context()
	var (
		lastBurst time.Time
		endPushes uint64 // the stream's pushes when the last burst ended
		busy      bool
	)
	linger := time.NewTimer(0)
	<-linger.C
	for {
		select {
		case <-sws.stream.Ready():
			if d := busyBatchInterval - time.Since(lastBurst); busy && d > 0 && !sws.stream.Urgent() {
				linger.Reset(d)
			wait:
				for {
					select {
					case <-linger.C:
						break wait
					case <-sws.stream.Ready():
						if sws.stream.Urgent() {
							linger.Stop()
							break wait
						}
					case <-sws.closec:
						return nil
					}
				}
			}
		case <-ticker.C:
			sws.mu.Lock()
			for id, tag := range sws.progress {
				if tag.quiet.Swap(true) {
					sws.stream.RequestProgress(id)
				}
			}
			sws.mu.Unlock()
			continue
		case <-sws.closec:
			return nil
		}
		busy = sws.stream.Pushes()-endPushes >= busyBacklog
		for {
			out, more, err := sws.stream.Next(ctx, buf[:0])
			if err != nil {
				sws.srv.s.lg.Error("watch stream cannot read history", "err", err)
				return toGRPCError(err)
			}
			for i := range out {
				if err := sws.send(&out[i]); err != nil {
					return watchSendError(err) // nil: the client is gone; the handler ends with its context
				}
			}
			clear(out)
			buf = out
			if !more {
				lastBurst, endPushes = time.Now(), sws.stream.Pushes()
				break
			}
			select {
			case <-sws.closec:
				return nil
			default:
			}
		}
	}
}

// send writes one response, split into fragments if the watcher asked for
// them and it is too large.
func (sws *serverWatchStream) send(r *mvcc.WatchResponse) error {
	s := sws.srv.s
	m := &wireWatchResponse{}
	// NB: etcd's header revision is the one the response was made at; a
	// compaction cancellation carries 0.
	m.hdr = pb.ResponseHeader{ClusterId: s.ids.cluster, MemberId: s.ids.member, RaftTerm: s.ids.term, Revision: r.Revision}
	wr := &m.WatchResponse
	*wr = pb.WatchResponse{
		Header:          &m.hdr,
		WatchId:         r.WatchID,
		Created:         r.Created,
		Canceled:        r.Canceled,
		CompactRevision: r.CompactRevision,
		CancelReason:    r.CancelReason,
	}
	if len(r.Events) > 0 {
		wr.Events = r.Events
		compactRev := s.store.CompactRev()
		// etcd looks the previous version up when it sends; once compaction
		// covers rev-1 it is gone. (The first event is the oldest.)
		if r.Events[0].Kv.ModRevision <= compactRev {
			wr.Events = make([]*mvccpb.Event, len(r.Events))
			for i, ev := range r.Events {
				if ev.PrevKv != nil && ev.Kv.ModRevision <= compactRev {
					c := *ev
					c.PrevKv = nil
					ev = &c
				}
				wr.Events[i] = ev
			}
		}
	}
	tag, _ := r.Tag.(*watchTag)
	if tag != nil && tag.progress && len(r.Events) > 0 {
		tag.quiet.Store(false) // events count as progress
	}
	if tag != nil && tag.fragment {
		return sendFragments(wr, sws.srv.maxRequestBytes, func(part *pb.WatchResponse) error {
			return sws.grpc.SendMsg(&wireWatchResponse{WatchResponse: *part})
		})
	}
	return sws.grpc.SendMsg(m)
}

// wireWatchResponse is a WatchResponse as sent: with its header in the same
// allocation, and encoded without the codec's buffer pool (see unpooled).
type wireWatchResponse struct {
	pb.WatchResponse
	hdr pb.ResponseHeader
}

func (*wireWatchResponse) unpooled() {}

var _ unpooled = (*wireWatchResponse)(nil)

// sendFragments sends wr whole if it is under max bytes or has one event;
// otherwise in pieces that each stay under max (or hold a single event),
// all but the last marked Fragment, as etcd splits them.
func sendFragments(wr *pb.WatchResponse, max int, send func(*pb.WatchResponse) error) error {
	if wr.Size() < max || len(wr.Events) < 2 {
		return send(wr)
	}
	events := wr.Events
	part := *wr
	part.Events = nil
	part.Fragment = true
	// The size of a response grows by each event's encoding: a one-byte
	// tag (field 11), the length and the event, so a piece's size is kept
	// as a running sum instead of re-measuring the whole message.
	base := part.Size()
	for len(events) > 0 {
		size, n := base, 0
		for n < len(events) {
			l := events[n].Size()
			size += 1 + varintLen(uint64(l)) + l
			if n > 0 && size >= max {
				break
			}
			n++
		}
		p := part
		p.Events = events[:n]
		events = events[n:]
		p.Fragment = len(events) > 0
		if err := send(&p); err != nil {
			return err
		}
	}
	return nil
}

func varintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// allowWatchCreate takes a stream token for one watch created on a Watch
// stream (and the caller's and the global one). A refused creation is
// canceled with etcd's "too many requests" as its reason, which clientv3
// turns into rpctypes.ErrTooManyRequests; the stream and its other
// watchers carry on.
func (s *Server) allowWatchCreate(ctx context.Context) (cancelReason string) {
	if _, err := s.guard.CheckRate(ctx, guard.WatchMethod, guard.KindStream); err != nil {
		return rpctypes.ErrorDesc(toGRPCError(err))
	}
	return ""
}

package server

import (
	"context"
	"crypto/tls"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// peerHealth knows, for every other member, since when this member has
// been connected to it: etcd's rafthttp ActiveSince, which the
// reconfiguration checks of --strict-reconfig-check count on (a member
// add or removal is refused while fewer peers than a quorum have been
// connected for etcd's health interval, 5s).
//
// NB: raftnode's transport opens a stream to a peer only when it has a
// message for it, so a follower never talks to the other followers and
// its streams cannot tell whether they are up. etcd's members keep
// streams to every peer. peerHealth asks every member for its member
// list on the peer service instead, every probeInterval, over its own
// connections that redial within a second (gRPC's default backoff starts
// at one and grows to two minutes), and checks that the answer comes from
// the expected member of this cluster.
type peerHealth struct {
	s        *Server
	interval time.Duration
	peers    *peerClients // the probes' own connections, quick to redial

	mu    sync.Mutex
	since map[uint64]time.Time // first answer of the current unbroken run
}

// probeInterval is how often each peer is asked; a dead peer is noticed
// within it (or within probeTimeout, if it does not answer at all).
const (
	probeInterval = 200 * time.Millisecond
	probeTimeout  = time.Second
	// In the first startupProbing of the member's life, peers that have
	// not answered yet are asked again every startupProbeInterval.
	startupProbing       = 5 * time.Second
	startupProbeInterval = 20 * time.Millisecond
)

func newPeerHealth(s *Server, tlsConf *tls.Config) *peerHealth {
	// A peer that is starting refuses the first dials; the next ones
	// must not wait out gRPC's default backoff (1s, growing to 2m).
	bo := backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}
	peers := &peerClients{tls: tlsConf, dial: []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: probeTimeout}),
	}}
	return &peerHealth{s: s, interval: probeInterval, peers: peers, since: map[uint64]time.Time{}}
}

// ActiveSince returns when this member's connection to member id came up;
// zero if it is not connected.
func (h *peerHealth) ActiveSince(id uint64) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since[id]
}

// run probes every other member until ctx ends, then closes the
// connections.
func (h *peerHealth) run(ctx context.Context) {
	defer h.close()
	start := time.Now()
	for {
		members := h.s.applier.Members().Members
		var wg sync.WaitGroup
		for _, m := range members {
			if m.ID != h.s.ids.Member {
				wg.Go(func() { h.probe(ctx, m) })
			}
		}
		wg.Wait()
		h.forget(members)
		// NB: etcd's streams are up before its member serves (it needs
		// them to publish), so right after start a reconfiguration on
		// this member must already count the peers that answer: until
		// every peer has answered, within the first health interval,
		// probe again at once. A joining member learns its peers only
		// as it replays the log.
		next := h.interval
		if time.Since(start) < startupProbing && !h.allConnected(members) {
			next = startupProbeInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// allConnected reports whether some other member is known and every
// other member answers.
func (h *peerHealth) allConnected(members []*pb.Member) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range members {
		if m.ID == h.s.ids.Member {
			continue
		}
		if h.since[m.ID].IsZero() {
			return false
		}
		n++
	}
	return n > 0
}

// probe asks member m for its member list at each of its peer URLs until
// one answers as m of this cluster.
func (h *peerHealth) probe(ctx context.Context, m *pb.Member) {
	ok := false
	for _, u := range m.PeerURLs {
		var resp pb.MemberListResponse
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := h.call(pctx, u, &resp)
		cancel()
		if err == nil && resp.Header != nil && resp.Header.MemberId == m.ID && resp.Header.ClusterId == h.s.ids.Cluster {
			ok = true
			break
		}
	}
	if ctx.Err() != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !ok:
		delete(h.since, m.ID)
	case h.since[m.ID].IsZero():
		h.since[m.ID] = time.Now()
	}
}

// forget drops what is known of members no longer in the cluster.
func (h *peerHealth) forget(members []*pb.Member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.since {
		found := false
		for _, m := range members {
			found = found || m.ID == id
		}
		if !found {
			delete(h.since, id)
		}
	}
}

func (h *peerHealth) call(ctx context.Context, raw string, resp *pb.MemberListResponse) error {
	c, err := h.peers.conn(raw)
	if err != nil {
		return err
	}
	in := []byte{}
	var out []byte
	if err := c.Invoke(ctx, peerMembers, &in, &out); err != nil {
		return err
	}
	return resp.Unmarshal(out)
}

func (h *peerHealth) close() {
	h.peers.close()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.since = map[uint64]time.Time{}
}

// peerActiveSince is v3rpc's view of peerHealth; nil for a single member.
func (s *Server) peerActiveSince() func(id uint64) time.Time {
	if s.health == nil {
		return nil
	}
	return s.health.ActiveSince
}

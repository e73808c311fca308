package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/credentials"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/mvcc"
	"github.com/metastore-dev/metastore/server/apply"
	"github.com/metastore-dev/metastore/server/config"
	"github.com/metastore-dev/metastore/server/raftnode"
	"github.com/metastore-dev/metastore/server/serve"
	"github.com/metastore-dev/metastore/server/v3rpc"
)

// A cluster member (config.ClusterMode): the same store, applier and RPC
// services as a single member, with a Raft node (server/raftnode) in place
// of the group-commit loop and a peer listener beside the client ones.

// clusterState is what New learns about the member before it opens the
// applier, and what the node starts with.
type clusterState struct {
	log *raftnode.LogStore
	// peers are the members to reach at start; nil: the stored members.
	peers      []raftnode.Peer
	newCluster bool
	// initialized: the data directory already had this member's state
	// (etcd's memberInitialized: a restart, not a bootstrap or a join).
	initialized bool
	// self is the member record the applier stores when it has none (a
	// single node's data directory); nil for a new or joining member,
	// whose member set comes from the log.
	self *pb.Member

	serverTLS, clientTLS *tls.Config
}

// prepareCluster decides the member's IDs: stored ones for a data
// directory that has state (a cluster member's, or a single node's that
// becomes a one-member cluster); derived from --initial-cluster as etcd
// does for a new cluster; fetched from the running members for one that
// joins (--initial-cluster-state existing).
func (s *Server) prepareCluster(ctx context.Context) (*clusterState, error) {
	cfg := s.cfg
	cs := &clusterState{}
	var err error
	if cs.serverTLS, cs.clientTLS, err = peerTLS(cfg.Server.PeerTLS); err != nil {
		return nil, err
	}
	s.peers = &peerClients{tls: cs.clientTLS}
	if cs.log, err = raftnode.OpenLogStore(s.store.DB(), raftnode.LogStoreOptions{Failed: s.store.Failed}); err != nil {
		return nil, err
	}
	applied, err := apply.StoredAppliedIndex(s.store)
	if err != nil {
		return nil, err
	}
	hasRaft, err := apply.HasRaftState(s.store)
	if err != nil {
		return nil, err
	}
	last, _ := cs.log.LastIndex()
	fresh := applied == 0 && !hasRaft && last == 0 && raft.IsEmptyHardState(cs.log.HardState())
	if !fresh {
		ids, ok, err := v3rpc.StoredIDs(s.store)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errors.New("data directory has state but no member ID")
		}
		s.ids = ids
		cs.initialized = true
		if !hasRaft && last == 0 && raft.IsEmptyHardState(cs.log.HardState()) {
			// A single node's data directory: its member set (stored by
			// the loop, or this one) stands for the configuration.
			cs.self = &pb.Member{ID: ids.Member, PeerURLs: cfg.Server.AdvertisePeerURLs}
			s.lg.Info("opening a single member's data directory as a one-member cluster", "applied-index", applied)
		}
		// Otherwise the member set is the log's, even if none of it is
		// applied yet (a crash right after the bootstrap was saved).
		return cs, nil
	}
	members, err := cfg.InitialMembers()
	if err != nil {
		return nil, err
	}
	token := cfg.Cluster.InitialClusterToken
	if cfg.Cluster.InitialClusterState == "existing" {
		if err := s.joinCluster(ctx, cs, members); err != nil {
			return nil, err
		}
	} else {
		var ids []uint64
		for _, m := range members {
			id, err := raftnode.MemberID(m.PeerURLs, token, nil)
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
			cs.peers = append(cs.peers, raftnode.Peer{ID: id, PeerURLs: m.PeerURLs})
			if m.Name == cfg.Name {
				s.ids.Member = id
			}
		}
		s.ids.Cluster = raftnode.ClusterID(ids)
		cs.newCluster = true
	}
	s.ids.Term = 1
	// A new member's member set comes from the log (the bootstrap's or
	// the leader's): none is stored up front.
	b, err := s.store.NewBatch()
	if err != nil {
		return nil, err
	}
	if err := apply.ClearMembers(b); err != nil {
		b.Abort()
		return nil, err
	}
	if err := b.Commit(); err != nil {
		return nil, err
	}
	if err := v3rpc.SaveIDs(s.store, s.ids); err != nil {
		return nil, err
	}
	return cs, nil
}

// joinCluster learns this member's ID (chosen by `member add`) and the
// cluster's from the running members, matching this member's advertised
// peer URLs, as etcd's join does.
func (s *Server) joinCluster(ctx context.Context, cs *clusterState, members []config.InitialMember) error {
	var urls []string
	for _, m := range members {
		if m.Name != s.cfg.Name {
			urls = append(urls, m.PeerURLs...)
		}
	}
	if len(urls) == 0 {
		return errors.New("--initial-cluster-state existing: --initial-cluster lists no other member to join")
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var (
		list *pb.MemberListResponse
		err  error
	)
	for {
		if list, err = s.peers.remoteMembers(cctx, urls); err == nil || cctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	mine := slices.Sorted(slices.Values(s.cfg.Server.AdvertisePeerURLs))
	for _, m := range list.Members {
		if slices.Equal(slices.Sorted(slices.Values(m.PeerURLs)), mine) {
			s.ids.Member = m.ID
		}
		cs.peers = append(cs.peers, raftnode.Peer{ID: m.ID, PeerURLs: m.PeerURLs})
	}
	if s.ids.Member == 0 {
		return fmt.Errorf("error validating peerURLs %v: no member of the running cluster has this member's peer URLs (add it with `etcdctl member add` first)", mine)
	}
	s.ids.Cluster = list.Header.ClusterId
	return nil
}

// startCluster binds the peer listeners and starts the Raft node over the
// applier; New calls it once the applier and the watch hub exist.
func (s *Server) startCluster(cs *clusterState) error {
	cfg := s.cfg
	s.machine = apply.NewRaftMachine(s.store, s.applier, apply.RaftMachineOptions{
		OnCommit: s.hub.Publish, OnApplied: s.onApplied, OnRestore: s.restoreDerived,
	})
	snaps, err := s.openSnapshots(cs.log)
	if err != nil {
		return err
	}
	s.peerTransport = raftnode.NewTransport(raftnode.TransportConfig{
		ID: s.ids.Member, ClusterID: s.ids.Cluster, TLS: cs.clientTLS,
		Logger: s.lg, Snapshots: newSnapshotMetrics(s.metrics.Registry()),
	})
	s.metrics.Registry().MustRegister(peerCollector{s.peerTransport})
	var peerCreds credentials.TransportCredentials
	if cs.serverTLS != nil {
		// Every refused handshake (a certificate refused by the CA or the
		// allowed CN/hostname check, no certificate, not TLS) is logged,
		// as etcd's listener logs it: an operator sees why a member
		// cannot join.
		peerCreds = rejectLoggingCreds{credentials.NewTLS(cs.serverTLS), s.lg}
	}
	// The lean transport (peerserver.go).
	s.peerServer = s.newPeerServer(peerCreds)
	s.registerClusterMetrics() // peermetrics.go
	for _, raw := range cfg.PeerListenURLs() {
		u, err := url.Parse(raw)
		if err != nil {
			return err
		}
		ln, err := serve.ListenURL(u)
		if err != nil {
			return fmt.Errorf("listen on peer URL %s: %w", raw, err)
		}
		s.peerListeners = append(s.peerListeners, ln)
	}
	peers := cs.peers
	ms := s.applier.Members()
	if cs.self != nil && len(ms.Members) > 1 {
		// A single node's `member add` recorded members that never ran;
		// as voters of the adopted group they would hold its quorum
		// before they ever started.
		return fmt.Errorf("the single node's member set lists %d members: remove the ones added with `member add` (etcdctl member remove) before starting it with peer flags", len(ms.Members))
	}
	if peers == nil {
		for _, m := range ms.Members {
			peers = append(peers, raftnode.Peer{ID: m.ID, PeerURLs: m.PeerURLs})
		}
	}
	hb, et := cfg.Cluster.HeartbeatInterval, cfg.Cluster.ElectionTimeout
	node, err := raftnode.Start(raftnode.Config{
		ID: s.ids.Member, Log: cs.log, StateMachine: s.machine, Transport: s.peerTransport,
		Peers: peers, Removed: ms.Removed, NewCluster: cs.newCluster,
		TickInterval: hb, ElectionTicks: int(et / hb), HeartbeatTicks: 1,
		Logger: s.lg, OnSave: s.metrics.ObserveRaftSave,
		SnapshotCount: cfg.Cluster.SnapshotCount, SnapshotCatchUpEntries: cfg.Cluster.SnapshotCatchUpEntries,
		Snapshots: snaps,
	})
	if err != nil {
		return err
	}
	s.lg.Info("started raft member", "member-id", raftnode.FormatID(s.ids.Member), "cluster-id", raftnode.FormatID(s.ids.Cluster),
		"peer-urls", cfg.PeerListenURLs(), "new-cluster", cs.newCluster, "members", len(peers))
	s.node, s.logStore = node, cs.log
	s.health = newPeerHealth(s, cs.clientTLS)
	s.peerTransport.SetRaft(node)
	s.proposer = apply.NewRaftProposer(node, s.applier, 5*time.Second+2*et)
	return nil
}

// servePeers starts serving the peer listeners, once the services the
// peer handlers use exist.
func (s *Server) servePeers() {
	for _, ln := range s.peerListeners {
		go func(ln net.Listener) { _ = s.peerServer.Serve(ln) }(ln)
	}
}

// onApplied runs on every member for every applied request: a simple
// token is registered here so that it is valid on every member (etcd's
// simple tokens are assigned at apply too).
func (s *Server) onApplied(r *apply.Request, res *apply.Result) {
	if r.Authenticate == nil || r.Authenticate.SimpleToken == "" || res.Err != nil || !s.tokens.Simple() {
		return
	}
	resp, ok := res.Resp.(*pb.AuthenticateResponse)
	if !ok {
		return
	}
	if _, err := s.tokens.Issue(r.Authenticate.Name, res.AuthRevision, resp.Token); err != nil && !auth.ErrTokenCollision(err) {
		s.lg.Warn("register simple token", "err", err)
	}
}

// runCluster is a cluster member's background work: it publishes the
// member's name and client URLs (etcd's publish), promotes the lessor when
// this member becomes the leader, and stops the server when the node stops
// (removed from the cluster, or a fatal error). The channel it returns is
// closed once the member's attributes are published.
func (s *Server) runCluster(ctx context.Context, stop context.CancelFunc) <-chan struct{} {
	go func() {
		select {
		case <-s.node.Done():
			if err := s.node.Err(); err != nil {
				if errors.Is(err, raftnode.ErrRemoved) {
					s.lg.Warn("this member was removed from the cluster; shutting down")
					// As etcd's stopWithDelay: let the answer to a member
					// remove of this member get out first.
					select {
					case <-time.After(10 * s.cfg.Cluster.HeartbeatInterval):
					case <-ctx.Done():
					}
				} else {
					s.lg.Error("raft node stopped; shutting down", "err", err)
				}
			}
			stop()
		case <-ctx.Done():
		}
	}()
	published := make(chan struct{})
	s.bg.Add(3)
	go func() {
		defer s.bg.Done()
		if s.publishMember(ctx) {
			close(published)
		}
	}()
	go func() {
		defer s.bg.Done()
		s.health.run(ctx)
	}()
	s.runCorruptChecks(ctx) // corrupt.go
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.runPeerProber(ctx) // peermetrics.go
	}()
	go func() {
		defer s.bg.Done()
		wasLeader := false
		for {
			ch := s.node.LeaderChangedNotify()
			leader := s.node.IsLeader()
			if leader && !wasLeader {
				// etcd's lessor Promote: the new leader gives every lease
				// its remaining TTL plus an election timeout from now.
				s.lessor.Promote(s.cfg.Cluster.ElectionTimeout)
				s.lg.Info("became the leader; lease TTLs extended", "leases", s.lessor.Len())
			}
			wasLeader = leader
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return published
}

// publishMember proposes this member's name and client URLs until they are
// applied (etcd's publishV3), unless the stored ones are current; false if
// ctx ended first.
func (s *Server) publishMember(ctx context.Context) bool {
	clientURLs := s.cfg.Server.AdvertiseClientURLs
	if len(clientURLs) == 0 {
		for _, a := range s.ClientAddrs() {
			clientURLs = append(clientURLs, "http://"+a)
		}
	}
	for {
		if m := s.applier.Members().Member(s.ids.Member); m != nil && m.Name == s.cfg.Name && slices.Equal(m.ClientURLs, clientURLs) {
			return true
		}
		req := &apply.Request{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
			Member_ID:        s.ids.Member,
			MemberAttributes: &membershippb.Attributes{Name: s.cfg.Name, ClientUrls: clientURLs},
		}}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.proposer.Propose(pctx, req)
		cancel()
		if err == nil {
			continue // check what was applied
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stopCluster stops the node (it applies what raft already handed out)
// and the peer listeners.
func (s *Server) stopCluster() {
	if s.peerServer != nil {
		s.peerServer.Stop()
	}
	for _, ln := range s.peerListeners {
		ln.Close() // not served yet if New failed after binding
	}
	if s.node != nil {
		if err := s.node.Stop(); err != nil {
			s.lg.Error("stop raft node", "err", err)
		}
	}
	if s.peerTransport != nil {
		s.peerTransport.Close()
	}
	if s.peers != nil {
		s.peers.close()
	}
}

// PeerAddrs returns the bound peer listener addresses (host:port).
func (s *Server) PeerAddrs() []string {
	out := make([]string, len(s.peerListeners))
	for i, ln := range s.peerListeners {
		out[i] = ln.Addr().String()
	}
	return out
}

// Node returns the member's Raft node (nil for a single member).
func (s *Server) Node() *raftnode.Node { return s.node }

// leaderForwarder is the v3rpc.LeaderForwarder of a cluster member; nil
// for a single member.
func (s *Server) leaderForwarder() v3rpc.LeaderForwarder {
	if s.node == nil {
		return nil
	}
	return leaderClient{s: s}
}

// refuseClusterDataDir keeps a single member (no peer settings) off a
// cluster member's data directory: the Loop would apply beside the Raft
// log and the two would disagree.
func refuseClusterDataDir(store *mvcc.Store) error {
	has, err := apply.HasRaftState(store)
	if err != nil {
		return err
	}
	if !has {
		log, err := raftnode.OpenLogStore(store.DB(), raftnode.LogStoreOptions{CacheBytes: -1})
		if err != nil {
			return err
		}
		last, _ := log.LastIndex()
		has = last > 0 || !raft.IsEmptyHardState(log.HardState())
	}
	if !has {
		return nil
	}
	return errors.New("the data directory belongs to a cluster member (it holds Raft state): start it with its cluster settings (--listen-peer-urls, --initial-advertise-peer-urls, --initial-cluster)")
}

// catchUp is the guard's wait for this member to apply what the cluster
// committed; nil for a single member.
func (s *Server) catchUp() func(ctx context.Context) error {
	if s.node == nil {
		return nil
	}
	return func(ctx context.Context) error {
		_, err := s.node.ReadIndex(ctx)
		return err
	}
}

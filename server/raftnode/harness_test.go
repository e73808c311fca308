package raftnode

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"

	"github.com/metastore-dev/metastore/server/serve/h2grpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// kvSM is a test state machine over Pebble, written as the server's will
// be: each apply batch stores its effects, the applied index and the
// ConfState atomically, without fsync (the log's synced batches cover it).
type kvSM struct {
	db *pebble.DB

	mu      sync.Mutex
	applied uint64
	cs      raftpb.ConfState
	data    []string // applied payloads, in order
	members map[uint64][]string
	removed map[uint64]bool

	// hooks (optional)
	beforeApply func([]Entry)
	// installs counts the snapshots installed.
	installs int
}

var _ SnapshotStateMachine = (*kvSM)(nil)

const smPrefix = 'T'

func smKey(kind byte, i uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{smPrefix, kind}, i)
}

func openKVSM(db *pebble.DB) (*kvSM, error) {
	sm := &kvSM{db: db}
	if err := sm.load(); err != nil {
		return nil, err
	}
	return sm, nil
}

// load reads the state from the database (at open, and after a snapshot).
func (sm *kvSM) load() error {
	sm.applied, sm.cs, sm.data = 0, raftpb.ConfState{}, nil
	sm.members, sm.removed = map[uint64][]string{}, map[uint64]bool{}
	it, err := sm.db.NewIter(&pebble.IterOptions{LowerBound: []byte{smPrefix}, UpperBound: []byte{smPrefix + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		switch k[1] {
		case 'a':
			sm.applied = binary.BigEndian.Uint64(v)
		case 'c':
			if err := sm.cs.Unmarshal(v); err != nil {
				return err
			}
		case 'd':
			sm.data = append(sm.data, string(v))
		case 'm':
			var urls []string
			if err := json.Unmarshal(v, &urls); err != nil {
				return err
			}
			sm.members[binary.BigEndian.Uint64(k[2:])] = urls
		case 'x':
			sm.removed[binary.BigEndian.Uint64(k[2:])] = true
		}
	}
	return it.Error()
}

func (sm *kvSM) SnapshotState(r pebble.Reader) (uint64, raftpb.ConfState, error) {
	var (
		applied uint64
		cs      raftpb.ConfState
	)
	if v, closer, err := r.Get(smKey('a', 0)); err == nil {
		applied = binary.BigEndian.Uint64(v)
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return 0, cs, err
	}
	if v, closer, err := r.Get(smKey('c', 0)); err == nil {
		err = cs.Unmarshal(v)
		closer.Close()
		if err != nil {
			return 0, cs, err
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return 0, cs, err
	}
	return applied, cs, nil
}

func (sm *kvSM) InstallSnapshot(meta raftpb.SnapshotMetadata, install func() error) (Restored, error) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if err := install(); err != nil {
		return Restored{}, err
	}
	if err := sm.load(); err != nil {
		return Restored{}, err
	}
	if sm.applied != meta.Index {
		return Restored{}, fmt.Errorf("kvSM: snapshot at %d holds state applied to %d", meta.Index, sm.applied)
	}
	sm.installs++
	var r Restored
	for id, urls := range sm.members {
		r.Peers = append(r.Peers, Peer{ID: id, PeerURLs: urls})
	}
	for id := range sm.removed {
		r.Removed = append(r.Removed, id)
	}
	return r, nil
}

func (sm *kvSM) installCount() int {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.installs
}

func (sm *kvSM) AppliedState() (uint64, raftpb.ConfState, error) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.applied, sm.cs, nil
}

func (sm *kvSM) Apply(ents []Entry) ([]any, error) {
	if sm.beforeApply != nil {
		sm.beforeApply(ents)
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	b := sm.db.NewBatch()
	defer b.Close()
	res := make([]any, len(ents))
	var added []string
	for i, e := range ents {
		if e.Index != sm.applied+1+uint64(i) {
			return nil, fmt.Errorf("kvSM: entry %d out of order (applied %d)", e.Index, sm.applied)
		}
		res[i] = e.Index
		if e.Data == nil {
			continue
		}
		if err := b.Set(smKey('d', e.Index), e.Data, nil); err != nil {
			return nil, err
		}
		added = append(added, string(e.Data))
	}
	last := ents[len(ents)-1].Index
	if err := b.Set(smKey('a', 0), binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return nil, err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, err
	}
	sm.applied = last
	sm.data = append(sm.data, added...)
	return res, nil
}

var errRejected = errors.New("kvSM: conf change rejected")

func (sm *kvSM) ApplyConfChange(cc ConfChange, confirm func() raftpb.ConfState) (any, error) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	b := sm.db.NewBatch()
	defer b.Close()
	var res any = cc.Index
	_, exists := sm.members[cc.NodeID]
	reject := func(why string) { res = fmt.Errorf("%w: %s", errRejected, why) }
	switch {
	case sm.removed[cc.NodeID]:
		reject("ID removed")
	case (cc.Type == AddMember || cc.Type == AddLearner) && exists:
		reject("ID exists")
	case (cc.Type == RemoveMember || cc.Type == UpdateMember || cc.Type == PromoteMember) && !exists:
		reject("ID not found")
	}
	if res == cc.Index {
		cs := confirm()
		raw, _ := cs.Marshal()
		b.Set(smKey('c', 0), raw, nil)
		sm.cs = cs
		switch cc.Type {
		case AddMember, AddLearner, UpdateMember:
			raw, _ := json.Marshal(cc.PeerURLs)
			b.Set(smKey('m', cc.NodeID), raw, nil)
			sm.members[cc.NodeID] = cc.PeerURLs
		case RemoveMember:
			b.Delete(smKey('m', cc.NodeID), nil)
			b.Set(smKey('x', cc.NodeID), nil, nil)
			delete(sm.members, cc.NodeID)
			sm.removed[cc.NodeID] = true
		}
	}
	b.Set(smKey('a', 0), binary.BigEndian.AppendUint64(nil, cc.Index), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, err
	}
	sm.applied = cc.Index
	return res, nil
}

func (sm *kvSM) snapshotData() []string {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return slices.Clone(sm.data)
}

func (sm *kvSM) removedIDs() []uint64 {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	var ids []uint64
	for id := range sm.removed {
		ids = append(ids, id)
	}
	return ids
}

func (sm *kvSM) peers() []Peer {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	var ps []Peer
	for id, urls := range sm.members {
		ps = append(ps, Peer{ID: id, PeerURLs: urls})
	}
	return ps
}

// gate is a fault-injecting network for one member: its listener stays
// open for the whole test (restarts reuse the address) and, when down,
// refuses and cuts every connection in and out, a full partition.
type gate struct {
	scheme string // "http" unless set
	ln     net.Listener
	connc  chan net.Conn
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	down    bool
	serving int // open listeners: a member's server is running
	conns   map[net.Conn]struct{}
}

func newGate(t testing.TB) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, connc: make(chan net.Conn), done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	g.wg.Add(1)
	go g.acceptLoop()
	t.Cleanup(g.close)
	return g
}

func (g *gate) url() string {
	if g.scheme == "" {
		return "http://" + g.ln.Addr().String()
	}
	return g.scheme + "://" + g.ln.Addr().String()
}

func (g *gate) acceptLoop() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		c = g.track(c)
		if c == nil {
			continue
		}
		// Handed to the member's server; while none serves (the member
		// is stopped) the connection is refused, as a stopped process's
		// port would refuse it, rather than held for the next start.
	handOff:
		for {
			select {
			case g.connc <- c:
				break handOff
			case <-g.done:
				c.Close()
				return
			case <-time.After(10 * time.Millisecond):
				g.mu.Lock()
				serving := g.serving
				g.mu.Unlock()
				if serving == 0 {
					c.Close()
					break handOff
				}
			}
		}
	}
}

// track registers c, or closes it and returns nil while down.
func (g *gate) track(c net.Conn) net.Conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		c.Close()
		return nil
	}
	tc := &trackedConn{Conn: c, g: g}
	g.conns[tc] = struct{}{}
	return tc
}

func (g *gate) dial(ctx context.Context, addr string) (net.Conn, error) {
	g.mu.Lock()
	down := g.down
	g.mu.Unlock()
	if down {
		return nil, errors.New("gate: partitioned")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if c = g.track(c); c == nil {
		return nil, errors.New("gate: partitioned")
	}
	return c, nil
}

func (g *gate) setDown(down bool) {
	g.mu.Lock()
	g.down = down
	var cut []net.Conn
	if down {
		for c := range g.conns {
			cut = append(cut, c)
		}
	}
	g.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

func (g *gate) close() {
	close(g.done)
	g.ln.Close()
	g.wg.Wait()
	g.setDown(true)
}

// listener returns a net.Listener over the gate for one server's life.
func (g *gate) listener() net.Listener {
	g.mu.Lock()
	g.serving++
	g.mu.Unlock()
	return &gateListener{g: g, closed: make(chan struct{})}
}

type gateListener struct {
	g      *gate
	once   sync.Once
	closed chan struct{}
}

func (l *gateListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.g.connc:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *gateListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.g.mu.Lock()
		l.g.serving--
		l.g.mu.Unlock()
	})
	return nil
}

func (l *gateListener) Addr() net.Addr { return l.g.ln.Addr() }

type trackedConn struct {
	net.Conn
	g *gate
}

func (c *trackedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// member is one node of a test cluster with everything it runs.
type member struct {
	t         testing.TB
	saved     atomic.Int64 // snapshots received and saved (OnSaved)
	id        uint64
	clusterID uint64
	dir       string
	gate      *gate
	tls       *peerTLS

	db    *pebble.DB
	log   *LogStore
	snaps *SnapshotStore
	sm    *kvSM
	// snapshotCount is the node's SnapshotCount (0: no truncation).
	snapshotCount uint64
	tr            *PeerTransport
	srv           *h2grpc.Server
	node          *Node
	// wrap lets a test wrap the log and transport the node sees.
	wrap func(m *member, cfg *Config)
}

type cluster struct {
	t         testing.TB
	clusterID uint64
	members   []*member
}

// peerTLS is a member's TLS, server and client side (nil: plain http).
type peerTLS struct{ server, client *tls.Config }

const testToken = "raftnode-test"

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("RAFTNODE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newCluster creates n members of a new cluster (not started).
func newCluster(t testing.TB, n int) *cluster { return newClusterTLS(t, n, nil) }

func newClusterTLS(t testing.TB, n int, pt *peerTLS) *cluster {
	c := &cluster{t: t}
	var ids []uint64
	for range n {
		g := newGate(t)
		if pt != nil {
			g.scheme = "https"
		}
		id, err := MemberID([]string{g.url()}, testToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.members = append(c.members, &member{t: t, id: id, dir: t.TempDir(), gate: g, tls: pt})
		ids = append(ids, id)
	}
	c.clusterID = ClusterID(ids)
	return c
}

func (c *cluster) initialPeers() []Peer {
	var ps []Peer
	for _, m := range c.members {
		ps = append(ps, Peer{ID: m.id, PeerURLs: []string{m.gate.url()}})
	}
	return ps
}

func (c *cluster) startAll() {
	peers := c.initialPeers()
	for _, m := range c.members {
		m.start(c.clusterID, peers, true)
	}
	c.t.Cleanup(c.stopAll)
}

func (c *cluster) stopAll() {
	for _, m := range c.members {
		m.stop()
	}
}

func testConfig() Config {
	return Config{
		TickInterval:     20 * time.Millisecond,
		ElectionTicks:    10,
		HeartbeatTicks:   1,
		ReadIndexRetry:   100 * time.Millisecond,
		ReadIndexTimeout: 3 * time.Second,
	}
}

func (m *member) start(clusterID uint64, peers []Peer, newCluster bool) {
	t := m.t
	if clusterID != 0 {
		m.clusterID = clusterID
	}
	var err error
	if m.db, err = pebble.Open(m.dir, &pebble.Options{Logger: quietPebble{}}); err != nil {
		t.Fatal(err)
	}
	if m.log, err = OpenLogStore(m.db, LogStoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if m.sm, err = openKVSM(m.db); err != nil {
		t.Fatal(err)
	}
	if m.snaps, err = NewSnapshotStore(m.log, SnapshotStoreOptions{
		Dir: filepath.Join(m.dir, "snap.tmp"), LocalKeys: [][]byte{smKey('l', 0)},
		OnSaved: func(d time.Duration) {
			if d > 0 {
				m.saved.Add(1)
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	if sp := m.sm.peers(); len(sp) > 0 {
		peers = sp // a restart: the stored membership
	}
	var clientTLS, serverTLS *tls.Config
	if m.tls != nil {
		clientTLS, serverTLS = m.tls.client, m.tls.server
	}
	m.tr = NewTransport(TransportConfig{ID: m.id, ClusterID: m.clusterID, TLS: clientTLS, Dialer: m.gate.dial, Logger: testLogger(t)})
	cfg := testConfig()
	cfg.ID, cfg.Log, cfg.StateMachine, cfg.Transport = m.id, m.log, m.sm, m.tr
	cfg.Peers, cfg.NewCluster, cfg.Logger = peers, newCluster, testLogger(t)
	cfg.Removed = m.sm.removedIDs()
	cfg.Snapshots, cfg.SnapshotCount = m.snaps, m.snapshotCount
	if m.snapshotCount > 0 {
		cfg.SnapshotCatchUpEntries = m.snapshotCount / 2
	}
	if m.wrap != nil {
		m.wrap(m, &cfg)
	}
	if m.node, err = Start(cfg); err != nil {
		t.Fatal(err)
	}
	m.tr.SetRaft(m.node)
	m.srv = newPeerServer(m.tr, serverTLS)
	go m.srv.Serve(m.gate.listener())
}

// stop shuts the member down in the server's order: no more incoming
// messages, the node drained, the transport, then the database.
func (m *member) stop() {
	if m.node == nil {
		return
	}
	m.srv.Stop()
	if err := m.node.Stop(); err != nil {
		m.t.Errorf("member %s stopped with %v", FormatID(m.id), err)
	}
	m.tr.Close()
	if err := m.db.Close(); err != nil {
		m.t.Errorf("close db: %v", err)
	}
	m.node = nil
}

func (m *member) restart() {
	m.start(0, nil, false)
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leader waits until the running members agree on one leader among them.
func (c *cluster) leader(t testing.TB) *member {
	t.Helper()
	var lead *member
	waitFor(t, 10*time.Second, "a leader", func() bool {
		lead = nil
		var id uint64
		for _, m := range c.members {
			if m.node == nil {
				continue
			}
			l := m.node.Leader()
			if l == 0 || (id != 0 && l != id) {
				return false
			}
			id = l
		}
		for _, m := range c.members {
			if m.id == id && m.node != nil {
				lead = m
			}
		}
		return lead != nil
	})
	return lead
}

func propose(t testing.TB, m *member, data string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := m.node.Propose(ctx, []byte(data))
	if err != nil {
		t.Fatalf("propose %q on %s: %v", data, FormatID(m.id), err)
	}
	return res.(uint64)
}

// follower returns a member other than lead.
func (c *cluster) follower(lead *member) *member {
	for _, m := range c.members {
		if m != lead {
			return m
		}
	}
	panic("a one-member cluster has no follower")
}

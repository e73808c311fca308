package raftnode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// fakeRaft records what a transport delivers and reports.
type fakeRaft struct {
	mu             sync.Mutex
	steps          []raftpb.Message
	unreachable    map[uint64]int
	snapshots      []raft.SnapshotStatus
	removedReports int
}

func newFakeRaft() *fakeRaft { return &fakeRaft{unreachable: map[uint64]int{}} }

func (f *fakeRaft) Step(m raftpb.Message) error {
	f.mu.Lock()
	f.steps = append(f.steps, m)
	f.mu.Unlock()
	return nil
}

func (f *fakeRaft) ReportUnreachable(id uint64) {
	f.mu.Lock()
	f.unreachable[id]++
	f.mu.Unlock()
}

func (f *fakeRaft) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	f.mu.Lock()
	f.snapshots = append(f.snapshots, st)
	f.mu.Unlock()
}

func (f *fakeRaft) IsIDRemoved(id uint64) bool { return id == 0xdead }
func (f *fakeRaft) ReportRemoved() {
	f.mu.Lock()
	f.removedReports++
	f.mu.Unlock()
}

func (f *fakeRaft) stepsFrom(id uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.steps {
		if m.From == id {
			n++
		}
	}
	return n
}

func (f *fakeRaft) counts() (steps, unreachable int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.unreachable {
		unreachable += n
	}
	return len(f.steps), unreachable
}

// servePeer serves a transport on a loopback listener.
func servePeer(t testing.TB, tr *PeerTransport, tlsConf *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newPeerServer(tr, tlsConf)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String()
}

func TestTransportDeliversAndChecksIDs(t *testing.T) {
	const b = 0xb
	recv := newFakeRaft()
	tb := NewTransport(TransportConfig{ID: b, ClusterID: 7})
	tb.SetRaft(recv)
	defer tb.Close()
	url := servePeer(t, tb, nil)

	for i, tc := range []struct {
		name      string
		cluster   uint64
		peerID    uint64 // the ID the sender believes the receiver has
		delivered bool
		err       string
	}{
		{name: "same cluster", cluster: 7, peerID: b, delivered: true},
		{name: "other cluster", cluster: 8, peerID: b, err: msgClusterMismatch},
		{name: "wrong member", cluster: 7, peerID: 0xc, err: msgMemberMismatch},
		{name: "removed sender", cluster: 7, peerID: b, err: msgMemberRemoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := uint64(0xa0 + i) // each case its own sender, to count its deliveries
			if tc.err == msgMemberRemoved {
				a = 0xdead
			}
			sent := newFakeRaft()
			ta := NewTransport(TransportConfig{ID: a, ClusterID: tc.cluster, RetryInterval: 10 * time.Millisecond})
			ta.SetRaft(sent)
			defer ta.Close()
			ta.AddPeer(tc.peerID, []string{url})
			msg := raftpb.Message{Type: raftpb.MsgHeartbeat, From: a, To: tc.peerID, Term: 3}
			if tc.delivered {
				waitFor(t, 5*time.Second, "delivery", func() bool {
					ta.Send([]raftpb.Message{msg})
					return recv.stepsFrom(a) > 0
				})
				recv.mu.Lock()
				got := recv.steps[len(recv.steps)-1]
				recv.mu.Unlock()
				if got.Type != msg.Type || got.From != a || got.Term != 3 {
					t.Fatalf("delivered %+v", got)
				}
				// The sender counts after SendMsg returns, maybe after
				// the receiver has the message.
				waitFor(t, 5*time.Second, "the peer metrics", func() bool {
					return ta.Metrics()[tc.peerID].SentBytes > 0 && tb.Metrics()[a].ReceivedBytes > 0
				})
				return
			}
			// The refusal comes back as the stream's status, before any
			// message reaches the receiver's raft.
			ta.mu.RLock()
			p := ta.peers[tc.peerID]
			ta.mu.RUnlock()
			_, err := p.open(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("open: %v, want %q", err, tc.err)
			}
			ta.Send([]raftpb.Message{msg})
			waitFor(t, 5*time.Second, "the peer reported unreachable", func() bool {
				_, u := sent.counts()
				return u > 0
			})
			if recv.stepsFrom(a) != 0 {
				t.Fatal("a refused stream delivered a message")
			}
			sent.mu.Lock()
			removed := sent.removedReports
			sent.mu.Unlock()
			if (removed > 0) != (tc.err == msgMemberRemoved) {
				t.Fatalf("%d removal reports", removed)
			}
		})
	}
}

// A peer that accepts TCP but never answers: the sender's stream cannot
// open, its queue fills, and Send drops without blocking, reporting the
// peer unreachable (rafthttp's behaviour).
func TestTransportFullQueueDropsAndReports(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	fr := newFakeRaft()
	tr := NewTransport(TransportConfig{ID: 1, ClusterID: 1, QueueSize: 4})
	tr.SetRaft(fr)
	defer tr.Close()
	tr.AddPeer(2, []string{"http://" + ln.Addr().String()})
	// Park the sender in its handshake with the silent peer first, so the
	// queue is all that takes messages.
	tr.Send([]raftpb.Message{{Type: raftpb.MsgHeartbeat, From: 1, To: 2}})
	waitFor(t, 5*time.Second, "the sender to connect", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) > 0
	})
	msgs := make([]raftpb.Message, 100)
	for i := range msgs {
		msgs[i] = raftpb.Message{Type: raftpb.MsgApp, From: 1, To: 2, Index: uint64(i)}
	}
	start := time.Now()
	tr.Send(msgs)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Send blocked for %v", d)
	}
	if _, u := fr.counts(); u < 96 {
		t.Fatalf("%d drops reported unreachable, want ≥ 96 of 100 with a queue of 4", u)
	}
	if f := tr.Metrics()[2].SentFailures; f < 96 {
		t.Fatalf("%d send failures counted, want ≥ 96", f)
	}
	// A snapshot has no sender yet (issue 16): reported failed at once.
	tr.Send([]raftpb.Message{{Type: raftpb.MsgSnap, From: 1, To: 2}})
	fr.mu.Lock()
	snaps := fr.snapshots
	fr.mu.Unlock()
	if len(snaps) != 1 || snaps[0] != raft.SnapshotFailure {
		t.Fatalf("snapshot reports %v", snaps)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	msgs := []raftpb.Message{
		{Type: raftpb.MsgApp, From: 1, To: 2, Term: 5, Index: 9, Entries: []raftpb.Entry{{Index: 10, Term: 5, Data: []byte("x")}}},
		{Type: raftpb.MsgHeartbeat, From: 1, To: 2, Commit: 9},
	}
	b := appendFrame(nil, msgs)
	var got []raftpb.Message
	if err := decodeFrame(b, func(m raftpb.Message) error { got = append(got, m); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Entries[0].Term != 5 || string(got[0].Entries[0].Data) != "x" || got[1].Commit != 9 {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range [][]byte{{0x05, 1, 2}, {0xff}, b[:len(b)-1]} {
		if err := decodeFrame(bad, func(raftpb.Message) error { return nil }); err == nil {
			t.Errorf("frame %x accepted", bad)
		}
	}
}

// A three-member cluster over mutual TLS (etcd's --peer-client-cert-auth).
func TestClusterOverTLS(t *testing.T) {
	pt := testPeerTLS(t)
	c := newClusterTLS(t, 3, pt)
	c.startAll()
	lead := c.leader(t)
	for i := range 10 {
		propose(t, lead, fmt.Sprint("tls-", i))
	}
	c.waitConverged(t, 10)

	// A peer without a client certificate is refused.
	tr := NewTransport(TransportConfig{ID: 0x99, ClusterID: c.clusterID, TLS: &tls.Config{RootCAs: pt.client.RootCAs}})
	defer tr.Close()
	tr.SetRaft(newFakeRaft())
	tr.AddPeer(lead.id, []string{lead.gate.url()})
	tr.mu.RLock()
	p := tr.peers[lead.id]
	tr.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.open(ctx); err == nil {
		t.Fatal("a peer without a client certificate opened a stream")
	}
}

func testPeerTLS(t *testing.T) *peerTLS {
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raftnode test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey := key()
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "member"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	return &peerTLS{
		server: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
		client: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}
}

// TestTransportReopensStreamEndedWhileIdle: a stream that ended while it
// had nothing to send (its connection cut and healed, the peer restarted)
// does not cost the next message: it goes on a new stream at once,
// without an unreachable report or the retry pause.
func TestTransportReopensStreamEndedWhileIdle(t *testing.T) {
	const a, b = 0xa, 0xb
	recv := newFakeRaft()
	tb := NewTransport(TransportConfig{ID: b, ClusterID: 7})
	tb.SetRaft(recv)
	defer tb.Close()
	url := servePeer(t, tb, nil)

	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	sent := newFakeRaft()
	ta := NewTransport(TransportConfig{ID: a, ClusterID: 7, Dialer: dial, RetryInterval: time.Hour})
	ta.SetRaft(sent)
	defer ta.Close()
	ta.AddPeer(b, []string{url})

	msg := raftpb.Message{Type: raftpb.MsgHeartbeat, From: a, To: b, Term: 3}
	ta.Send([]raftpb.Message{msg})
	waitFor(t, 5*time.Second, "the first delivery", func() bool { return recv.stepsFrom(a) == 1 })

	// The connection ends while the stream is idle.
	mu.Lock()
	conns[0].Close()
	mu.Unlock()
	time.Sleep(100 * time.Millisecond) // the stream's reader sees it

	ta.Send([]raftpb.Message{msg})
	waitFor(t, 5*time.Second, "the message after the idle stream ended", func() bool { return recv.stepsFrom(a) == 2 })
	if _, unreachable := sent.counts(); unreachable != 0 {
		t.Fatalf("%d unreachable reports; the message should have gone on a new stream", unreachable)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 2 {
		t.Fatalf("%d connections dialled, want 2", len(conns))
	}
}

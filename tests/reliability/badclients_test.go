package reliability

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"

	"github.com/metastore-dev/metastore/tests/framework"
)

// rawCodec sends []byte messages as they are, so a test can put arbitrary
// bytes where a protobuf belongs.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" } // what the server expects on the wire

var _ encoding.Codec = rawCodec{}

// rssKiB reads a process' resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/status: %v", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// servedWithin requires a well-behaved client's put and get to complete
// within d while bad clients are at work.
func servedWithin(t *testing.T, kv pb.KVClient, d time.Duration, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	key := []byte("good/" + what)
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte("v")}); err != nil {
		t.Fatalf("%s: a well-behaved put was not served within %v: %v", what, d, err)
	}
	if r, err := kv.Range(ctx, &pb.RangeRequest{Key: key}); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("%s: a well-behaved get was not served within %v: %v", what, d, err)
	}
}

// TestBadClients points hostile clients at the metastore binary: random
// bytes instead of protobufs on every KV method, random and truncated
// HTTP/2 frames, half-open connections that never finish (or never start)
// the handshake, and clients that never read the responses they asked for.
// Throughout, the server must stay up, serve a well-behaved client
// promptly and keep its memory bounded.
func TestBadClients(t *testing.T) {
	t.Parallel()
	p := framework.StartMetastoreProcess(t, t.TempDir())
	if framework.OnlyEtcd() {
		t.Skip("metastore only")
	}
	good := pb.NewKVClient(framework.NewClient(t, p.Endpoint).ActiveConnection())
	servedWithin(t, good, 10*time.Second, "start")
	rss0 := rssKiB(t, p.Pid())
	rnd := rand.New(rand.NewPCG(9, 9))
	logRSS := func(phase string) { t.Logf("after %s: server RSS %d MiB", phase, rssKiB(t, p.Pid())>>10) }

	t.Run("garbage protobufs", func(t *testing.T) {
		conn, err := grpc.NewClient(p.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		methods := []string{"/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange",
			"/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Compact", "/etcdserverpb.Maintenance/Status",
			"/etcdserverpb.Maintenance/Alarm", "/etcdserverpb.Cluster/MemberList"}
		// Valid messages with random mutations reach deeper than pure noise.
		seedTxn, _ := (&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("bad/k"), Value: []byte("v")}}}}}).Marshal()
		errs := 0
		for i := 0; i < 3000; i++ {
			var msg []byte
			if i%2 == 0 {
				msg = make([]byte, rnd.IntN(64))
				for j := range msg {
					msg[j] = byte(rnd.Uint32())
				}
			} else {
				msg = bytes.Clone(seedTxn)
				for n := rnd.IntN(4) + 1; n > 0; n-- {
					msg[rnd.IntN(len(msg))] = byte(rnd.Uint32())
				}
			}
			var out []byte
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := conn.Invoke(ctx, methods[rnd.IntN(len(methods))], &msg, &out); err != nil {
				errs++
			}
			cancel()
		}
		t.Logf("3000 garbage calls, %d refused", errs)
		servedWithin(t, good, 5*time.Second, "after-garbage")
		logRSS("garbage protobufs")
	})

	t.Run("garbage frames", func(t *testing.T) {
		preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		for i := 0; i < 200; i++ {
			c, err := net.Dial("tcp", p.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			var buf []byte
			switch i % 4 {
			case 0: // preface, then random frames
				buf = append(buf, preface...)
			case 1: // a valid SETTINGS frame header with a lying length
				buf = append(buf, preface...)
				buf = append(buf, 0xff, 0xff, 0xff, 0x04, 0, 0, 0, 0, 0)
			case 2: // HTTP/1 noise
				buf = append(buf, "GET /v3/kv/range HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{"...)
			}
			junk := make([]byte, rnd.IntN(4096))
			for j := range junk {
				junk[j] = byte(rnd.Uint32())
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			c.Write(append(buf, junk...))
			c.Close()
		}
		servedWithin(t, good, 5*time.Second, "after-frames")
		logRSS("garbage frames")
	})

	t.Run("half-open connections", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < 300; i++ {
			c, err := net.Dial("tcp", p.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 1 {
				c.Write([]byte("PRI * HTTP/2.0\r\n")) // half a preface, then silence
			}
			conns = append(conns, c)
		}
		servedWithin(t, good, 5*time.Second, "half-open")
		logRSS("half-open connections")
	})

	// Values of 512 KiB: every range below asks for nvals/2 MiB.
	nvals := 4
	if soak() {
		nvals = 16
	}
	respMiB := nvals / 2
	const conns, calls = 4, 4
	t.Run("clients that never read", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), 512<<10)
		for i := 0; i < nvals; i++ {
			if _, err := good.Put(context.Background(), &pb.PutRequest{Key: []byte(fmt.Sprintf("big/%02d", i)), Value: big}); err != nil {
				t.Fatal(err)
			}
		}
		var stalled []*stallConn
		var mu sync.Mutex
		var clientConns []*grpc.ClientConn
		for i := 0; i < conns; i++ {
			conn, err := grpc.NewClient(p.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
					if err != nil {
						return nil, err
					}
					s := &stallConn{Conn: c, budget: 64 << 10, release: make(chan struct{})}
					mu.Lock()
					stalled = append(stalled, s)
					mu.Unlock()
					return s, nil
				}))
			if err != nil {
				t.Fatal(err)
			}
			clientConns = append(clientConns, conn)
			kv := pb.NewKVClient(conn)
			for j := 0; j < calls; j++ {
				go kv.Range(context.Background(), &pb.RangeRequest{Key: []byte("big/"), RangeEnd: []byte("big0")})
			}
		}
		time.Sleep(2 * time.Second) // let the server build and start sending the responses
		servedWithin(t, good, 5*time.Second, "stalled-readers")
		rss := rssKiB(t, p.Pid())
		// NB: each unread response stays buffered in the server until its
		// stream ends, as on etcd; memory is bounded by the requests
		// outstanding, not by anything the server enforces yet.
		t.Logf("server RSS %d MiB with %d unread %d MiB responses (%d MiB at start)", rss>>10, conns*calls, respMiB, rss0>>10)
		mu.Lock()
		for _, s := range stalled {
			s.Close() // first: ClientConn.Close waits for its reader
		}
		mu.Unlock()
		for _, c := range clientConns {
			c.Close()
		}
	})

	servedWithin(t, good, 5*time.Second, "end")
	if !p.Running() {
		t.Fatal("server exited")
	}
	rss := rssKiB(t, p.Pid())
	// Bound: the unread responses (measured at ~2.5 times their size: the
	// KVs, their encoding and gRPC's copy) plus slack; the race detector
	// multiplies it.
	limit := rss0 + (conns*calls*4*respMiB+256)<<10
	if framework.RaceEnabled() {
		limit = rss0 + 4*(conns*calls*4*respMiB+256)<<10
	}
	t.Logf("server RSS: %d MiB at start, %d MiB after the bad clients (limit %d MiB)", rss0>>10, rss>>10, limit>>10)
	if rss > limit {
		t.Errorf("server RSS grew from %d MiB to %d MiB", rss0>>10, rss>>10)
	}
	if strings.Contains(p.Log(), "panic") || strings.Contains(p.Log(), "WARNING: DATA RACE") {
		t.Errorf("server log reports a panic or a race:\n%s", p.Log())
	}
}

// stallConn reads normally until budget bytes have been read, then never
// again (until release): the HTTP/2 handshake completes, then the peer's
// data piles up in TCP buffers and flow-control windows.
type stallConn struct {
	net.Conn
	mu      sync.Mutex
	budget  int
	release chan struct{}
	once    sync.Once
	resumed bool
}

func (s *stallConn) Close() error {
	s.once.Do(func() { close(s.release) })
	return s.Conn.Close()
}

// Resume makes the connection read normally again.
func (s *stallConn) Resume() {
	s.mu.Lock()
	s.resumed = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.release) })
}

func (s *stallConn) Read(b []byte) (int, error) {
	s.mu.Lock()
	left, resumed := s.budget, s.resumed
	s.mu.Unlock()
	if resumed {
		return s.Conn.Read(b)
	}
	if left <= 0 {
		<-s.release
		s.mu.Lock()
		resumed = s.resumed
		s.mu.Unlock()
		if resumed {
			return s.Conn.Read(b)
		}
		return 0, net.ErrClosed
	}
	if len(b) > left {
		b = b[:left]
	}
	n, err := s.Conn.Read(b)
	s.mu.Lock()
	s.budget -= n
	s.mu.Unlock()
	return n, err
}

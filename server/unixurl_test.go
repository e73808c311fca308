package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/metastore-dev/metastore/server/config"
)

// TestClusterUnixPeers: etcd's unix:// URLs (etcd's e2e TestClusterVersion
// runs its members on them): three members whose peer URLs are Unix
// sockets named host:port in the working directory, as etcd names them,
// elect a leader and replicate; a unix:// client URL serves the client
// API; a socket file left by a killed member does not stop a restart.
func TestClusterUnixPeers(t *testing.T) {
	t.Chdir(t.TempDir())
	var initial []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("m%d=unix://localhost:%d", i, 20001+i))
	}
	// A stale socket file, as a SIGKILLed member leaves it.
	if err := os.WriteFile("localhost:20001", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var ms []*clusterMember
	for i := range 3 {
		peer := fmt.Sprintf("unix://localhost:%d", 20001+i)
		args := []string{
			"--name", fmt.Sprintf("m%d", i), "--data-dir", t.TempDir(),
			"--listen-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "unix",
			"--heartbeat-interval", "20", "--election-timeout", "200",
		}
		if i == 0 {
			args[5] = "http://127.0.0.1:0,unix://localhost:20000"
		}
		cfg, _, err := config.Load(args, nil)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, startMember(t, cfg))
	}
	lead := waitLeader(t, ms)
	fs := others(ms, lead)
	put(t, fs[0], "unix", "yes")
	if got := get(t, fs[1], "unix", false); got != "yes" {
		t.Fatalf("read over Unix-socket peers: %q", got)
	}

	// The client API on the socket.
	conn, err := grpc.NewClient("passthrough:///localhost:20000", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, path string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pb.NewKVClient(conn).Range(ctx, &pb.RangeRequest{Key: []byte("unix")})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Fatalf("range over the unix:// client URL: %v %v", resp, err)
	}
}

package raftnode

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// serveGRPCPeer serves tr's peer service with grpc-go's server and the
// options members served it with before the lean transport: a member of
// an older build, for the wire compatibility of the sender.
func serveGRPCPeer(t testing.TB, tr *PeerTransport) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(frameCodec{}), grpc.MaxRecvMsgSize(maxPeerMsgBytes),
		grpc.KeepaliveEnforcementPolicy(PeerEnforcement),
		grpc.StaticStreamWindowSize(peerStreamWindow), grpc.StaticConnWindowSize(peerConnWindow))
	tr.Register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return "http://" + ln.Addr().String()
}

// The sender's stream against both servers: messages small and large
// (split over DATA frames, past the receiver's initial flow-control
// windows) arrive whole and in order; a refusal is the receiver's status.
func TestMsgStreamDeliversToBothServers(t *testing.T) {
	for _, kind := range []string{"lean", "grpc-go"} {
		t.Run(kind, func(t *testing.T) {
			recv := newFakeRaft()
			tb := NewTransport(TransportConfig{ID: 2, ClusterID: 5})
			tb.SetRaft(recv)
			defer tb.Close()
			url := servePeer(t, tb, nil)
			if kind == "grpc-go" {
				url = serveGRPCPeer(t, tb)
			}
			ta := NewTransport(TransportConfig{ID: 1, ClusterID: 5})
			ta.SetRaft(newFakeRaft())
			defer ta.Close()
			ta.AddPeer(2, []string{url})
			var want []raftpb.Message
			for i, size := range []int{0, 100, 20 << 10, 70 << 10, 3 << 20, 10} {
				data := bytes.Repeat([]byte{byte(i + 1)}, size)
				m := raftpb.Message{Type: raftpb.MsgApp, From: 1, To: 2, Term: 4, Index: uint64(i),
					Entries: []raftpb.Entry{{Term: 4, Index: uint64(i + 1), Data: data}}}
				want = append(want, m)
				ta.Send([]raftpb.Message{m})
			}
			waitFor(t, 20*time.Second, "delivery", func() bool { return recv.stepsFrom(1) >= len(want) })
			recv.mu.Lock()
			got := recv.steps
			recv.mu.Unlock()
			if len(got) != len(want) {
				t.Fatalf("%d messages delivered, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Index != want[i].Index || !bytes.Equal(got[i].Entries[0].Data, want[i].Entries[0].Data) {
					t.Fatalf("message %d: index %d, %d bytes; want index %d, %d bytes", i,
						got[i].Index, len(got[i].Entries[0].Data), want[i].Index, len(want[i].Entries[0].Data))
				}
			}
			if f := ta.Metrics()[2].SentFailures; f != 0 {
				t.Fatalf("%d send failures", f)
			}

			// Another cluster's member is refused with the receiver's
			// status (code and message), before any message.
			tc := NewTransport(TransportConfig{ID: 3, ClusterID: 6})
			defer tc.Close()
			tc.SetRaft(newFakeRaft())
			tc.AddPeer(2, []string{url})
			tc.mu.RLock()
			p := tc.peers[2]
			tc.mu.RUnlock()
			_, err := p.open(context.Background())
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), msgClusterMismatch) {
				t.Fatalf("open from another cluster: %v", err)
			}
		})
	}
}

// A receiver that stops reading: the sender blocked on flow control, or
// in its write once the socket's buffers are full (the receiver granted a
// large window), is freed by the keepalive, not stuck for good.
func TestMsgStreamKeepaliveFailsStalledPeer(t *testing.T) {
	defer func(t, w time.Duration) { msgKeepaliveTime, msgKeepaliveWait = t, w }(msgKeepaliveTime, msgKeepaliveWait)
	msgKeepaliveTime, msgKeepaliveWait = 200*time.Millisecond, 100*time.Millisecond
	for _, grant := range []bool{false, true} {
		t.Run(map[bool]string{false: "flow-control", true: "socket"}[grant], func(t *testing.T) {
			stalledPeer(t, grant)
		})
	}
}

func stalledPeer(t *testing.T, grant bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	defer close(stop)
	// A fake server: answers the call's headers, then reads nothing.
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		c.Read(buf) // the preface, settings and headers
		// SETTINGS (empty), then the response HEADERS (":status: 200",
		// HPACK static index 8) on stream 1.
		c.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
		c.Write([]byte{0, 0, 1, 1, 4, 0, 0, 0, 1, 0x88})
		if grant {
			// WINDOW_UPDATEs of 1 GiB for the connection and the stream.
			c.Write([]byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 4, 8, 0, 0, 0, 0, 1, 0x40, 0, 0, 0})
		}
		<-stop
	}()
	cfg := &TransportConfig{ID: 1, ClusterID: 1}
	s, err := openMsgStream(context.Background(), "http://"+ln.Addr().String(), cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	big := []raftpb.Message{{Type: raftpb.MsgApp, From: 1, To: 2, Entries: []raftpb.Entry{{Data: make([]byte, 1<<20)}}}}
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := s.send(big, big[0].Size()); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("send failed with %v, want Unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sender stayed blocked on a peer that stopped reading")
	}
}

// A receiver that answers pings but grants no window (its handler stuck,
// its connection alive): the keepalive cannot free the sender, waiting for
// flow control, and RemovePeer on the apply goroutine waited for that
// sender (issue 15's audit). The end of the stream's context now fails it.
func TestMsgStreamEndsWithContextWhileWindowClosed(t *testing.T) {
	defer func(t, w time.Duration) { msgKeepaliveTime, msgKeepaliveWait = t, w }(msgKeepaliveTime, msgKeepaliveWait)
	msgKeepaliveTime, msgKeepaliveWait = 100*time.Millisecond, 100*time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan struct{})
	// A fake server: answers the call's headers and every ping, reads
	// everything, returns no window.
	go func() {
		defer close(srvDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: true})
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.PingFrame:
				if !f.IsAck() {
					fr.WritePing(true, f.Data)
				}
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := openMsgStream(ctx, "http://"+ln.Addr().String(), &TransportConfig{ID: 1, ClusterID: 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	big := []raftpb.Message{{Type: raftpb.MsgApp, From: 1, To: 2, Entries: []raftpb.Entry{{Data: make([]byte, 1<<20)}}}}
	errc := make(chan error, 1)
	go func() {
		_, err := s.send(big, big[0].Size())
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("a 1 MiB message went through a 64 KiB window: %v", err)
	case <-time.After(time.Second): // ten keepalive rounds, all answered
	}
	cancel()
	select {
	case err := <-errc:
		if status.Code(err) != codes.Canceled {
			t.Fatalf("send ended with %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the sender stayed blocked after its context ended")
	}
	s.close()
	<-srvDone
}

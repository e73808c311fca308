package raftnode

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A snapshot travels on a client stream of its own (its own connection, so
// it never queues the peer's raft messages behind it): frames of one kind
// byte then
//
//	'M' the MsgSnap (raftpb.Message, its metadata that of the data)
//	'D' records: uvarint(len) key uvarint(len) value, in key order
//	'E' sha256 of every 'D' frame's records (32) then their length (8)
//
// gRPC's flow control holds the sender back to the receiver's pace; the
// receiver stages the records into sstables, checks the end frame and
// answers with an empty message once raft has the snapshot.
const (
	snapFrameMsg  = 'M'
	snapFrameData = 'D'
	snapFrameEnd  = 'E'
)

var snapStreamDesc = grpc.StreamDesc{StreamName: "Snapshot", ClientStreams: true}

// streamSnapshot sends m's snapshot to p and returns the data's size.
func (p *peer) streamSnapshot(sp snapshotPeer, m raftpb.Message) (n int64, err error) {
	ctx, cancel := context.WithCancel(p.t.ctx)
	defer cancel()
	go func() {
		select {
		case <-p.stopc: // the peer was removed
			cancel()
		case <-ctx.Done():
		}
	}()
	v, m, err := sp.openSnapshot(m)
	if err != nil {
		return 0, err
	}
	defer func() { v.finish(err == nil) }()
	s, err := p.openStream(ctx, &snapStreamDesc, peerSnapshotMethod)
	if err != nil {
		return 0, err
	}
	defer s.close()
	hdr := make([]byte, 1+m.Size())
	hdr[0] = snapFrameMsg
	if _, err := m.MarshalTo(hdr[1:]); err != nil {
		return 0, err
	}
	if err := s.stream.SendMsg(&hdr); err != nil {
		return 0, s.finish(err)
	}
	sum := sha256.New()
	err = v.writeTo(func(frame []byte) error {
		sum.Write(frame[1:])
		n += int64(len(frame) - 1)
		if f := p.t.cfg.snapshotFrameHook; f != nil {
			f(frame)
		}
		if err := s.stream.SendMsg(&frame); err != nil {
			return s.finish(err)
		}
		p.sentBytes.Add(uint64(len(frame)))
		return nil
	})
	if err != nil {
		return n, err
	}
	end := append([]byte{snapFrameEnd}, sum.Sum(nil)...)
	end = binary.BigEndian.AppendUint64(end, uint64(n))
	if err := s.stream.SendMsg(&end); err != nil {
		return n, s.finish(err)
	}
	if err := s.stream.CloseSend(); err != nil {
		return n, err
	}
	var resp []byte
	if err := s.stream.RecvMsg(&resp); err != nil {
		return n, err
	}
	return n, nil
}

// serveSnapshot receives one snapshot: staged and verified before raft
// sees its message.
func (t *PeerTransport) serveSnapshot(ss grpc.ServerStream) (err error) {
	from, r, err := t.acceptStream(ss)
	if err != nil {
		return err
	}
	sp, ok := r.(snapshotPeer)
	if !ok {
		return status.Error(codes.Unimplemented, "raftnode: this member does not take snapshots")
	}
	start := time.Now()
	t.snapsIn.Add(1)
	defer func() {
		t.snapsIn.Add(-1)
		t.countSnapshot(from, false, err == nil, time.Since(start))
		if err != nil {
			t.lg.Warn("receiving snapshot failed", "peer", FormatID(from), "err", err)
		}
	}()
	var frame []byte
	if err := ss.RecvMsg(&frame); err != nil {
		return err
	}
	var m raftpb.Message
	if len(frame) == 0 || frame[0] != snapFrameMsg {
		return status.Error(codes.InvalidArgument, "raftnode: snapshot stream does not start with its message")
	}
	if err := m.Unmarshal(frame[1:]); err != nil {
		return status.Errorf(codes.InvalidArgument, "raftnode: malformed snapshot message: %v", err)
	}
	if m.Type != raftpb.MsgSnap || m.From != from || m.To != t.cfg.ID || m.Snapshot == nil {
		return status.Errorf(codes.InvalidArgument, "raftnode: not a snapshot from %s to %s", FormatID(from), FormatID(t.cfg.ID))
	}
	st, err := sp.stageSnapshot(m)
	if errors.Is(err, ErrSnapshotBusy) {
		return status.Error(codes.Unavailable, err.Error())
	}
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	for {
		if err := ss.RecvMsg(&frame); err != nil {
			st.abort()
			if errors.Is(err, io.EOF) {
				return status.Error(codes.InvalidArgument, "raftnode: snapshot stream ended before its end frame")
			}
			return err
		}
		if len(frame) == 0 {
			st.abort()
			return status.Error(codes.InvalidArgument, "raftnode: empty snapshot frame")
		}
		t.recvMu.Lock()
		t.received[from] += uint64(len(frame))
		t.recvMu.Unlock()
		switch frame[0] {
		case snapFrameData:
			if err := st.write(frame[1:]); err != nil {
				st.abort()
				return status.Error(codes.InvalidArgument, err.Error())
			}
			continue
		case snapFrameEnd:
		default:
			st.abort()
			return status.Errorf(codes.InvalidArgument, "raftnode: unknown snapshot frame %q", frame[0])
		}
		if len(frame) != 1+sha256.Size+8 {
			st.abort()
			return status.Error(codes.InvalidArgument, "raftnode: malformed snapshot end frame")
		}
		ref, err := st.finish(frame[1:1+sha256.Size], int64(binary.BigEndian.Uint64(frame[1+sha256.Size:])))
		if errors.Is(err, ErrSnapshotChecksum) {
			return status.Error(codes.DataLoss, err.Error())
		}
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		m.Snapshot.Data = ref
		if err := r.Step(m); err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		t.lg.Info("received snapshot", "peer", FormatID(from), "index", m.Snapshot.Metadata.Index, "took", time.Since(start))
		resp := []byte{}
		return ss.SendMsg(&resp)
	}
}

// snapshotCounters are one peer's snapshot counters (etcd's
// etcd_network_snapshot_send_* and _receive_*).
type snapshotCounters struct {
	sendOK, sendFailed, recvOK, recvFailed uint64
	sendTime, recvTime                     time.Duration
}

func (t *PeerTransport) countSnapshot(id uint64, send, ok bool, d time.Duration) {
	t.recvMu.Lock()
	defer t.recvMu.Unlock()
	c := t.snaps[id]
	if c == nil {
		c = &snapshotCounters{}
		t.snaps[id] = c
	}
	switch {
	case send && ok:
		c.sendOK++
		c.sendTime += d
	case send:
		c.sendFailed++
	case ok:
		c.recvOK++
		c.recvTime += d
	default:
		c.recvFailed++
	}
}

// SnapshotMetrics are one peer's snapshot counters, pulled by the server's
// collector under etcd's names: etcd_network_snapshot_send_success,
// _send_failures, _send_total_duration_seconds (successful sends), and the
// same for _receive_.
type SnapshotMetrics struct {
	SendSuccess, SendFailures       uint64
	ReceiveSuccess, ReceiveFailures uint64
	SendTime, ReceiveTime           time.Duration
}

// SnapshotMetrics returns the snapshot counters by peer, and how many
// snapshots are being sent and received now
// (etcd_network_snapshot_send_inflights_total, _receive_inflights_total).
func (t *PeerTransport) SnapshotMetrics() (byPeer map[uint64]SnapshotMetrics, sending, receiving int64) {
	t.recvMu.Lock()
	defer t.recvMu.Unlock()
	byPeer = make(map[uint64]SnapshotMetrics, len(t.snaps))
	for id, c := range t.snaps {
		byPeer[id] = SnapshotMetrics{
			SendSuccess: c.sendOK, SendFailures: c.sendFailed, SendTime: c.sendTime,
			ReceiveSuccess: c.recvOK, ReceiveFailures: c.recvFailed, ReceiveTime: c.recvTime,
		}
	}
	return byPeer, t.snapsOut.Load(), t.snapsIn.Load()
}

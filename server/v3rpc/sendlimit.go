package v3rpc

import (
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/metastore-dev/metastore/server/config"
)

// maxSendMsgSize is the gRPC send limit: limits.max_send_msg_size, or
// gRPC's largest message (etcd's setting) when it is 0.
func maxSendMsgSize(l config.Limits) int {
	if l.MaxSendMsgSize > 0 {
		return l.MaxSendMsgSize
	}
	return math.MaxInt32
}

// errResponseTooLarge is a unary response over max_send_msg_size: the
// request fails, the connection and other requests are unaffected.
func errResponseTooLarge(size, limit int) error {
	return status.Errorf(codes.ResourceExhausted,
		"etcdserver: response of %d bytes exceeds the server's max_send_msg_size of %d bytes (ask for less, e.g. with a limit, or use RangeStream)", size, limit)
}

// checkSendSize fails a unary response that gRPC would refuse to send,
// with an error that says which limit and how to stay under it (gRPC's
// own reads "trying to send message larger than max").
func (s *Server) checkSendSize(method string, resp any, err error) error {
	limit := s.cfg.Limits.MaxSendMsgSize
	if err != nil || limit <= 0 {
		return err
	}
	if r, ok := resp.(sizer); ok {
		if n := r.Size(); n > limit {
			s.lg.Warn("response refused: larger than max_send_msg_size", "method", method, "response-size", n, "max-send-msg-size", limit)
			return errResponseTooLarge(n, limit)
		}
	}
	return nil
}

// watchFragmentBytes is the size above which a watch response created with
// fragment is split: etcd's max request bytes plus gRPC overhead, or just
// under the send limit when that is smaller.
func watchFragmentBytes(l config.Limits) int {
	n := l.MaxRequestBytes + grpcOverheadBytes
	if l.MaxSendMsgSize > 0 {
		n = min(n, l.MaxSendMsgSize)
	}
	return n
}

// WatchResponseBytes is what a watch response without fragment may hold
// past its first revision: mvcc's default (about 1 MiB), or a quarter of
// the send limit when that is less, so that responses of several
// revisions stay under it (mvcc's estimate of an event's size leaves out
// some of its encoding, and a response may pass the bound by one
// revision). A revision near the limit can still exceed it.
func WatchResponseBytes(l config.Limits) int {
	if l.MaxSendMsgSize > 0 {
		return max(min(1<<20, l.MaxSendMsgSize/4), 1)
	}
	return 0 // mvcc's default
}

// watchSendError is the error a watch stream ends with when a send
// failed: a response over the send limit ends it with ResourceExhausted;
// any other failure means the client is gone (nil: the handler ends with
// the stream's context).
func watchSendError(err error) error {
	if status.Code(err) != codes.ResourceExhausted {
		return nil
	}
	return err
}

// limitWatchSend checks each watch response against the send limit before
// gRPC does, so that the stream ends with an error that names the setting
// and the way around it (gRPC's reads "trying to send message larger than
// max"). Every watcher of the stream gets it, as clientv3 reports any
// stream error to all of them.
func (s *Server) limitWatchSend(st pb.Watch_WatchServer) pb.Watch_WatchServer {
	if s.cfg.Limits.MaxSendMsgSize <= 0 {
		return st
	}
	return &sizeCheckedWatchStream{Watch_WatchServer: st, limit: s.cfg.Limits.MaxSendMsgSize}
}

type sizeCheckedWatchStream struct {
	pb.Watch_WatchServer
	limit int
}

func (w *sizeCheckedWatchStream) SendMsg(m any) error {
	if r, ok := m.(sizer); ok {
		if n := r.Size(); n > w.limit {
			return status.Errorf(codes.ResourceExhausted,
				"etcdserver: watch response of %d bytes exceeds the server's max_send_msg_size of %d bytes; create the watch with fragment to have large responses split", n, w.limit)
		}
	}
	return w.Watch_WatchServer.SendMsg(m)
}

// rangePieceTarget is the size RangeStream aims each piece at (etcd's
// max request bytes), at most half the send limit so that the adaptive
// limit's band (up to twice the target) stays under it.
func rangePieceTarget(l config.Limits) int {
	if l.MaxSendMsgSize > 0 {
		return max(min(l.MaxRequestBytes, l.MaxSendMsgSize/2), 1)
	}
	return l.MaxRequestBytes
}

// sendRangePiece sends one RangeStream piece, split into several messages
// (the key-values in order; header, count and more on the last only) when
// it is over the send limit. A single key-value over it fails the stream
// with ResourceExhausted.
func (s *Server) sendRangePiece(out *pb.RangeResponse, send func(*pb.RangeResponse) error) error {
	limit := s.cfg.Limits.MaxSendMsgSize
	if limit <= 0 {
		return send(out)
	}
	// The piece travels inside RangeStreamResponse as field 1: a tag and
	// a length around it.
	const wrap = 1 + 5
	if out.Size()+wrap <= limit {
		return send(out)
	}
	kvs := out.Kvs
	for len(kvs) > 0 {
		size, n := wrap, 0
		for n < len(kvs) {
			l := kvs[n].Size()
			l += 1 + varintLen(uint64(l))
			if size+l > limit {
				break
			}
			size += l
			n++
		}
		if n == 0 {
			return errResponseTooLarge(kvs[0].Size()+wrap, limit)
		}
		if n == len(kvs) {
			break // the rest goes with the final message
		}
		if err := send(&pb.RangeResponse{Kvs: kvs[:n]}); err != nil {
			return err
		}
		kvs = kvs[n:]
	}
	last := *out
	last.Kvs = kvs
	if last.Size()+wrap > limit {
		// The header and count did not fit beside the last key-values.
		if err := send(&pb.RangeResponse{Kvs: kvs}); err != nil {
			return err
		}
		last.Kvs = nil
	}
	return send(&last)
}

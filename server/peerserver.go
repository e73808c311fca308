package server

import (
	"google.golang.org/grpc/credentials"

	"github.com/metastore-dev/metastore/server/raftnode"
	"github.com/metastore-dev/metastore/server/serve/h2grpc"
)

// newPeerServer serves the peer listeners with the lean transport: raft's
// message and snapshot streams (raftnode) and the member's own peer
// service (peer.go). Every raft message crosses it, so its CPU per frame
// is paid on every member for every write (RATIONALE.md, "The peer
// listener on the lean transport"). creds, if set, handshake every
// connection (the peer TLS).
func (s *Server) newPeerServer(creds credentials.TransportCredentials) *h2grpc.Server {
	srv := h2grpc.NewServer(h2grpc.Options{
		Codec:          raftnode.PeerCodec{},
		MaxRecvMsgSize: raftnode.MaxPeerMessageBytes,
		Enforcement:    raftnode.PeerEnforcement,
		Creds:          creds,
	})
	s.peerTransport.Register(srv)
	srv.RegisterService(&peerServiceDesc, s)
	return srv
}

package raftnode

import (
	"crypto/tls"

	"google.golang.org/grpc/credentials"

	"github.com/metastore-dev/metastore/server/serve/h2grpc"
)

// newPeerServer serves tr's peer service as a member does (the server's
// newPeerServer): on the lean transport, with the peer limits.
func newPeerServer(tr *PeerTransport, tlsConf *tls.Config) *h2grpc.Server {
	var creds credentials.TransportCredentials
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
	}
	s := h2grpc.NewServer(h2grpc.Options{
		Codec:          PeerCodec{},
		MaxRecvMsgSize: MaxPeerMessageBytes,
		Enforcement:    PeerEnforcement,
		Creds:          creds,
	})
	tr.Register(s)
	return s
}

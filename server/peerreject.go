package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
)

// rejectLoggingCreds are the peer server's TLS credentials with every
// failed handshake logged in etcd's words ("rejected connection on peer
// endpoint", a warning; a debug line for a peer that hung up). gRPC
// itself drops such a connection silently.
type rejectLoggingCreds struct {
	credentials.TransportCredentials
	lg *slog.Logger
}

var _ credentials.TransportCredentials = rejectLoggingCreds{}

// peerHandshakeTimeout bounds a peer connection's TLS handshake, as
// grpc-go's server bounded it (its ConnectionTimeout) before the peer
// listener moved to the lean transport: a client that connects and stays
// silent does not hold a goroutine for good.
const peerHandshakeTimeout = 120 * time.Second

// ServerHandshake implements credentials.TransportCredentials.
func (c rejectLoggingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn.SetDeadline(time.Now().Add(peerHandshakeTimeout))
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	conn.SetDeadline(time.Time{})
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, io.EOF) {
			level = slog.LevelDebug
		}
		c.lg.Log(context.Background(), level, "rejected connection on peer endpoint",
			"remote-addr", conn.RemoteAddr().String(), "error", err.Error())
	}
	return out, info, err
}

// Clone implements credentials.TransportCredentials.
func (c rejectLoggingCreds) Clone() credentials.TransportCredentials {
	return rejectLoggingCreds{c.TransportCredentials.Clone(), c.lg}
}

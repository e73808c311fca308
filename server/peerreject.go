package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"

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

// ServerHandshake implements credentials.TransportCredentials.
func (c rejectLoggingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
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

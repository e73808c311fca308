package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/metastore-dev/metastore/server/config"
)

// Server is one metastore member: storage, the apply loop and the gRPC API.
type Server struct {
	cfg *config.Config
	lg  *slog.Logger
}

// New opens the data directory and binds the client listeners, so that
// ClientAddrs is valid as soon as New returns. Run starts serving.
func New(cfg *config.Config, lg *slog.Logger) (*Server, error) {
	return nil, errors.New("server: under construction")
}

// ClientAddrs returns the bound client listener addresses (host:port).
func (s *Server) ClientAddrs() []string { return nil }

// Run serves until ctx is cancelled, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error { return nil }

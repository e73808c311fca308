package server

import (
	"fmt"
	"os"
	"time"

	"github.com/metastore-dev/metastore/auth"
	"github.com/metastore-dev/metastore/server/apply"
)

// openAuth loads the auth store and starts the token manager the config
// asks for.
func (s *Server) openAuth() error {
	as, err := auth.Open(apply.AuthReader(s.store), auth.Options{
		BcryptCost: s.cfg.Auth.BcryptCost,
		Logger:     s.lg.With("component", "auth"),
	})
	if err != nil {
		return err
	}
	topts := auth.TokenOptions{TTL: s.cfg.Auth.TokenTTL, Logger: s.lg.With("component", "auth-token")}
	kind, opts, err := s.cfg.Auth.TokenOptions()
	if err != nil {
		return err
	}
	if kind == "jwt" {
		if topts.JWT, err = jwtOptions(opts); err != nil {
			return fmt.Errorf("auth-token: %w", err)
		}
	}
	s.auth = as
	s.tokens = auth.NewTokens(as, topts)
	return nil
}

func jwtOptions(opts map[string]string) (*auth.JWTOptions, error) {
	var pub, priv []byte
	var err error
	if f := opts["pub-key"]; f != "" {
		if pub, err = os.ReadFile(f); err != nil {
			return nil, err
		}
	}
	if f := opts["priv-key"]; f != "" {
		if priv, err = os.ReadFile(f); err != nil {
			return nil, err
		}
	}
	var ttl time.Duration
	if v := opts["ttl"]; v != "" {
		if ttl, err = time.ParseDuration(v); err != nil {
			return nil, err
		}
	}
	return auth.NewJWTOptions(opts["sign-method"], pub, priv, ttl)
}

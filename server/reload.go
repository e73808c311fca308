package server

import (
	"sync/atomic"
	"time"

	"github.com/metastore-dev/metastore/server/config"
)

// liveSettings are the settings a reload changes while the server runs
// (config.Reloadable lists them); everything else in Server.cfg is fixed
// from start-up. The rate limits live in the guard and max_connections in
// the transport (serve), which applyLive drives.
type liveSettings struct {
	slow atomic.Int64 // monitoring.slow_request_threshold (read by v3rpc)
	// logging applies logging.level and logging.format (set by the
	// command, whose logger it is); nil: the log settings take a restart.
	logging func(config.Logging) error
	// running is the configuration in effect: the start-up one with the
	// reloadable settings as last applied. restart lists the settings of
	// the last reload that differ from it and take a restart. Both under
	// the policy reload lock.
	running *config.Config
	restart []string
}

func (l *liveSettings) init(cfg *config.Config) {
	c := *cfg
	l.running = &c
	l.slow.Store(int64(cfg.Monitoring.SlowRequestThreshold))
}

func (l *liveSettings) slowThreshold() time.Duration { return time.Duration(l.slow.Load()) }

// SetLoggingReloader gives the server the function that changes its
// logger's level and format when a reload changes them. Without one a
// change of logging settings is reported as needing a restart. Call it
// before Run.
func (s *Server) SetLoggingReloader(f func(config.Logging) error) { s.live.logging = f }

// applyLive applies the reloadable settings of next, once its policies and
// tenants are known to load (the guard calls it under its reload lock), and
// records which other settings changed and
// take a restart. Nothing of those is applied, not even in part: a value
// such as max_request_bytes is read in many places that must agree.
func (s *Server) applyLive(next *config.Config) {
	running := s.live.running
	restart := config.RestartRequired(running, next)
	logChanged := next.Logging != running.Logging
	if logChanged && s.live.logging == nil {
		restart = append(restart, "logging.level", "logging.format")
		logChanged = false
	}
	s.guard.SetRateLimits(next.Limits)
	s.live.slow.Store(int64(next.Monitoring.SlowRequestThreshold))
	s.transport.SetMaxConnections(next.Limits.MaxConnections)
	if logChanged {
		if err := s.live.logging(next.Logging); err != nil {
			s.lg.Error("reload: cannot change the log settings", "err", err)
		} else {
			s.lg.Info("reload: log settings changed", "log-level", next.Logging.Level, "log-format", next.Logging.Format)
		}
	}
	applied := *running
	applied.Limits.RateLimit, applied.Limits.RateBurst = next.Limits.RateLimit, next.Limits.RateBurst
	applied.Limits.UserRateLimit, applied.Limits.UserRateBurst = next.Limits.UserRateLimit, next.Limits.UserRateBurst
	applied.Limits.UnaryRateLimit, applied.Limits.UnaryRateBurst = next.Limits.UnaryRateLimit, next.Limits.UnaryRateBurst
	applied.Limits.StreamRateLimit, applied.Limits.StreamRateBurst = next.Limits.StreamRateLimit, next.Limits.StreamRateBurst
	applied.Limits.MaxConnections = next.Limits.MaxConnections
	applied.Monitoring.SlowRequestThreshold = next.Monitoring.SlowRequestThreshold
	if logChanged {
		applied.Logging = next.Logging
	}
	applied.Policies, applied.Tenants = next.Policies, next.Tenants
	applied.Authorization.Chain = next.Authorization.Chain
	applied.PolicyConfig, applied.TenantConfig = next.PolicyConfig, next.TenantConfig
	s.live.running, s.live.restart = &applied, restart
	if len(restart) > 0 {
		s.lg.Warn("reload: these settings changed but take effect only after a restart; the running values are kept",
			"settings", restart)
	}
}

// countReload counts a finished reload by its result (the guard calls
// it): ok, failed (nothing changed), or restart_required (applied, but
// settings that take a restart changed too).
func (s *Server) countReload(ok bool) {
	if ok && len(s.live.restart) > 0 {
		s.metrics.ReloadedRestartRequired()
		return
	}
	s.metrics.Reloaded(ok)
}

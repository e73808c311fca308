package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks every setting and returns nil, or one error listing every
// problem, each prefixed with its YAML key:
//
//	limits.max_txn_ops: must be > 0, got -1
//	logging.format: unknown format "xml" (want text or json)
//
// The error is an errors.Join of one error per problem. Files named by the
// configuration (TLS certificates, JWT keys) must exist.
func (c *Config) Validate() error {
	var p problems

	p.check(c.Name != "", "name", "must not be empty")
	p.check(c.DataDir != "", "data_dir", "must not be empty")

	p.check(len(c.Server.ListenClientURLs) > 0, "server.listen_client_urls", "must list at least one URL")
	p.urls("server.listen_client_urls", c.Server.ListenClientURLs, true)
	p.urls("server.advertise_client_urls", c.Server.AdvertiseClientURLs, false)
	p.urls("server.advertise_peer_urls", c.Server.AdvertisePeerURLs, false)
	p.urls("server.listen_metrics_urls", c.Server.ListenMetricsURLs, true)
	p.urls("server.listen_client_http_urls", c.Server.ListenClientHTTPURLs, true)
	c.Server.validateTLS(&p)

	p.check(c.GRPC.MaxConcurrentStreams > 0, "grpc.max_concurrent_streams", "must be > 0, got 0")
	p.nonNegative("grpc.keepalive_min_time", c.GRPC.KeepaliveMinTime)
	p.nonNegative("grpc.keepalive_interval", c.GRPC.KeepaliveInterval)
	p.nonNegative("grpc.keepalive_timeout", c.GRPC.KeepaliveTimeout)
	// Every worker is a goroutine started with the server.
	p.nonNegative("grpc.max_connection_idle", c.GRPC.MaxConnectionIdle)
	p.nonNegative("grpc.max_connection_age", c.GRPC.MaxConnectionAge)
	p.nonNegative("grpc.max_connection_age_grace", c.GRPC.MaxConnectionAgeGrace)
	p.check(c.GRPC.MaxConnectionAgeGrace == 0 || c.GRPC.MaxConnectionAge > 0,
		"grpc.max_connection_age_grace", "has no effect without grpc.max_connection_age")
	p.check(c.GRPC.Transport == TransportGRPCGo || c.GRPC.Transport == TransportLean,
		"grpc.transport", "unknown transport %q (want %s or %s)", c.GRPC.Transport, TransportGRPCGo, TransportLean)
	p.check(c.GRPC.StreamWorkers <= maxStreamWorkers, "grpc.stream_workers", "must be at most %d, got %d", maxStreamWorkers, c.GRPC.StreamWorkers)

	c.validateCluster(&p)
	p.check(c.Cluster.MaxLearners >= 0, "cluster.max_learners", "must be >= 0, got %d", c.Cluster.MaxLearners)
	p.check(c.Limits.MaxTxnOps > 0, "limits.max_txn_ops", "must be > 0, got %d", c.Limits.MaxTxnOps)
	// gRPC sizes messages with an int32.
	p.check(c.Limits.MaxRequestBytes > 0 && c.Limits.MaxRequestBytes <= math.MaxInt32,
		"limits.max_request_bytes", "must be > 0 and <= %d, got %d", math.MaxInt32, c.Limits.MaxRequestBytes)
	p.check(c.Limits.MaxSendMsgSize >= 0 && c.Limits.MaxSendMsgSize <= math.MaxInt32,
		"limits.max_send_msg_size", "must be >= 0 (0 means no limit) and <= %d, got %d", math.MaxInt32, c.Limits.MaxSendMsgSize)
	p.check(c.Limits.QuotaBackendBytes >= 0, "limits.quota_backend_bytes", "must be >= 0 (0 means the default 2GiB), got %d", c.Limits.QuotaBackendBytes)

	for key, v := range map[string]int{
		"limits.max_connections": c.Limits.MaxConnections,
		"limits.rate_limit":      c.Limits.RateLimit,
		"limits.rate_burst":      c.Limits.RateBurst,
		"limits.user_rate_limit": c.Limits.UserRateLimit,
		"limits.user_rate_burst": c.Limits.UserRateBurst,

		"limits.unary_rate_limit":  c.Limits.UnaryRateLimit,
		"limits.unary_rate_burst":  c.Limits.UnaryRateBurst,
		"limits.stream_rate_limit": c.Limits.StreamRateLimit,
		"limits.stream_rate_burst": c.Limits.StreamRateBurst,
	} {
		p.check(v >= 0, key, "must be >= 0 (0 means no limit), got %d", v)
	}

	c.Lease.validate(&p)
	c.Auth.validate(&p)

	p.nonNegative("watch.progress_notify_interval", c.Watch.ProgressNotifyInterval)

	if _, _, err := c.Maintenance.CompactionRetention(); err != nil {
		p = append(p, fmt.Errorf("maintenance.%w", err))
	}

	if _, ok := logLevels[c.Logging.Level]; !ok {
		p.add("logging.level", "unknown level %q (want debug, info, warn or error)", c.Logging.Level)
	}
	p.check(c.Logging.Format == "text" || c.Logging.Format == "json",
		"logging.format", "unknown format %q (want text or json)", c.Logging.Format)

	p.nonNegative("monitoring.slow_request_threshold", c.Monitoring.SlowRequestThreshold)

	c.validatePolicies(&p)

	return errors.Join(p...)
}

// problems collects validation failures, each naming its key.
type problems []error

// maxStreamWorkers bounds grpc.stream_workers.
const maxStreamWorkers = 65536

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (p *problems) check(ok bool, key, format string, args ...any) {
	if !ok {
		p.add(key, format, args...)
	}
}

func (p *problems) nonNegative(key string, d time.Duration) {
	p.check(d >= 0, key, "must be >= 0, got %v", d)
}

func (p *problems) urls(key string, urls []string, listen bool) {
	for _, u := range urls {
		if err := checkURL(u, listen); err != nil {
			p.add(key, "%v", err)
		}
	}
}

// fileExists reports a missing or unreadable file at start-up rather than
// at the first TLS handshake or token signing.
func (p *problems) fileExists(key, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		p.add(key, "%v", err)
	}
}

// checkURL accepts etcd's URL schemes: http:// and https://, and unix://
// and unixs:// (a Unix socket, plaintext or TLS, whose path is the URL's
// host:port, as etcd names its sockets), each with a host and a port (0
// picks a free port) and nothing else. A TCP listen URL's host must be an
// IP address or localhost, as etcd requires, because binding to a DNS name
// depends on what it resolves to at start-up.
func checkURL(raw string, listen bool) error {
	if !strings.Contains(raw, "://") { // url.Parse's error for "host:port" is cryptic
		return fmt.Errorf("URL %q: scheme must be http, https, unix or unixs", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", raw, err)
	}
	switch u.Scheme {
	case "http", "https", "unix", "unixs":
	default:
		return fmt.Errorf("URL %q: scheme must be http, https, unix or unixs", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("URL %q: must be scheme://host:port with no user, path, query or fragment", raw)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return fmt.Errorf("URL %q: must have a host and a port", raw)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("URL %q: invalid port %q", raw, port)
	}
	switch {
	case IsUnixScheme(u.Scheme):
		// The host names a socket file, not an address.
		if host == "" {
			return fmt.Errorf("URL %q: must name a socket (host:port)", raw)
		}
	case listen && host != "" && host != "localhost":
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("URL %q: host must be an IP address or localhost to listen on", raw)
		}
	case !listen && host == "":
		return fmt.Errorf("URL %q: must name a host", raw)
	}
	return nil
}

// IsUnixScheme reports whether a URL scheme names a Unix socket: unix, or
// unixs with TLS.
func IsUnixScheme(scheme string) bool { return scheme == "unix" || scheme == "unixs" }

// IsTLSScheme reports whether a URL scheme is served over TLS: https, or
// unixs.
func IsTLSScheme(scheme string) bool { return scheme == "https" || scheme == "unixs" }

// isTLSURL is IsTLSScheme for a raw URL.
func isTLSURL(raw string) bool {
	return strings.HasPrefix(raw, "https://") || strings.HasPrefix(raw, "unixs://")
}

func (s *Server) validateTLS(p *problems) {
	t := &s.TLS
	var https []string
	for _, u := range s.servedURLs() {
		if isTLSURL(u) {
			https = append(https, u)
		}
	}
	if len(https) > 0 {
		p.check(t.CertFile != "", "server.tls.cert_file", "required to serve %s", strings.Join(https, ", "))
		p.check(t.KeyFile != "", "server.tls.key_file", "required to serve %s", strings.Join(https, ", "))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.add("server.tls", "cert_file and key_file must be given together")
	}
	p.check(!t.ClientCertAuth || t.TrustedCAFile != "", "server.tls.client_cert_auth", "requires server.tls.trusted_ca_file")
	p.check(!t.ClientCertAuth || len(https) > 0, "server.tls.client_cert_auth", "requires an https:// listen URL")
	p.fileExists("server.tls.cert_file", t.CertFile)
	p.fileExists("server.tls.key_file", t.KeyFile)
	p.fileExists("server.tls.trusted_ca_file", t.TrustedCAFile)
	p.fileExists("server.tls.crl_file", t.CRLFile)
}

// servedURLs are the client-side listeners' URLs: client, metrics and
// client HTTP.
func (s *Server) servedURLs() []string {
	return slices.Concat(s.ListenClientURLs, s.ListenMetricsURLs, s.ListenClientHTTPURLs)
}

// Bounds of golang.org/x/crypto/bcrypt's cost, copied so that config does
// not import bcrypt.
const (
	minBcryptCost = 4
	maxBcryptCost = 31
)

// jwtSignMethods are the algorithms etcd's JWT token provider accepts.
var jwtSignMethods = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"HS256": true, "HS384": true, "HS512": true,
	"EdDSA": true,
}

func (a *Auth) validate(p *problems) {
	kind, opts, err := a.TokenOptions()
	switch {
	case err != nil:
		p.add("auth.token", "%v", err)
	case kind == "jwt":
		method := opts["sign-method"]
		switch {
		case method == "":
			p.add("auth.token", "jwt requires sign-method")
		case !jwtSignMethods[method]:
			p.add("auth.token", "unknown jwt sign-method %q", method)
		case strings.HasPrefix(method, "HS"):
			p.check(opts["priv-key"] != "", "auth.token", "jwt sign-method %s requires priv-key (the shared secret)", method)
		default:
			p.check(opts["pub-key"] != "", "auth.token", "jwt sign-method %s requires pub-key", method)
		}
		if ttl, ok := opts["ttl"]; ok {
			if d, err := time.ParseDuration(ttl); err != nil || d <= 0 {
				p.add("auth.token", "jwt ttl must be a positive duration, got %q", ttl)
			}
		}
		p.fileExists("auth.token", opts["pub-key"])
		p.fileExists("auth.token", opts["priv-key"])
	}
	p.check(a.TokenTTL > 0, "auth.token_ttl", "must be > 0, got %v", a.TokenTTL)
	p.check(a.BcryptCost >= minBcryptCost && a.BcryptCost <= maxBcryptCost,
		"auth.bcrypt_cost", "must be between %d and %d, got %d", minBcryptCost, maxBcryptCost, a.BcryptCost)
}

// TokenOptions splits Token into its kind, "simple" or "jwt", and the
// key=value options that follow a jwt kind (pub-key, priv-key,
// sign-method, ttl), as etcd's --auth-token does.
func (a Auth) TokenOptions() (kind string, opts map[string]string, err error) {
	parts := strings.Split(a.Token, ",")
	kind = strings.TrimSpace(parts[0])
	switch kind {
	case "simple":
		if len(parts) > 1 {
			return "", nil, errors.New("simple tokens take no options")
		}
		return kind, nil, nil
	case "jwt":
	default:
		return "", nil, fmt.Errorf("unknown token type %q (want simple or jwt,...)", kind)
	}
	opts = make(map[string]string, len(parts)-1)
	for _, part := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "pub-key", "priv-key", "sign-method", "ttl":
		default:
			return "", nil, fmt.Errorf("unknown jwt option %q (want pub-key, priv-key, sign-method or ttl)", k)
		}
		if !ok || v == "" {
			return "", nil, fmt.Errorf("jwt option %q needs a value", k)
		}
		opts[k] = v
	}
	return kind, opts, nil
}

// CompactionRetention interprets AutoCompactionRetention for
// AutoCompactionMode. In periodic mode it returns the period (a Go
// duration, or a bare number of hours as etcd accepts); in revision mode
// the number of revisions to keep. Both zero means auto-compaction is off.
// Errors name the offending key.
func (m Maintenance) CompactionRetention() (period time.Duration, revisions int64, err error) {
	r := strings.TrimSpace(m.AutoCompactionRetention)
	switch m.AutoCompactionMode {
	case "periodic":
		if h, perr := strconv.ParseInt(r, 10, 64); perr == nil {
			if h < 0 || h > math.MaxInt64/int64(time.Hour) {
				return 0, 0, fmt.Errorf("auto_compaction_retention: %d hours is out of range", h)
			}
			return time.Duration(h) * time.Hour, 0, nil
		}
		d, perr := time.ParseDuration(r)
		if perr != nil || d < 0 {
			return 0, 0, fmt.Errorf("auto_compaction_retention: invalid period %q for periodic mode (want a duration such as 1h or 30m, or a number of hours)", r)
		}
		return d, 0, nil
	case "revision":
		n, perr := strconv.ParseInt(r, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, fmt.Errorf("auto_compaction_retention: invalid revision count %q for revision mode (want an integer >= 0)", r)
		}
		return 0, n, nil
	default:
		return 0, 0, fmt.Errorf("auto_compaction_mode: unknown mode %q (want periodic or revision)", m.AutoCompactionMode)
	}
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// SlogLevel returns Level as a slog.Level; an unknown level (which
// Validate rejects) is info.
func (l Logging) SlogLevel() slog.Level {
	return logLevels[l.Level]
}

// HasTLS reports whether any client or metrics listener is https:// (or
// unixs://).
func (s *Server) HasTLS() bool {
	for _, u := range s.servedURLs() {
		if isTLSURL(u) {
			return true
		}
	}
	return false
}

func (l *Lease) validate(p *problems) {
	p.check(l.MinTTL >= time.Second && l.MinTTL%time.Second == 0,
		"lease.min_ttl", "must be a whole number of seconds, at least 1s, got %v", l.MinTTL)
	p.check(l.RevokeRate > 0, "lease.revoke_rate", "must be > 0, got %d", l.RevokeRate)
	p.check(l.CheckpointInterval >= time.Second, "lease.checkpoint_interval", "must be at least 1s, got %v", l.CheckpointInterval)
	p.nonNegative("lease.restart_grace", l.RestartGrace)
}

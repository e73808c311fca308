package config

import "time"

// Config is the whole server configuration. The zero value is not usable;
// start from Default() and layer YAML, environment and flags on top.
type Config struct {
	// Name is the human-readable member name (etcd's --name).
	Name string `yaml:"name"`
	// DataDir holds the Pebble database and other state (etcd's --data-dir).
	DataDir string `yaml:"data_dir"`

	Server      Server      `yaml:"server"`
	Cluster     Cluster     `yaml:"cluster"`
	GRPC        GRPC        `yaml:"grpc"`
	Limits      Limits      `yaml:"limits"`
	Lease       Lease       `yaml:"lease"`
	Auth        Auth        `yaml:"auth"`
	Watch       Watch       `yaml:"watch"`
	Maintenance Maintenance `yaml:"maintenance"`
	Reliability Reliability `yaml:"reliability"`
	Logging     Logging     `yaml:"logging"`
	Monitoring  Monitoring  `yaml:"monitoring"`

	Authorization Authorization `yaml:"authorization"`
	// Policies are the WebAssembly policies: the `policies:` list of the
	// config file, or of PolicyConfig when that is set.
	Policies []Policy `yaml:"policies"`
	// Tenants own key prefixes, with quotas and rate limits: the
	// `tenants:` list of the config file, or of TenantConfig when set.
	Tenants []Tenant `yaml:"tenants"`
	// PolicyConfig names a YAML file holding a `policies:` list, or a
	// directory of such files (*.yaml and *.yml, in name order; hidden
	// entries such as a Kubernetes volume's ..data are skipped). When set,
	// its policies replace the config file's list. Module paths in it are
	// relative to the file that lists them.
	PolicyConfig string `yaml:"policy_config"`
	// TenantConfig names a YAML file (or directory) holding a `tenants:`
	// list, as PolicyConfig does for policies.
	TenantConfig string `yaml:"tenant_config"`

	// ConfigFile is the YAML file Load read, if any (not a setting: the
	// server watches it for changes to policies and tenants).
	ConfigFile string `yaml:"-"`
}

// Server holds listen addresses.
type Server struct {
	// ListenClientURLs are the URLs the gRPC API listens on, e.g.
	// "http://127.0.0.1:2379" (etcd's --listen-client-urls).
	ListenClientURLs []string `yaml:"listen_client_urls"`
	// AdvertiseClientURLs are reported in MemberList (etcd's
	// --advertise-client-urls). Defaults to ListenClientURLs.
	AdvertiseClientURLs []string `yaml:"advertise_client_urls"`
	// AdvertisePeerURLs are the member's peer URLs when its data directory
	// is new (etcd's --initial-advertise-peer-urls); afterwards the stored
	// member set, which MemberUpdate changes, is what MemberList reports.
	// metastore has no peer listener until clustering; the default is etcd's.
	AdvertisePeerURLs []string `yaml:"advertise_peer_urls"`
	// ListenPeerURLs are the URLs the Raft peer service listens on (etcd's
	// --listen-peer-urls). Empty (the default) runs a single member
	// without peers, on the group-commit loop; set, the member runs Raft
	// (see Cluster and ClusterMode).
	ListenPeerURLs []string `yaml:"listen_peer_urls"`
	// PeerTLS secures the peer listener and the connections to peers
	// (etcd's --peer-* flags).
	PeerTLS PeerTLS `yaml:"peer_tls"`
	// ListenMetricsURLs serve /metrics and /health on separate listeners
	// (etcd's --listen-metrics-urls). Empty means only on the client URLs.
	ListenMetricsURLs []string `yaml:"listen_metrics_urls"`
	// ListenClientHTTPURLs serve the client HTTP endpoints (the JSON
	// gateway, /health, /metrics, /version) on listeners of their own; the
	// client URLs then serve gRPC only (etcd's --listen-client-http-urls).
	ListenClientHTTPURLs []string `yaml:"listen_client_http_urls"`
	// TLS secures every https:// client and metrics listener.
	TLS TLS `yaml:"tls"`
	// EnableGRPCGateway serves etcd's JSON gateway (/v3/kv/range, /v3/watch
	// …) on the client URLs (etcd's --enable-grpc-gateway).
	EnableGRPCGateway bool `yaml:"enable_grpc_gateway"`
	// EnablePprof serves Go's runtime profiles under /debug/pprof/ on the
	// client URLs (etcd's --enable-pprof). Off by default: a profile costs
	// CPU and shows the process's internals to anyone who can reach the
	// client port.
	EnablePprof bool `yaml:"enable_pprof"`
}

// Cluster holds the membership rules.
type Cluster struct {
	// MaxLearners caps the learner members in the cluster (etcd's
	// --max-learners).
	MaxLearners int `yaml:"max_learners"`
	// SnapshotCount is how many applied entries past the last truncation
	// make a member truncate its Raft log (etcd's --snapshot-count); 0
	// never truncates.
	SnapshotCount uint64 `yaml:"snapshot_count"`
	// SnapshotCatchUpEntries is how many entries below the applied index a
	// truncation keeps, so a slightly slow follower catches up from the
	// log instead of a snapshot (etcd's --snapshot-catchup-entries). A
	// truncation keeps at most SnapshotCount of them.
	SnapshotCatchUpEntries uint64 `yaml:"snapshot_catchup_entries"`
	// StrictReconfigCheck refuses a membership change that would leave
	// too few started members for a quorum (etcd's
	// --strict-reconfig-check; off, etcd and metastore skip the check).
	StrictReconfigCheck bool `yaml:"strict_reconfig_check"`
	// InitialCluster is etcd's --initial-cluster: "name=peer-url,..." of
	// the members a new cluster starts with (a name may repeat for several
	// URLs). Empty means this member alone, at its advertised peer URLs.
	// Used only when the data directory is new.
	InitialCluster string `yaml:"initial_cluster"`
	// InitialClusterState is "new" (bootstrap InitialCluster) or
	// "existing" (join a running cluster that added this member with
	// `member add`) — etcd's --initial-cluster-state.
	InitialClusterState string `yaml:"initial_cluster_state"`
	// InitialClusterToken is mixed into member and cluster IDs, so that
	// two clusters started from the same URLs differ (etcd's
	// --initial-cluster-token).
	InitialClusterToken string `yaml:"initial_cluster_token"`
	// HeartbeatInterval is the Raft tick and heartbeat (etcd's
	// --heartbeat-interval, which takes milliseconds).
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// ElectionTimeout is how long a follower waits without a heartbeat
	// before it campaigns (etcd's --election-timeout, milliseconds).
	ElectionTimeout time.Duration `yaml:"election_timeout"`
	// InitialCorruptCheck makes a restarting member compare its HashKV
	// with its peers' before it serves, and refuse to start on a mismatch
	// (etcd's --feature-gates=InitialCorruptCheck=true, formerly
	// --experimental-initial-corrupt-check).
	InitialCorruptCheck bool `yaml:"initial_corrupt_check"`
	// CorruptCheckTime is how often the leader compares its HashKV with
	// the followers' and raises the CORRUPT alarm on a mismatch (etcd's
	// --corrupt-check-time); 0 disables.
	CorruptCheckTime time.Duration `yaml:"corrupt_check_time"`
	// CompactHashCheck makes the leader compare the hashes members took
	// at their last compactions every CompactHashCheckTime, raising the
	// CORRUPT alarm for a minority that differs (etcd's
	// --feature-gates=CompactHashCheck=true and --compact-hash-check-time).
	CompactHashCheck     bool          `yaml:"compact_hash_check"`
	CompactHashCheckTime time.Duration `yaml:"compact_hash_check_time"`
}

// TLS holds the certificates for https:// listeners (etcd's client
// security flags). All paths are PEM files.
type TLS struct {
	// CertFile is the server certificate (etcd's --cert-file).
	CertFile string `yaml:"cert_file"`
	// KeyFile is the server certificate's private key (etcd's --key-file).
	KeyFile string `yaml:"key_file"`
	// TrustedCAFile verifies client certificates (etcd's --trusted-ca-file).
	TrustedCAFile string `yaml:"trusted_ca_file"`
	// ClientCertAuth requires clients to present a certificate signed by
	// TrustedCAFile; its CN becomes the auth user (etcd's --client-cert-auth).
	ClientCertAuth bool `yaml:"client_cert_auth"`
	// CRLFile is a certificate revocation list, PEM or DER: a client
	// certificate it lists is refused at the handshake (etcd's
	// --client-crl-file). Re-read when it changes.
	CRLFile string `yaml:"crl_file"`
	// AutoTLS serves https:// listeners with a self-signed certificate
	// when no cert_file and key_file are given (etcd's --auto-tls). The
	// certificate is made once and kept in <data_dir>/fixtures/client.
	AutoTLS bool `yaml:"auto_tls"`
}

// GRPC holds gRPC transport settings.
type GRPC struct {
	// MaxConcurrentStreams per connection (etcd's --max-concurrent-streams).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// KeepaliveMinTime is the shortest interval a client may ping at;
	// faster clients are disconnected (etcd's --grpc-keepalive-min-time).
	KeepaliveMinTime time.Duration `yaml:"keepalive_min_time"`
	// KeepaliveInterval is how often the server pings an idle client;
	// 0 disables (etcd's --grpc-keepalive-interval).
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
	// KeepaliveTimeout closes a connection whose ping is not answered in
	// this time; 0 disables (etcd's --grpc-keepalive-timeout).
	KeepaliveTimeout time.Duration `yaml:"keepalive_timeout"`
	// StreamWorkers is how many goroutines serve incoming RPCs (gRPC's
	// NumStreamWorkers); a new goroutine takes an RPC while all are busy.
	// Reused goroutines keep their grown stacks: a fresh goroutine per RPC
	// grew and copied its stack on every request. 0 means a new goroutine
	// per RPC, as etcd.
	StreamWorkers uint32 `yaml:"stream_workers"`
	// MaxConnectionIdle closes a connection that has had no RPC for this
	// long (gRPC's MaxConnectionIdle, with a GOAWAY the client reconnects
	// on); 0 means never, as etcd.
	MaxConnectionIdle time.Duration `yaml:"max_connection_idle"`
	// MaxConnectionAge sends a connection a GOAWAY once it is this old (±10%
	// jitter), so clients reconnect and load spreads across members; 0
	// means never, as etcd.
	MaxConnectionAge time.Duration `yaml:"max_connection_age"`
	// MaxConnectionAgeGrace is how long RPCs still running on a connection
	// past its MaxConnectionAge may take before the connection is closed
	// under them; 0 means as long as they take.
	MaxConnectionAgeGrace time.Duration `yaml:"max_connection_age_grace"`
	// Transport serves gRPC on the client port: "lean" (server/serve/h2grpc,
	// cheaper per call; the default) or "grpc-go" (grpc-go's own server).
	Transport string `yaml:"transport"`
}

// The values of grpc.transport.
const (
	TransportGRPCGo = "grpc-go"
	TransportLean   = "lean"
)

// Limits bound what one request or the whole store may use.
type Limits struct {
	// MaxTxnOps is the maximum number of operations in one Txn (etcd's --max-txn-ops).
	MaxTxnOps int `yaml:"max_txn_ops"`
	// MaxRequestBytes is the maximum request size (etcd's --max-request-bytes).
	MaxRequestBytes int `yaml:"max_request_bytes" unit:"bytes"`
	// MaxSendMsgSize is the largest response message the server sends; a
	// unary response over it fails with ResourceExhausted (that request
	// only), RangeStream pieces and watch fragments are cut under it. 0
	// means no limit beyond gRPC's 2 GiB, as etcd.
	MaxSendMsgSize int `yaml:"max_send_msg_size" unit:"bytes"`
	// QuotaBackendBytes raises a NOSPACE alarm when the database grows past it
	// (etcd's --quota-backend-bytes). 0 means the default (2 GiB).
	QuotaBackendBytes int64 `yaml:"quota_backend_bytes" unit:"bytes"`
	// MaxConnections caps open client connections per listener; beyond it
	// new connections are closed at once. 0 means no limit.
	MaxConnections int `yaml:"max_connections"`
	// RateLimit is the sustained rate of requests per second the whole
	// server accepts (a token bucket); 0 means no limit. Beyond it requests
	// fail with etcd's "too many requests".
	RateLimit int `yaml:"rate_limit"`
	// RateBurst is the global bucket's size; 0 means RateLimit.
	RateBurst int `yaml:"rate_burst"`
	// UserRateLimit is the rate per user (the authenticated user, or the
	// client certificate's CN); 0 means no per-user limit.
	UserRateLimit int `yaml:"user_rate_limit"`
	// UserRateBurst is each user's bucket size; 0 means UserRateLimit.
	UserRateBurst int `yaml:"user_rate_burst"`
	// UnaryRateLimit is the rate of unary RPCs per second the server
	// accepts (one bucket for all clients), besides RateLimit; 0 means no
	// limit.
	UnaryRateLimit int `yaml:"unary_rate_limit"`
	// UnaryRateBurst is the unary bucket's size; 0 means UnaryRateLimit.
	UnaryRateBurst int `yaml:"unary_rate_burst"`
	// StreamRateLimit is the rate per second at which streams may be
	// created: each watch (a create request on a Watch stream), and each
	// LeaseKeepAlive, RangeStream, Observe and Snapshot stream; 0 means no
	// limit. It keeps a flood of watch or keep-alive creations from
	// starving unary traffic and the other way round.
	StreamRateLimit int `yaml:"stream_rate_limit"`
	// StreamRateBurst is the stream bucket's size; 0 means StreamRateLimit.
	StreamRateBurst int `yaml:"stream_rate_burst"`
}

// Lease configures leases.
type Lease struct {
	// MinTTL is the shortest TTL a lease is granted with; shorter requests
	// are raised to it. etcd derives it from its election timeout
	// (1.5 × election timeout, rounded up to a second: 2s by default).
	// Whole seconds.
	MinTTL time.Duration `yaml:"min_ttl"`
	// RevokeRate is how many expired leases are revoked per second at most
	// (etcd: 1000), so that a mass expiry does not crowd out writes.
	RevokeRate int `yaml:"revoke_rate"`
	// CheckpointInterval is how often the remaining TTLs of leases are
	// persisted, so that a restart after a crash restores them rather than
	// the full TTLs (etcd's lease checkpoint interval, 5m). A graceful
	// shutdown persists them too.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// RestartGrace is added to every lease's remaining TTL after a restart,
	// so clients can reconnect and renew (etcd extends leases by its
	// election timeout when a leader takes over). It is never persisted:
	// a lease nobody renews does not gain time across restarts.
	RestartGrace time.Duration `yaml:"restart_grace"`
}

// Auth configures etcd's authentication (enabled at run time by the
// AuthEnable RPC, as in etcd).
type Auth struct {
	// Token is "simple" or "jwt,pub-key=PATH,priv-key=PATH,sign-method=ALG[,ttl=DURATION]"
	// (etcd's --auth-token).
	Token string `yaml:"token"`
	// TokenTTL is the lifetime of a simple token (etcd's --auth-token-ttl,
	// which takes seconds).
	TokenTTL time.Duration `yaml:"token_ttl"`
	// BcryptCost is the cost factor for password hashes (etcd's --bcrypt-cost).
	BcryptCost int `yaml:"bcrypt_cost"`
}

// Watch holds settings of the Watch service.
type Watch struct {
	// ProgressNotifyInterval is how often a watcher created with
	// progress_notify that received no event since the last interval is
	// sent an empty response carrying the current revision (etcd's
	// --watch-progress-notify-interval). 0 means the default, 10m;
	// values below 100ms are raised to 100ms, as etcd does.
	ProgressNotifyInterval time.Duration `yaml:"progress_notify_interval"`
}

// Maintenance holds background housekeeping settings.
type Maintenance struct {
	// AutoCompactionMode is "periodic" or "revision" (etcd's --auto-compaction-mode).
	AutoCompactionMode string `yaml:"auto_compaction_mode"`
	// AutoCompactionRetention is a duration ("1h", or a bare number of hours)
	// in periodic mode, or a revision count in revision mode; "0" disables
	// (etcd's --auto-compaction-retention).
	AutoCompactionRetention string `yaml:"auto_compaction_retention"`
}

// Reliability holds settings that keep the server up when something goes wrong.
type Reliability struct {
	// PanicRecovery turns a panicking request handler into an Internal
	// error (logged with its stack) instead of a crash.
	PanicRecovery bool `yaml:"panic_recovery"`
}

// Logging selects the log/slog handler.
type Logging struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is "text" or "json" (etcd's zap JSON: level, ts, caller,
	// msg). The default is text, or json when the program is invoked under
	// etcd's name (DefaultAs).
	Format string `yaml:"format"`
}

// Monitoring holds observability settings.
type Monitoring struct {
	// SlowRequestThreshold logs requests slower than this; 0 disables.
	SlowRequestThreshold time.Duration `yaml:"slow_request_threshold"`
}

// DefaultAs is Default for a program invoked as prog (the base name of
// argv[0]). Installed under etcd's name, as a drop-in for etcd, metastore
// takes etcd's defaults where they differ from its own and are safe to
// follow: logs in etcd's JSON, which log pipelines and etcd's own e2e
// tests parse. The data directory stays metastore.data: etcd's default
// (<name>.etcd) may hold a real etcd's data.
func DefaultAs(prog string) *Config {
	c := Default()
	if prog == "etcd" {
		c.Logging.Format = "json"
	}
	return c
}

// Default returns the built-in defaults: a working single-node server on
// 127.0.0.1:2379 with data in ./metastore.data.
func Default() *Config {
	return &Config{
		Name:    "default",
		DataDir: "metastore.data",
		Server: Server{
			ListenClientURLs:  []string{"http://127.0.0.1:2379"},
			AdvertisePeerURLs: []string{"http://localhost:2380"},
			EnableGRPCGateway: true,
		},
		Cluster: Cluster{
			MaxLearners: 1, StrictReconfigCheck: true,
			SnapshotCount: 10000, SnapshotCatchUpEntries: 5000,
			InitialClusterState: "new", InitialClusterToken: "etcd-cluster",
			HeartbeatInterval: 100 * time.Millisecond, ElectionTimeout: time.Second,
			CompactHashCheckTime: time.Minute,
		},
		GRPC: GRPC{
			MaxConcurrentStreams: 1<<32 - 1,
			KeepaliveMinTime:     5 * time.Second,
			KeepaliveInterval:    2 * time.Hour,
			KeepaliveTimeout:     20 * time.Second,
			StreamWorkers:        128,
			Transport:            TransportLean,
		},
		Limits: Limits{
			MaxTxnOps:         128,
			MaxRequestBytes:   1536 * 1024,
			QuotaBackendBytes: 2 << 30,
		},
		Lease: Lease{
			MinTTL:             2 * time.Second,
			RevokeRate:         1000,
			CheckpointInterval: 5 * time.Minute,
			RestartGrace:       2 * time.Second,
		},
		Auth:        Auth{Token: "simple", TokenTTL: 300 * time.Second, BcryptCost: 10},
		Watch:       Watch{ProgressNotifyInterval: 10 * time.Minute},
		Maintenance: Maintenance{AutoCompactionMode: "periodic", AutoCompactionRetention: "0"},
		Reliability: Reliability{PanicRecovery: true},
		Logging:     Logging{Level: "info", Format: "text"},
		Monitoring:  Monitoring{SlowRequestThreshold: 100 * time.Millisecond},
		Authorization: Authorization{
			Chain:               []string{"policies", "rbac"},
			PolicyWatchInterval: 2 * time.Second,
		},
	}
}

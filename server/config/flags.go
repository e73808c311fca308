package config

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// A flagDef is one command-line flag. Flags carry etcd's names and meaning
// so that etcd scripts and unit files start metastore unchanged; the same
// table serves etcd's ETCD_<FLAG> environment variables.
type flagDef struct {
	name  string
	group string
	usage string

	// key is the Config leaf the flag sets. Flags without a key are
	// handled by apply (config-file and etcd compatibility flags).
	key string
	// translate rewrites etcd's spelling of a value into ours before it is
	// parsed as key (e.g. --auth-token-ttl takes bare seconds).
	translate func(string) (string, error)
	// apply handles a flag that sets no leaf.
	apply func(l *loader, source, value string) error
	// def is the default shown in help for flags without a key.
	def    string
	isBool bool
}

const configFileFlag = "config-file"

// Flag groups, in the order help prints them.
const (
	groupMember      = "Member"
	groupClients     = "Client listeners"
	groupSecurity    = "Security"
	groupGRPC        = "gRPC"
	groupLimits      = "Limits"
	groupLease       = "Lease (metastore's own flags; etcd has none for these)"
	groupAuth        = "Auth"
	groupWatch       = "Watch"
	groupMaintenance = "Maintenance"
	groupPolicies    = "Policies and tenants (the lists themselves are YAML: in the config file, or in the files named here)"
	groupLogging     = "Logging and monitoring"
	groupCluster     = "Clustering (Raft)"
	groupCompat      = "etcd flags accepted for compatibility"
)

var flagGroups = []string{groupMember, groupClients, groupSecurity, groupGRPC, groupLimits, groupLease, groupAuth, groupPolicies, groupWatch, groupMaintenance, groupLogging, groupCluster, groupCompat}

var flagDefs = []flagDef{
	{name: configFileFlag, group: groupMember, usage: "Path to the YAML configuration file (see configs/metastore.yaml). Unlike etcd, environment variables and flags still apply on top of it.",
		apply: func(*loader, string, string) error { return nil }},
	{name: "name", group: groupMember, key: "name", usage: "Human-readable name for this member."},
	{name: "data-dir", group: groupMember, key: "data_dir", usage: "Path to the data directory."},
	{name: "max-learners", group: groupMember, key: "cluster.max_learners", usage: "Sets the maximum number of learners that can be available in the cluster membership."},

	{name: "listen-client-urls", group: groupClients, key: "server.listen_client_urls", usage: "Comma-separated URLs to serve the client API on (http://, https://, or unix:// and unixs:// for a Unix socket named host:port; host:port)."},
	{name: "advertise-client-urls", group: groupClients, key: "server.advertise_client_urls", usage: "Comma-separated client URLs reported to clients; empty means the listen URLs."},
	{name: "listen-client-http-urls", group: groupClients, key: "server.listen_client_http_urls", usage: "Comma-separated URLs for the client HTTP endpoints (JSON gateway, /health, /metrics, /version) on listeners of their own; --listen-client-urls then serve gRPC only."},
	{name: "listen-metrics-urls", group: groupClients, key: "server.listen_metrics_urls", usage: "Comma-separated URLs for /metrics and /health on their own listeners."},
	{name: "enable-grpc-gateway", group: groupClients, key: "server.enable_grpc_gateway", isBool: true, usage: "Serve etcd's JSON gateway (/v3/kv/range, /v3/watch, ...) on the client URLs."},
	{name: "enable-pprof", group: groupClients, key: "server.enable_pprof", isBool: true, usage: "Serve Go runtime profiles under /debug/pprof/ on the client URLs."},

	{name: "cert-file", group: groupSecurity, key: "server.tls.cert_file", usage: "Path to the client server TLS cert file."},
	{name: "key-file", group: groupSecurity, key: "server.tls.key_file", usage: "Path to the client server TLS key file."},
	{name: "client-crl-file", group: groupSecurity, key: "server.tls.crl_file", usage: "Path to the client certificate revocation list file."},
	{name: "trusted-ca-file", group: groupSecurity, key: "server.tls.trusted_ca_file", usage: "Path to the client server TLS trusted CA cert file."},
	{name: "auto-tls", group: groupSecurity, key: "server.tls.auto_tls", isBool: true, usage: "Serve https:// client URLs with a generated self-signed certificate when --cert-file and --key-file are not given."},
	{name: "client-cert-auth", group: groupSecurity, key: "server.tls.client_cert_auth", isBool: true, usage: "Require client certificates signed by --trusted-ca-file."},

	{name: "max-concurrent-streams", group: groupGRPC, key: "grpc.max_concurrent_streams", usage: "Maximum concurrent streams that each client can open at a time."},
	{name: "grpc-keepalive-min-time", group: groupGRPC, key: "grpc.keepalive_min_time", usage: "Minimum interval a client should wait before pinging the server."},
	{name: "grpc-keepalive-interval", group: groupGRPC, key: "grpc.keepalive_interval", usage: "Frequency of server-to-client pings to check a connection is alive (0 to disable)."},
	{name: "grpc-keepalive-timeout", group: groupGRPC, key: "grpc.keepalive_timeout", usage: "Additional wait before closing a non-responsive connection (0 to disable)."},
	{name: "grpc-max-connection-idle", group: groupGRPC, key: "grpc.max_connection_idle", usage: "Close a connection with no RPC for this long (GOAWAY; clients reconnect); 0 means never."},
	{name: "grpc-max-connection-age", group: groupGRPC, key: "grpc.max_connection_age", usage: "Send a connection GOAWAY once it is this old (±10%), so clients reconnect and load rebalances; 0 means never."},
	{name: "grpc-max-connection-age-grace", group: groupGRPC, key: "grpc.max_connection_age_grace", usage: "Time RPCs still running past --grpc-max-connection-age get before the connection is closed; 0 means unbounded."},
	{name: "grpc-stream-workers", group: groupGRPC, key: "grpc.stream_workers", usage: "Goroutines kept to serve RPCs (a new one serves an RPC while all are busy); 0 starts a goroutine per RPC."},
	{name: "grpc-transport", group: groupGRPC, key: "grpc.transport", usage: "gRPC server of the client port: lean (metastore's HTTP/2 transport, cheaper per call) or grpc-go (grpc-go's own server)."},

	{name: "max-txn-ops", group: groupLimits, key: "limits.max_txn_ops", usage: "Maximum number of operations permitted in a transaction."},
	{name: "max-request-bytes", group: groupLimits, key: "limits.max_request_bytes", usage: "Maximum client request size in bytes (units such as 4MiB accepted)."},
	{name: "max-send-msg-size", group: groupLimits, key: "limits.max_send_msg_size", usage: "Maximum response message size in bytes (units such as 4MiB accepted); larger unary responses fail with ResourceExhausted. 0 means no limit."},
	{name: "max-connections", group: groupLimits, key: "limits.max_connections", usage: "Maximum open client connections per listener; more are closed at once. 0 means no limit."},
	{name: "rate-limit", group: groupLimits, key: "limits.rate_limit", usage: "Requests per second the server accepts (token bucket); 0 means no limit."},
	{name: "rate-burst", group: groupLimits, key: "limits.rate_burst", usage: "Burst size of --rate-limit; 0 means the rate."},
	{name: "user-rate-limit", group: groupLimits, key: "limits.user_rate_limit", usage: "Requests per second per user (auth user or client certificate CN); 0 means no limit."},
	{name: "user-rate-burst", group: groupLimits, key: "limits.user_rate_burst", usage: "Burst size of --user-rate-limit; 0 means the rate."},
	{name: "unary-rate-limit", group: groupLimits, key: "limits.unary_rate_limit", usage: "Unary RPCs per second the server accepts (one bucket for all clients); 0 means no limit."},
	{name: "unary-rate-burst", group: groupLimits, key: "limits.unary_rate_burst", usage: "Burst size of --unary-rate-limit; 0 means the rate."},
	{name: "stream-rate-limit", group: groupLimits, key: "limits.stream_rate_limit", usage: "Stream creations per second the server accepts: watches, lease keep-alive, RangeStream, Observe, Snapshot; 0 means no limit."},
	{name: "stream-rate-burst", group: groupLimits, key: "limits.stream_rate_burst", usage: "Burst size of --stream-rate-limit; 0 means the rate."},
	{name: "quota-backend-bytes", group: groupLimits, key: "limits.quota_backend_bytes", usage: "Database size that raises the NOSPACE alarm; 0 means the default 2GiB."},

	{name: "lease-min-ttl", group: groupLease, key: "lease.min_ttl", translate: secondsOrDuration, usage: "Shortest lease TTL granted; shorter requests are raised to it (seconds, or a duration such as 5s)."},
	{name: "lease-revoke-rate", group: groupLease, key: "lease.revoke_rate", usage: "Maximum number of expired leases revoked per second."},
	{name: "lease-checkpoint-interval", group: groupLease, key: "lease.checkpoint_interval", usage: "How often remaining lease TTLs are persisted, so a restart after a crash restores them."},
	{name: "lease-restart-grace", group: groupLease, key: "lease.restart_grace", usage: "Time added to every lease's remaining TTL after a restart so clients can reconnect (never persisted)."},

	{name: "auth-token", group: groupAuth, key: "auth.token", usage: "Token type: 'simple' or 'jwt,pub-key=PATH,priv-key=PATH,sign-method=ALG[,ttl=DURATION]'."},
	{name: "auth-token-ttl", group: groupAuth, key: "auth.token_ttl", translate: secondsOrDuration, usage: "Lifetime of a simple auth token, in seconds (or a duration such as 5m)."},
	{name: "bcrypt-cost", group: groupAuth, key: "auth.bcrypt_cost", usage: "bcrypt cost factor for password hashing (4-31)."},

	{name: "authorization-chain", group: groupPolicies, key: "authorization.chain", usage: "Comma-separated authorizers in order: policies (wasm policies with the authorize hook) and rbac."},
	{name: "policy-watch-interval", group: groupPolicies, key: "authorization.policy_watch_interval", usage: "How often the config file, policy and tenant files and policy modules are checked for changes and reloaded; 0 disables (SIGHUP still reloads)."},
	{name: "policy-config", group: groupPolicies, key: "policy_config", usage: "YAML file, or directory of *.yaml files, holding a 'policies:' list; replaces the config file's list."},
	{name: "tenant-config", group: groupPolicies, key: "tenant_config", usage: "YAML file, or directory of *.yaml files, holding a 'tenants:' list; replaces the config file's list."},
	{name: "watch-progress-notify-interval", group: groupWatch, key: "watch.progress_notify_interval", usage: "Duration of periodic watch progress notifications (0 means 10m; at least 100ms)."},
	{name: "experimental-watch-progress-notify-interval", group: groupWatch, def: "10m0s",
		usage: "Deprecated (as in etcd 3.6) name of --watch-progress-notify-interval.",
		apply: func(l *loader, source, v string) error {
			l.note(slog.LevelWarn, source+" is deprecated (as in etcd 3.6); use --watch-progress-notify-interval")
			return leafByKey["watch.progress_notify_interval"].set(l.cfg, v)
		}},

	{name: "auto-compaction-mode", group: groupMaintenance, key: "maintenance.auto_compaction_mode", usage: "Interpret --auto-compaction-retention as 'periodic' (a duration; bare numbers are hours) or 'revision' (a revision count)."},
	{name: "auto-compaction-retention", group: groupMaintenance, key: "maintenance.auto_compaction_retention", usage: "Auto compaction retention; 0 disables auto compaction."},

	{name: "panic-recovery", group: groupLogging, key: "reliability.panic_recovery", isBool: true, usage: "Answer a panicking request with an Internal error (stack logged) instead of crashing."},
	{name: "log-level", group: groupLogging, key: "logging.level", translate: etcdLogLevel, usage: "Log level: debug, info, warn or error (etcd's panic and fatal mean error)."},
	{name: "log-format", group: groupLogging, key: "logging.format", translate: etcdLogFormat, usage: "Log format: text or json (etcd's console means text)."},
	{name: "metrics", group: groupLogging, def: "basic",
		usage: "etcd's metrics level, basic or extensive; metastore always exports what extensive adds (grpc_server_handling_seconds).",
		apply: func(_ *loader, _, v string) error {
			if v != "basic" && v != "extensive" {
				return fmt.Errorf("unsupported metrics level %q: basic or extensive", v)
			}
			return nil
		}},
	{name: "warning-unary-request-duration", group: groupLogging, key: "monitoring.slow_request_threshold", usage: "Log a warning for requests slower than this; 0 disables."},
	{name: "logger", group: groupLogging, def: "zap", usage: "Accepted for etcd compatibility; only 'zap' (etcd's only logger) is valid. metastore logs with log/slog.",
		apply: func(_ *loader, _, v string) error {
			if v != "zap" {
				return fmt.Errorf("unsupported logger %q: only zap is accepted", v)
			}
			return nil
		}},
	{name: "log-outputs", group: groupLogging, def: "default", usage: "Accepted for etcd compatibility: default, stderr or systemd/journal; metastore always logs to stderr.",
		apply: func(l *loader, source, v string) error {
			for _, out := range splitList(v) {
				switch out {
				case "default", "stderr":
				case "systemd/journal":
					l.note(slog.LevelDebug, source+": logging to stderr, which journald captures under systemd")
				default:
					return fmt.Errorf("unsupported log output %q: metastore logs to stderr", out)
				}
			}
			return nil
		}},

	{name: "initial-cluster", group: groupCluster, key: "cluster.initial_cluster", usage: "Initial cluster configuration for bootstrapping (name=peer-url,...); empty means this member alone."},
	{name: "initial-cluster-state", group: groupCluster, key: "cluster.initial_cluster_state", usage: "Initial cluster state ('new' or 'existing')."},
	{name: "initial-cluster-token", group: groupCluster, key: "cluster.initial_cluster_token", usage: "Initial cluster token for the etcd cluster during bootstrap."},
	{name: "initial-advertise-peer-urls", group: groupCluster, key: "server.advertise_peer_urls", usage: "List of this member's peer URLs to advertise to the rest of the cluster."},
	{name: "listen-peer-urls", group: groupCluster, key: "server.listen_peer_urls", usage: "List of URLs to listen on for peer traffic; empty runs a single member without peers."},
	{name: "heartbeat-interval", group: groupCluster, key: "cluster.heartbeat_interval", translate: milliseconds, usage: "Time (in milliseconds) of a heartbeat interval."},
	{name: "election-timeout", group: groupCluster, key: "cluster.election_timeout", translate: milliseconds, usage: "Time (in milliseconds) for an election to timeout."},
	{name: "peer-cert-file", group: groupCluster, key: "server.peer_tls.cert_file", usage: "Path to the peer server TLS cert file."},
	{name: "peer-key-file", group: groupCluster, key: "server.peer_tls.key_file", usage: "Path to the peer server TLS key file."},
	{name: "peer-client-cert-file", group: groupCluster, key: "server.peer_tls.client_cert_file", usage: "Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required."},
	{name: "peer-client-key-file", group: groupCluster, key: "server.peer_tls.client_key_file", usage: "Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required."},
	{name: "peer-trusted-ca-file", group: groupCluster, key: "server.peer_tls.trusted_ca_file", usage: "Path to the peer server TLS trusted CA file."},
	{name: "peer-client-cert-auth", group: groupCluster, key: "server.peer_tls.client_cert_auth", isBool: true, usage: "Enable peer client cert authentication."},
	{name: "peer-cert-allowed-cn", group: groupCluster, key: "server.peer_tls.allowed_cn", usage: "Comma-separated list of allowed CNs for inter-peer TLS authentication."},
	{name: "peer-cert-allowed-hostname", group: groupCluster, key: "server.peer_tls.allowed_hostname", usage: "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication."},
	{name: "peer-auto-tls", group: groupCluster, key: "server.peer_tls.auto_tls", isBool: true, usage: "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided."},
	{name: "snapshot-count", group: groupCluster, key: "cluster.snapshot_count", usage: "Number of applied Raft entries that triggers a truncation of the log (0: never)."},
	{name: "snapshot-catchup-entries", group: groupCluster, key: "cluster.snapshot_catchup_entries", usage: "Number of entries a truncation keeps below the applied index for slow followers to catch up from."},
	{name: "experimental-snapshot-catchup-entries", group: groupCluster, def: "5000",
		usage: "Deprecated (as in etcd 3.6) name of --snapshot-catchup-entries.",
		apply: deprecatedAlias("--snapshot-catchup-entries", "cluster.snapshot_catchup_entries")},
	{name: "strict-reconfig-check", group: groupCluster, key: "cluster.strict_reconfig_check", isBool: true, usage: "Reject membership changes that would leave too few started members for a quorum."},
	{name: "experimental-initial-corrupt-check", group: groupCluster, def: "false", isBool: true,
		usage: "Deprecated (as in etcd 3.6) form of --feature-gates=InitialCorruptCheck=true.",
		apply: deprecatedAlias("--feature-gates=InitialCorruptCheck=true", "cluster.initial_corrupt_check")},
	{name: "corrupt-check-time", group: groupCluster, key: "cluster.corrupt_check_time", usage: "Duration of time between cluster corruption check passes (the leader compares HashKV with the followers'); 0 disables."},
	{name: "experimental-corrupt-check-time", group: groupCluster, def: "0s",
		usage: "Deprecated (as in etcd 3.6) name of --corrupt-check-time.",
		apply: deprecatedAlias("--corrupt-check-time", "cluster.corrupt_check_time")},
	{name: "compact-hash-check-time", group: groupCluster, key: "cluster.compact_hash_check_time", usage: "Duration of time between leader checks followers compaction hashes (with --feature-gates=CompactHashCheck=true)."},
	{name: "experimental-compact-hash-check-time", group: groupCluster, def: "1m0s",
		usage: "Deprecated (as in etcd 3.6) name of --compact-hash-check-time.",
		apply: deprecatedAlias("--compact-hash-check-time", "cluster.compact_hash_check_time")},
	{name: "experimental-compact-hash-check-enabled", group: groupCluster, def: "false", isBool: true,
		usage: "Deprecated (as in etcd 3.6) form of --feature-gates=CompactHashCheck=true.",
		apply: deprecatedAlias("--feature-gates=CompactHashCheck=true", "cluster.compact_hash_check")},
	{name: "initial-corrupt-check", group: groupCluster, key: "cluster.initial_corrupt_check", isBool: true, usage: "Compare this member's HashKV with its peers' before serving after a restart; refuse to start on a mismatch (metastore's name for etcd's --feature-gates=InitialCorruptCheck=true)."},
	{name: "compact-hash-check", group: groupCluster, key: "cluster.compact_hash_check", isBool: true, usage: "The leader checks followers' compaction hashes every --compact-hash-check-time (metastore's name for etcd's --feature-gates=CompactHashCheck=true)."},
	{name: "feature-gates", group: groupCluster, def: "",
		usage: "etcd's feature gates, key=true|false,...: InitialCorruptCheck and CompactHashCheck are used; etcd's other gates are accepted and have no effect.",
		apply: featureGates},
}

// deprecatedAlias sets key from an etcd 3.6 flag that was renamed, with
// etcd's deprecation warning.
func deprecatedAlias(replacement, key string) func(l *loader, source, v string) error {
	return func(l *loader, source, v string) error {
		l.note(slog.LevelWarn, source+" is deprecated (as in etcd 3.6); use "+replacement)
		return leafByKey[key].set(l.cfg, v)
	}
}

// etcdFeatureGates are etcd 3.6's server feature gates: the ones metastore
// acts on map to a config leaf; the others are accepted (etcd's e2e
// framework and unit files pass them) and change nothing here.
var etcdFeatureGates = map[string]string{
	"InitialCorruptCheck":          "cluster.initial_corrupt_check",
	"CompactHashCheck":             "cluster.compact_hash_check",
	"StopGRPCServiceOnDefrag":      "",
	"TxnModeWriteWithSharedBuffer": "",
	"LeaseCheckpoint":              "",
	"LeaseCheckpointPersist":       "",
	"SetMemberLocalAddr":           "",
	"AllAlpha":                     "",
	"AllBeta":                      "",
}

// featureGates parses etcd's --feature-gates, with etcd's errors.
func featureGates(l *loader, source, v string) error {
	for _, kv := range splitList(v) {
		name, val, ok := strings.Cut(kv, "=")
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if !ok {
			return fmt.Errorf("missing bool value for %s", name)
		}
		key, known := etcdFeatureGates[name]
		if !known {
			return fmt.Errorf("unrecognized feature gate: %s", name)
		}
		on, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("invalid value of %s=%s, err: %v", name, val, err)
		}
		switch {
		case key != "":
			if err := leafByKey[key].set(l.cfg, strconv.FormatBool(on)); err != nil {
				return err
			}
		case name == "AllAlpha":
			for _, k := range []string{"cluster.initial_corrupt_check", "cluster.compact_hash_check"} {
				if err := leafByKey[k].set(l.cfg, strconv.FormatBool(on)); err != nil {
					return err
				}
			}
		default:
			l.note(slog.LevelDebug, source+": feature gate "+name+" has no effect in metastore")
		}
	}
	return nil
}

var flagByName = func() map[string]*flagDef {
	m := make(map[string]*flagDef, len(flagDefs))
	for i := range flagDefs {
		m[flagDefs[i].name] = &flagDefs[i]
	}
	return m
}()

// etcdEnvName is the variable etcd reads for a flag: data-dir → ETCD_DATA_DIR.
func etcdEnvName(flag string) string {
	return "ETCD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// secondsOrDuration accepts etcd's bare seconds ("300") as well as a Go
// duration ("5m").
func secondsOrDuration(v string) (string, error) {
	if _, err := strconv.ParseUint(v, 10, 32); err == nil {
		return v + "s", nil
	}
	return v, nil
}

// etcdLogLevel maps etcd's zap levels that slog lacks to the nearest one.
func etcdLogLevel(v string) (string, error) {
	switch v {
	case "dpanic", "panic", "fatal":
		return "error", nil
	}
	return v, nil
}

// etcdLogFormat maps etcd's console format to our text format.
func etcdLogFormat(v string) (string, error) {
	if v == "console" {
		return "text", nil
	}
	return v, nil
}

// PrintFlags writes the help text of every flag, grouped as etcd's help
// is, with each setting's default, YAML key and environment variable.
func PrintFlags(w io.Writer) {
	def := Default()
	for _, group := range flagGroups {
		fmt.Fprintf(w, "\n%s:\n", group)
		for i := range flagDefs {
			f := &flagDefs[i]
			if f.group != group {
				continue
			}
			dflt := f.def
			if f.key != "" {
				dflt = leafByKey[f.key].format(def)
			}
			fmt.Fprintf(w, "  --%s '%s'\n      %s\n", f.name, dflt, f.usage)
			switch {
			case f.key != "":
				fmt.Fprintf(w, "      (YAML %s, env %s)\n", f.key, envName(f.key))
			case f.name == configFileFlag:
				fmt.Fprintf(w, "      (env %s)\n", envConfigFile)
			}
		}
	}
}

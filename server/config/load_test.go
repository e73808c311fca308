package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() is invalid:\n%v", err)
	}
	cfg, notes, err := Load(nil, nil)
	if err != nil {
		t.Fatalf("Load(nil, nil): %v", err)
	}
	if len(notes) != 0 {
		t.Errorf("unexpected notes: %v", notes)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("Load with no input = %+v, want Default()", cfg)
	}
}

// TestLayers checks each layer alone and that each overrides the one
// before: YAML < ETCD_ env < METASTORE_ env < flags.
func TestLayers(t *testing.T) {
	certFile, keyFile := writeFile(t, "c.pem", ""), writeFile(t, "k.pem", "")
	yamlFile := writeFile(t, "m.yaml", `
name: from-yaml
data_dir: /var/lib/yaml
server:
  listen_client_urls: [http://127.0.0.1:0, "https://[::1]:2379"]
  tls: {cert_file: `+certFile+`, key_file: `+keyFile+`}
limits:
  max_txn_ops: 200
  max_request_bytes: 4MiB
  quota_backend_bytes: 8GiB
grpc:
  keepalive_interval: 1h
maintenance:
  auto_compaction_mode: revision
  auto_compaction_retention: "1000"
logging: {level: debug, format: json}
`)
	fromYAML := func(c *Config) {
		c.Name, c.DataDir = "from-yaml", "/var/lib/yaml"
		c.Server.ListenClientURLs = []string{"http://127.0.0.1:0", "https://[::1]:2379"}
		c.Server.TLS = TLS{CertFile: certFile, KeyFile: keyFile}
		c.Limits = Limits{MaxTxnOps: 200, MaxRequestBytes: 4 << 20, QuotaBackendBytes: 8 << 30}
		c.GRPC.KeepaliveInterval = time.Hour
		c.Maintenance = Maintenance{AutoCompactionMode: "revision", AutoCompactionRetention: "1000"}
		c.Logging = Logging{Level: "debug", Format: "json"}
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want func(c *Config) // applied to Default()
	}{{
		name: "yaml",
		args: []string{"--config-file", yamlFile},
		want: fromYAML,
	}, {
		name: "env overrides yaml",
		args: []string{"--config-file", yamlFile},
		env: []string{
			"METASTORE_LIMITS_MAX_TXN_OPS=250",
			"METASTORE_DATA_DIR=/var/lib/env",
			"METASTORE_LOGGING_LEVEL=warn",
			"METASTORE_SERVER_ADVERTISE_CLIENT_URLS=http://a.example:2379, http://b.example:2379",
			"METASTORE_LIMITS_QUOTA_BACKEND_BYTES=", // empty: ignored, as etcd does
		},
		want: func(c *Config) {
			fromYAML(c)
			c.Limits.MaxTxnOps = 250
			c.DataDir = "/var/lib/env"
			c.Logging.Level = "warn"
			c.Server.AdvertiseClientURLs = []string{"http://a.example:2379", "http://b.example:2379"}
		},
	}, {
		name: "METASTORE_ env overrides ETCD_ env",
		env:  []string{"ETCD_MAX_TXN_OPS=10", "ETCD_NAME=etcd-name", "METASTORE_LIMITS_MAX_TXN_OPS=20"},
		want: func(c *Config) { c.Limits.MaxTxnOps, c.Name = 20, "etcd-name" },
	}, {
		name: "flags override env",
		args: []string{"--config-file", yamlFile, "--max-txn-ops=300", "--data-dir", "/var/lib/flag"},
		env:  []string{"METASTORE_LIMITS_MAX_TXN_OPS=250", "ETCD_MAX_TXN_OPS=10", "METASTORE_NAME=env"},
		want: func(c *Config) {
			fromYAML(c)
			c.Limits.MaxTxnOps, c.DataDir, c.Name = 300, "/var/lib/flag", "env"
		},
	}, {
		name: "last flag wins",
		args: []string{"--max-txn-ops=1", "-max-txn-ops", "300"},
		want: func(c *Config) { c.Limits.MaxTxnOps = 300 },
	}, {
		name: "config file from env",
		env:  []string{"METASTORE_CONFIG_FILE=" + yamlFile},
		want: fromYAML,
	}, {
		name: "config file from etcd env",
		env:  []string{"ETCD_CONFIG_FILE=" + yamlFile},
		want: fromYAML,
	}, {
		name: "etcd flags",
		args: []string{
			"--name", "s1", "--data-dir", "/d",
			"--listen-client-urls", "http://127.0.0.1:2379,http://10.0.0.1:2379",
			"--advertise-client-urls", "http://10.0.0.1:2379",
			"--listen-metrics-urls", "http://127.0.0.1:2381",
			"--max-request-bytes", "10485760", "--quota-backend-bytes", "4294967296",
			"--max-concurrent-streams", "100", "--grpc-keepalive-timeout", "10s",
			"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1",
			"--auth-token-ttl", "60", "--bcrypt-cost", "4",
			"--log-level", "fatal", "--log-format", "console", "--logger=zap", "--log-outputs=stderr",
			"--warning-unary-request-duration", "300ms", "--metrics", "extensive",
			"--initial-cluster", "s1=http://127.0.0.1:2380", "--initial-cluster-state", "new",
			"--initial-cluster-token", "tok", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--listen-peer-urls", "http://127.0.0.1:2380", "--heartbeat-interval", "100",
			"--election-timeout", "1000", "--snapshot-count", "5000", "--enable-grpc-gateway",
			"--strict-reconfig-check", "--max-learners", "2",
		},
		want: func(c *Config) {
			c.Name, c.DataDir = "s1", "/d"
			c.Cluster.MaxLearners, c.Cluster.SnapshotCount = 2, 5000
			c.Cluster.InitialCluster, c.Cluster.InitialClusterToken = "s1=http://127.0.0.1:2380", "tok"
			c.Server.ListenPeerURLs = []string{"http://127.0.0.1:2380"}
			c.Server.ListenClientURLs = []string{"http://127.0.0.1:2379", "http://10.0.0.1:2379"}
			c.Server.AdvertisePeerURLs = []string{"http://127.0.0.1:2380"}
			c.Server.AdvertiseClientURLs = []string{"http://10.0.0.1:2379"}
			c.Server.ListenMetricsURLs = []string{"http://127.0.0.1:2381"}
			c.Limits.MaxRequestBytes, c.Limits.QuotaBackendBytes = 10<<20, 4<<30
			c.GRPC.MaxConcurrentStreams, c.GRPC.KeepaliveTimeout = 100, 10*time.Second
			c.Maintenance.AutoCompactionRetention = "1"
			c.Auth.TokenTTL, c.Auth.BcryptCost = time.Minute, 4
			c.Logging = Logging{Level: "error", Format: "text"}
			c.Monitoring.SlowRequestThreshold = 300 * time.Millisecond
		},
	}, {
		name: "gateway off by flag",
		args: []string{"--enable-grpc-gateway=false"},
		want: func(c *Config) { c.Server.EnableGRPCGateway = false },
	}, {
		name: "gateway off by env",
		env:  []string{"ETCD_ENABLE_GRPC_GATEWAY=false"},
		want: func(c *Config) { c.Server.EnableGRPCGateway = false },
	}, {
		name: "gateway off by metastore env",
		env:  []string{"METASTORE_SERVER_ENABLE_GRPC_GATEWAY=false"},
		want: func(c *Config) { c.Server.EnableGRPCGateway = false },
	}, {
		name: "stream workers from env and flag",
		args: []string{"--grpc-stream-workers", "0"},
		env:  []string{"METASTORE_GRPC_STREAM_WORKERS=16", "METASTORE_GRPC_KEEPALIVE_TIMEOUT=1s"},
		want: func(c *Config) {
			c.GRPC.StreamWorkers, c.GRPC.KeepaliveTimeout = 0, time.Second
		},
	}, {
		name: "etcd env",
		env:  []string{"ETCD_NAME=s1", "ETCD_DATA_DIR=/d", "ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379", "ETCD_INITIAL_CLUSTER=s1=http://127.0.0.1:2380"},
		want: func(c *Config) {
			c.Cluster.InitialCluster = "s1=http://127.0.0.1:2380"
			c.Name, c.DataDir = "s1", "/d"
			c.Server.ListenClientURLs = []string{"http://0.0.0.0:2379"}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := Load(tt.args, tt.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(want)
			got.ConfigFile = "" // which file was read is not a setting
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestNotes(t *testing.T) {
	_, notes, err := Load(
		[]string{"--experimental-initial-corrupt-check=true", "--name=n"},
		// etcd's runtime variables (its e2e framework sets them) pass quietly.
		[]string{"ETCD_NAME=other", "ETCD_SERVICE_HOST=10.0.0.1", "METASTORE_PORT=tcp://10.0.0.1:2379",
			"ETCD_UNSUPPORTED_ARCH=amd64", "ETCD_VERIFY=all"},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []Note{
		{slog.LevelWarn, "environment variable ETCD_NAME is shadowed by flag --name"},
		{slog.LevelWarn, "ignoring unrecognized environment variable ETCD_SERVICE_HOST"},
		{slog.LevelWarn, "ignoring unrecognized environment variable METASTORE_PORT"},
		{slog.LevelWarn, "--experimental-initial-corrupt-check is deprecated (as in etcd 3.6); use --feature-gates=InitialCorruptCheck=true"},
	}
	if !reflect.DeepEqual(notes, want) {
		t.Errorf("notes:\n%v\nwant\n%v", notes, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string // written to a file passed with --config-file when set
		args  []string
		env   []string
		usage bool     // a *UsageError is expected
		want  []string // substrings, each on its own line of the error
	}{{
		name: "unknown yaml keys",
		yaml: "limits:\n  max_txn_opz: 1\n  max-request-bytes: 1\nfoo: bar\n",
		want: []string{
			`:2: limits.max_txn_opz: unknown key`,
			`:3: limits.max-request-bytes: unknown key (did you mean "limits.max_request_bytes"?)`,
			`:4: foo: unknown key`,
		},
	}, {
		name: "yaml shape and values",
		yaml: "limits: 5\ngrpc:\n  keepalive_timeout: forever\n  max_concurrent_streams: [1]\nname: a\nname: b\nauth:\n  bcrypt_cost: 1.5\nserver: {listen_client_urls: [{a: b}]}\n",
		want: []string{
			`:1: limits: expected a mapping of settings, got "5"`,
			`:3: grpc.keepalive_timeout: invalid duration "forever"`,
			`:4: grpc.max_concurrent_streams: expected a single value, got a list`,
			`:6: name: duplicate key`,
			`:8: auth.bcrypt_cost: invalid integer "1.5"`,
			`:9: server.listen_client_urls: list items must be single values, got a mapping`,
		},
	}, {
		name: "yaml syntax",
		yaml: "limits: [\n",
		want: []string{"yaml: line"},
	}, {
		name: "missing config file",
		args: []string{"--config-file", "/nonexistent/metastore.yaml"},
		want: []string{"config file: open /nonexistent/metastore.yaml"},
	}, {
		name: "bad values in every layer, all reported",
		yaml: "limits: {max_txn_ops: -1}\n",
		args: []string{"--max-request-bytes=lots", "--log-format=xml", "--logger=capnslog", "--metrics=all"},
		env:  []string{"METASTORE_GRPC_KEEPALIVE_MIN_TIME=5", "ETCD_BCRYPT_COST=x"},
		want: []string{
			`--max-request-bytes: invalid size "lots"`,
			`--logger: unsupported logger "capnslog"`,
			`--metrics: unsupported metrics level "all"`,
			`METASTORE_GRPC_KEEPALIVE_MIN_TIME: invalid duration "5"`,
			`ETCD_BCRYPT_COST: invalid integer "x"`,
			`limits.max_txn_ops: must be > 0, got -1`,
			`logging.format: unknown format "xml"`,
		},
	}, {
		name: "bad reconfiguration settings",
		args: []string{"--strict-reconfig-check=maybe", "--max-learners=-1"},
		want: []string{
			`--strict-reconfig-check: invalid boolean "maybe"`,
			"cluster.max_learners: must be >= 0, got -1",
		},
	}, {
		name: "initial cluster without this member's advertised URLs",
		args: []string{"--name=a", "--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380"},
		want: []string{"cluster.initial_cluster: --initial-cluster has http://10.0.0.1:2380 but missing from --initial-advertise-peer-urls=http://localhost:2380"},
	}, {
		name: "initial cluster with a duplicate URL",
		args: []string{"--name=a", "--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.1:2380"},
		want: []string{"cluster.initial_cluster: initial cluster a=http://10.0.0.1:2380,b=http://10.0.0.1:2380 has duplicate url"},
	}, {
		name: "election timeout too short",
		args: []string{"--heartbeat-interval=300", "--election-timeout=1000"},
		want: []string{"--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"},
	}, {
		name: "https peer URLs without certificates",
		args: []string{"--listen-peer-urls=https://127.0.0.1:2380", "--initial-advertise-peer-urls=https://127.0.0.1:2380"},
		want: []string{"server.peer_tls: cert_file and key_file (or auto_tls) are required for https:// peer URLs"},
	}, {
		name: "initial cluster without this member",
		env:  []string{"ETCD_INITIAL_CLUSTER=infra0=http://10.0.0.1:2380"},
		want: []string{`cluster.initial_cluster: couldn't find local name "default" in the initial cluster configuration`},
	}, {
		name: "bad etcd compatibility values",
		args: []string{"--initial-cluster-state=maybe", "--heartbeat-interval=fast", "--listen-peer-urls=unix://x", "--log-outputs=/var/log/etcd.log"},
		want: []string{
			`cluster.initial_cluster_state: invalid value "maybe"`,
			`--heartbeat-interval: invalid duration "fast"`,
			`server.listen_peer_urls: URL "unix://x": must have a host and a port`,
			`--log-outputs: unsupported log output "/var/log/etcd.log"`,
		},
	}, {
		name:  "unknown flag",
		args:  []string{"--no-such-flag"},
		usage: true,
		want:  []string{"flag provided but not defined: -no-such-flag"},
	}, {
		name:  "stray argument",
		args:  []string{"--name", "a", "serve"},
		usage: true,
		want:  []string{`unexpected argument "serve"`},
	}, {
		name:  "flag without value",
		args:  []string{"--name"},
		usage: true,
		want:  []string{"flag needs an argument: -name"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				args = append([]string{"--config-file", writeFile(t, "m.yaml", tt.yaml)}, args...)
			}
			cfg, _, err := Load(args, tt.env)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", cfg)
			}
			var ue *UsageError
			if errors.As(err, &ue) != tt.usage {
				t.Errorf("UsageError = %v, want %v: %v", !tt.usage, tt.usage, err)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tt.want {
				if !containsLine(lines, w) {
					t.Errorf("no error line contains %q; got:\n%v", w, err)
				}
			}
			if len(tt.want) > 1 && len(lines) != len(tt.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(lines), len(tt.want), err)
			}
		})
	}
}

func containsLine(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		if _, _, err := Load([]string{arg}, nil); !errors.Is(err, ErrHelp) {
			t.Errorf("Load(%q) = %v, want ErrHelp", arg, err)
		}
	}
}

func TestPrintFlags(t *testing.T) {
	var b strings.Builder
	PrintFlags(&b)
	out := b.String()
	for _, f := range flagDefs {
		if !strings.Contains(out, "--"+f.name+" '") {
			t.Errorf("help does not list --%s", f.name)
		}
	}
	for _, want := range []string{
		"--max-txn-ops '128'",
		"(YAML limits.max_txn_ops, env METASTORE_LIMITS_MAX_TXN_OPS)",
		"--listen-client-urls 'http://127.0.0.1:2379'",
		"(env METASTORE_CONFIG_FILE)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// TestEveryKeyHasFlagAndEnv keeps the three layers in step: each YAML key
// has a flag, and no two keys share an environment variable.
func TestEveryKeyHasFlagAndEnv(t *testing.T) {
	flagged := map[string]bool{}
	for _, f := range flagDefs {
		if f.key != "" {
			if leafByKey[f.key] == nil {
				t.Errorf("flag --%s sets unknown key %q", f.name, f.key)
			}
			flagged[f.key] = true
		}
		if (f.key == "") == (f.apply == nil) {
			t.Errorf("flag --%s must have exactly one of key and apply", f.name)
		}
	}
	envs := map[string]string{}
	for _, l := range leaves {
		if !flagged[l.key] {
			t.Errorf("key %s has no flag", l.key)
		}
		if other, dup := envs[envName(l.key)]; dup {
			t.Errorf("keys %s and %s share %s", l.key, other, envName(l.key))
		}
		envs[envName(l.key)] = l.key
		// Every leaf must round-trip through its own syntax.
		c := Default()
		if err := l.set(c, l.format(Default())); err != nil {
			t.Errorf("%s: default %q does not parse: %v", l.key, l.format(Default()), err)
		}
	}
}

// TestWatchProgressNotifyInterval: etcd's flag, its deprecated 3.5 name (with
// a note), the environment variables and the YAML key all set the interval.
func TestWatchProgressNotifyInterval(t *testing.T) {
	yamlFile := writeFile(t, "m.yaml", "watch:\n  progress_notify_interval: 7s\n")
	for _, tc := range []struct {
		args []string
		env  []string
		want time.Duration
		note bool
	}{
		{want: 10 * time.Minute},
		{args: []string{"--watch-progress-notify-interval", "5s"}, want: 5 * time.Second},
		{args: []string{"--experimental-watch-progress-notify-interval", "2s"}, want: 2 * time.Second, note: true},
		{env: []string{"ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL=3s"}, want: 3 * time.Second},
		{env: []string{"METASTORE_WATCH_PROGRESS_NOTIFY_INTERVAL=4s"}, want: 4 * time.Second},
		{args: []string{"--config-file", yamlFile}, want: 7 * time.Second},
	} {
		cfg, notes, err := Load(tc.args, tc.env)
		if err != nil {
			t.Fatalf("Load(%v, %v): %v", tc.args, tc.env, err)
		}
		if cfg.Watch.ProgressNotifyInterval != tc.want {
			t.Errorf("Load(%v, %v): interval %v, want %v", tc.args, tc.env, cfg.Watch.ProgressNotifyInterval, tc.want)
		}
		if got := len(notes) > 0; got != tc.note {
			t.Errorf("Load(%v, %v): notes %v", tc.args, tc.env, notes)
		}
	}
	if _, _, err := Load([]string{"--watch-progress-notify-interval", "-1s"}, nil); err == nil || !strings.Contains(err.Error(), "watch.progress_notify_interval: must be >= 0") {
		t.Errorf("negative interval: %v", err)
	}
}

// TestLoadAsEtcd: invoked under etcd's name the log format defaults to
// etcd's JSON; anything the operator sets still wins over that default.
func TestLoadAsEtcd(t *testing.T) {
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(yamlFile, []byte("logging:\n  format: text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		prog string
		args []string
		env  []string
		want string
	}{
		{prog: "metastore", want: "text"},
		{prog: "etcd", want: "json"},
		{prog: "etcd", args: []string{"--log-format=console"}, want: "text"},
		{prog: "etcd", env: []string{"ETCD_LOG_FORMAT=console"}, want: "text"},
		{prog: "etcd", args: []string{"--config-file", yamlFile}, want: "text"},
		{prog: "metastore", args: []string{"--log-format=json"}, want: "json"},
	} {
		c, _, err := LoadAs(tc.prog, tc.args, tc.env)
		if err != nil {
			t.Fatalf("%s %v %v: %v", tc.prog, tc.args, tc.env, err)
		}
		if c.Logging.Format != tc.want {
			t.Errorf("%s %v %v: format %q, want %q", tc.prog, tc.args, tc.env, c.Logging.Format, tc.want)
		}
	}
}

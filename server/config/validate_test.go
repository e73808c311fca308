package config

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidateListsEveryProblem(t *testing.T) {
	c := Default()
	c.Name = ""
	c.Limits.MaxTxnOps = -1
	c.Limits.MaxRequestBytes = 0
	c.Limits.QuotaBackendBytes = -5
	c.GRPC.MaxConcurrentStreams = 0
	c.GRPC.KeepaliveTimeout = -time.Second
	c.GRPC.StreamWorkers = 1 << 20
	c.Auth.BcryptCost = 3
	c.Maintenance.AutoCompactionMode = "daily"
	c.Logging = Logging{Level: "trace", Format: "xml"}
	c.Monitoring.SlowRequestThreshold = -1

	err := c.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	want := []string{
		"name: must not be empty",
		"grpc.max_concurrent_streams: must be > 0, got 0",
		"grpc.keepalive_timeout: must be >= 0, got -1s",
		"grpc.stream_workers: must be at most 65536, got 1048576",
		"limits.max_txn_ops: must be > 0, got -1",
		"limits.max_request_bytes: must be > 0 and <= 2147483647, got 0",
		"limits.quota_backend_bytes: must be >= 0 (0 means the default 2GiB), got -5",
		"auth.bcrypt_cost: must be between 4 and 31, got 3",
		`maintenance.auto_compaction_mode: unknown mode "daily" (want periodic or revision)`,
		`logging.level: unknown level "trace" (want debug, info, warn or error)`,
		`logging.format: unknown format "xml" (want text or json)`,
		"monitoring.slow_request_threshold: must be >= 0, got -1ns",
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("Validate:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if n := len(unjoin(err)); n != len(want) {
		t.Errorf("Validate joined %d errors, want %d", n, len(want))
	}
}

func TestValidateFields(t *testing.T) {
	cert, key, ca := writeFile(t, "c.pem", ""), writeFile(t, "k.pem", ""), writeFile(t, "ca.pem", "")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string // empty: valid
	}{
		{"port 0 and IPv6", func(c *Config) {
			c.Server.ListenClientURLs = []string{"http://127.0.0.1:0", "http://[::1]:2379", "http://0.0.0.0:2379", "http://localhost:2379", "http://:2379"}
		}, nil},
		// etcd's Unix sockets: the socket file is named host:port (etcd's
		// e2e tests use unix://localhost:20001 peers); unixs is TLS.
		{"unix sockets", func(c *Config) {
			c.Server.ListenClientURLs = []string{"unix://localhost:2379", "unix://node1.example.com:1"}
			c.Server.AdvertiseClientURLs = []string{"unix://localhost:2379"}
			c.Server.ListenPeerURLs = []string{"unix://localhost:2380"}
			c.Server.AdvertisePeerURLs = []string{"unix://localhost:2380"}
			c.Cluster.InitialCluster = "default=unix://localhost:2380"
		}, nil},
		{"unixs needs TLS", func(c *Config) {
			c.Server.ListenClientURLs = []string{"unixs://localhost:2379", "ftp://localhost:1"}
			c.Server.ListenPeerURLs = []string{"unixs://localhost:2380"}
			c.Server.AdvertisePeerURLs = []string{"unixs://localhost:2380"}
			c.Cluster.InitialCluster = "default=unixs://localhost:2380"
		}, []string{
			`server.listen_client_urls: URL "ftp://localhost:1": scheme must be http, https, unix or unixs`,
			"server.tls.cert_file: required to serve unixs://localhost:2379",
			"server.tls.key_file: required to serve unixs://localhost:2379",
			"server.peer_tls: cert_file and key_file (or auto_tls) are required for https:// peer URLs",
		}},
		{"advertise names a host", func(c *Config) {
			c.Server.AdvertiseClientURLs = []string{"http://node1.example.com:2379", "http://:2379"}
		}, []string{`server.advertise_client_urls: URL "http://:2379": must name a host`}},
		{"bad listen URLs", func(c *Config) {
			c.Server.ListenClientURLs = []string{"127.0.0.1:2379", "unix:///tmp/s", "http://127.0.0.1", "http://node1.example.com:2379", "http://127.0.0.1:2379/v3", "http://127.0.0.1:70000"}
		}, []string{
			`server.listen_client_urls: URL "127.0.0.1:2379": scheme must be http, https, unix or unixs`,
			`server.listen_client_urls: URL "unix:///tmp/s": must be scheme://host:port with no user, path, query or fragment`,
			`server.listen_client_urls: URL "http://127.0.0.1": must have a host and a port`,
			`server.listen_client_urls: URL "http://node1.example.com:2379": host must be an IP address or localhost to listen on`,
			`server.listen_client_urls: URL "http://127.0.0.1:2379/v3": must be scheme://host:port with no user, path, query or fragment`,
			`server.listen_client_urls: URL "http://127.0.0.1:70000": invalid port "70000"`,
		}},
		{"no listen URLs", func(c *Config) { c.Server.ListenClientURLs = nil },
			[]string{"server.listen_client_urls: must list at least one URL"}},
		{"https needs cert and key", func(c *Config) {
			c.Server.ListenMetricsURLs = []string{"https://127.0.0.1:2381"}
		}, []string{
			"server.tls.cert_file: required to serve https://127.0.0.1:2381",
			"server.tls.key_file: required to serve https://127.0.0.1:2381",
		}},
		{"mTLS", func(c *Config) {
			c.Server.ListenClientURLs = []string{"https://127.0.0.1:2379"}
			c.Server.TLS = TLS{CertFile: cert, KeyFile: key, TrustedCAFile: ca, ClientCertAuth: true}
		}, nil},
		{"TLS misconfigured", func(c *Config) {
			c.Server.TLS = TLS{CertFile: missing, ClientCertAuth: true}
		}, []string{
			"server.tls: cert_file and key_file must be given together",
			"server.tls.client_cert_auth: requires server.tls.trusted_ca_file",
			"server.tls.client_cert_auth: requires an https:// listen URL",
			"server.tls.cert_file: stat " + missing + ": no such file or directory",
		}},
		{"jwt", func(c *Config) {
			c.Auth.Token = "jwt,pub-key=" + cert + ",priv-key=" + key + ",sign-method=RS256,ttl=10m"
		}, nil},
		{"jwt hmac", func(c *Config) { c.Auth.Token = "jwt,priv-key=" + key + ",sign-method=HS256" }, nil},
		{"bad tokens", func(c *Config) { c.Auth.Token = "jwt,sign-method=RS256,ttl=-1m"; c.Auth.TokenTTL = 0 }, []string{
			"auth.token: jwt sign-method RS256 requires pub-key",
			`auth.token: jwt ttl must be a positive duration, got "-1m"`,
			"auth.token_ttl: must be > 0, got 0s",
		}},
		{"unknown token", func(c *Config) { c.Auth.Token = "oauth" },
			[]string{`auth.token: unknown token type "oauth" (want simple or jwt,...)`}},
		{"retention hours", func(c *Config) { c.Maintenance.AutoCompactionRetention = "72" }, nil},
		{"retention duration", func(c *Config) { c.Maintenance.AutoCompactionRetention = "30m" }, nil},
		{"retention revisions", func(c *Config) {
			c.Maintenance = Maintenance{AutoCompactionMode: "revision", AutoCompactionRetention: "10000"}
		}, nil},
		{"bad periodic retention", func(c *Config) { c.Maintenance.AutoCompactionRetention = "-1h" },
			[]string{`maintenance.auto_compaction_retention: invalid period "-1h" for periodic mode (want a duration such as 1h or 30m, or a number of hours)`}},
		{"request bytes over gRPC's limit", func(c *Config) { c.Limits.MaxRequestBytes = math.MaxInt32 + 1 },
			[]string{"limits.max_request_bytes: must be > 0 and <= 2147483647, got 2147483648"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			err := c.Validate()
			var got []string
			for _, e := range unjoin(err) {
				if e != nil {
					got = append(got, e.Error())
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Validate:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestCompactionRetention(t *testing.T) {
	tests := []struct {
		mode, retention string
		period          time.Duration
		revisions       int64
	}{
		{"periodic", "0", 0, 0},
		{"periodic", "1", time.Hour, 0},
		{"periodic", "5m", 5 * time.Minute, 0},
		{"revision", "1000", 0, 1000},
	}
	for _, tt := range tests {
		p, r, err := Maintenance{AutoCompactionMode: tt.mode, AutoCompactionRetention: tt.retention}.CompactionRetention()
		if err != nil || p != tt.period || r != tt.revisions {
			t.Errorf("%s %q = %v, %d, %v; want %v, %d", tt.mode, tt.retention, p, r, err, tt.period, tt.revisions)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		bits int
		want int64
		err  string
	}{
		{"1572864", 64, 1572864, ""},
		{"-1", 64, -1, ""},
		{"1.5MiB", 64, 1572864, ""},
		{"256MiB", 64, 256 << 20, ""},
		{"2 GiB", 64, 2 << 30, ""},
		{"8gib", 64, 8 << 30, ""},
		{"1KB", 64, 1000, ""},
		{"10B", 64, 10, ""},
		{"1TiB", 64, 1 << 40, ""},
		{"0.5B", 64, 0, "not a whole number of bytes"},
		{"1.5", 64, 0, "invalid size"},
		{"1M", 64, 0, "invalid size"},
		{"MiB", 64, 0, "invalid size"},
		{"1e3KiB", 64, 0, "invalid size"},
		{"1/2MiB", 64, 0, "invalid size"},
		{"8EiB", 64, 0, "invalid size"},
		{"9000000TiB", 64, 0, "out of range"},
		{"4GiB", 32, 0, "out of range"},
		{"99999999999999999999", 64, 0, "out of range"},
	}
	for _, tt := range tests {
		got, err := parseInt(tt.in, tt.bits, true)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseInt(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseInt(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	if _, err := parseInt("1MiB", 64, false); err == nil {
		t.Error("units accepted for a plain integer")
	}
}

func TestSlogLevel(t *testing.T) {
	if got := (Logging{Level: "warn"}).SlogLevel(); got.String() != "WARN" {
		t.Errorf("SlogLevel(warn) = %v", got)
	}
}

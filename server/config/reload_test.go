package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// issue20Settings are the connection-lifetime, send-limit and per-kind
// rate-limit settings, each with a non-default value in every spelling:
// the YAML key, the METASTORE_ variable and the flag.
var issue20Settings = []struct {
	key, flag, value string
	want             func(c *Config)
}{
	{"grpc.max_connection_idle", "grpc-max-connection-idle", "15s", func(c *Config) { c.GRPC.MaxConnectionIdle = 15 * time.Second }},
	{"grpc.max_connection_age", "grpc-max-connection-age", "10m", func(c *Config) { c.GRPC.MaxConnectionAge = 10 * time.Minute }},
	{"grpc.max_connection_age_grace", "grpc-max-connection-age-grace", "5s", func(c *Config) {
		c.GRPC.MaxConnectionAgeGrace = 5 * time.Second
		c.GRPC.MaxConnectionAge = time.Hour // the grace needs an age (set in every source below)
	}},
	{"limits.max_send_msg_size", "max-send-msg-size", "4MiB", func(c *Config) { c.Limits.MaxSendMsgSize = 4 << 20 }},
	{"limits.unary_rate_limit", "unary-rate-limit", "500", func(c *Config) { c.Limits.UnaryRateLimit = 500 }},
	{"limits.unary_rate_burst", "unary-rate-burst", "600", func(c *Config) { c.Limits.UnaryRateBurst = 600 }},
	{"limits.stream_rate_limit", "stream-rate-limit", "20", func(c *Config) { c.Limits.StreamRateLimit = 20 }},
	{"limits.stream_rate_burst", "stream-rate-burst", "30", func(c *Config) { c.Limits.StreamRateBurst = 30 }},
}

// TestIssue20SettingsEverySource sets each new setting by YAML, by its
// METASTORE_ variable and by its flag, and checks the layers' order on it.
func TestIssue20SettingsEverySource(t *testing.T) {
	for _, s := range issue20Settings {
		section, leaf, _ := strings.Cut(s.key, ".")
		extraYAML, extraEnv, extraArgs := "", []string(nil), []string(nil)
		if s.key == "grpc.max_connection_age_grace" {
			extraYAML, extraEnv, extraArgs = "  max_connection_age: 1h\n", []string{"METASTORE_GRPC_MAX_CONNECTION_AGE=1h"}, []string{"--grpc-max-connection-age=1h"}
		}
		yamlFile := writeFile(t, "m.yaml", section+":\n  "+leaf+": "+s.value+"\n"+extraYAML)
		env := envName(s.key)
		other := "1" // a valid value below the flag's
		if leafByKey[s.key].typ == durationType {
			other = "1s"
		}
		if want := "METASTORE_" + strings.ToUpper(section+"_"+leaf); env != want {
			t.Fatalf("%s: variable %s, want %s", s.key, env, want)
		}
		for _, src := range []struct {
			name string
			args []string
			env  []string
		}{
			{"yaml", []string{"--config-file", yamlFile}, nil},
			{"env", extraArgs, append([]string{env + "=" + s.value}, extraEnv...)},
			{"flag", append([]string{"--" + s.flag, s.value}, extraArgs...), nil},
			{"flag over env over yaml", append([]string{"--config-file", yamlFile, "--" + s.flag + "=" + s.value}, extraArgs...),
				append([]string{env + "=" + other}, extraEnv...)},
		} {
			t.Run(s.key+"/"+src.name, func(t *testing.T) {
				got, _, err := Load(src.args, src.env)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				got.ConfigFile = ""
				want := Default()
				s.want(want)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got  %+v\nwant %+v", got, want)
				}
			})
		}
		// A bad value is refused with the key named, by every source.
		for _, src := range [][2][]string{
			{{"--" + s.flag, "-1"}, nil},
			{nil, {env + "=-1"}},
		} {
			_, _, err := Load(src[0], src[1])
			if err == nil || !strings.Contains(err.Error(), s.key) && !strings.Contains(err.Error(), s.flag) && !strings.Contains(err.Error(), env) {
				t.Errorf("%s = -1 (%v): err %v, want one naming the setting", s.key, src, err)
			}
		}
	}
}

func TestIssue20Validate(t *testing.T) {
	c := Default()
	c.GRPC.MaxConnectionAgeGrace = time.Second // without an age
	c.Limits.MaxSendMsgSize = 1 << 31
	err := c.Validate()
	for _, want := range []string{
		"grpc.max_connection_age_grace: has no effect without grpc.max_connection_age",
		"limits.max_send_msg_size: must be >= 0 (0 means no limit) and <= 2147483647, got 2147483648",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
}

// TestRestartRequired: a reload tells the settings it applies at once from
// those that take a restart, by key.
func TestRestartRequired(t *testing.T) {
	running := Default()
	next := Default()
	next.Limits.RateLimit, next.Limits.UserRateBurst = 10, 20
	next.Limits.UnaryRateLimit, next.Limits.StreamRateLimit, next.Limits.StreamRateBurst = 1, 2, 3
	next.Limits.MaxConnections = 7
	next.Monitoring.SlowRequestThreshold = time.Second
	next.Logging = Logging{Level: "debug", Format: "json"}
	next.Policies = []Policy{{Name: "p"}}
	next.Tenants = []Tenant{{Name: "t"}}
	next.Authorization.Chain = []string{"rbac"}
	next.PolicyConfig, next.TenantConfig, next.ConfigFile = "/etc/p.yaml", "/etc/t.yaml", "/etc/m.yaml"
	if got := RestartRequired(running, next); len(got) != 0 {
		t.Errorf("reloadable settings reported as needing a restart: %v", got)
	}
	next.Limits.MaxTxnOps++
	next.GRPC.MaxConnectionAge = time.Minute
	next.Limits.MaxSendMsgSize = 1 << 20
	next.Server.ListenClientURLs = []string{"http://127.0.0.1:1"}
	want := []string{"grpc.max_connection_age", "limits.max_send_msg_size", "limits.max_txn_ops", "server.listen_client_urls"}
	if got := RestartRequired(running, next); !slices.Equal(got, want) {
		t.Errorf("RestartRequired = %v, want %v", got, want)
	}
	for _, k := range []string{"limits.rate_limit", "logging.format", "limits.max_connections"} {
		if !Reloadable(k) {
			t.Errorf("%s is not reloadable", k)
		}
	}
	for k := range reloadable {
		if leafByKey[k] == nil {
			t.Errorf("reloadable key %s is not a setting", k)
		}
	}
}

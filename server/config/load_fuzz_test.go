package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary YAML, flags and environment to the loader. It
// must never panic; when it accepts, the result must pass Validate, and
// loading the same input again must give the same Config (no hidden
// state). Flags and environment entries are split on NUL bytes.
func FuzzLoad(f *testing.F) {
	template, err := os.ReadFile(filepath.Join("..", "..", "configs", "metastore.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(template, "", "")
	f.Add([]byte("name: n1\nlimits:\n  quota-backend-bytes: 2GiB\n"), "--max-txn-ops\x00256", "METASTORE_LOG_LEVEL=debug")
	f.Add([]byte("grpc:\n  keepalive-interval: 5s\nunknown: 1\n"), "--listen-client-urls=http://127.0.0.1:0", "ETCD_NAME=x\x00ETCD_DATA_DIR=/tmp/d")
	f.Add([]byte("maintenance:\n  auto-compaction-mode: revision\n  auto-compaction-retention: \"10\"\n"), "--auto-compaction-retention=1h", "")
	f.Add([]byte("a: &x {b: *x}\n"), "--help", "")
	f.Add([]byte("- 1\n- 2\n"), "--name", "METASTORE_NAME")
	f.Add([]byte("policies:\n  - {name: p, module: m.wasm, sha256: ab, hooks: [admit], match: {prefixes: [/a/]}, settings: {a: [1, {b: 2}]}, limits: {memory: 1MiB}}\ntenants:\n  - {name: t, prefix: /t/, quota: {max_bytes: 1GiB}, rate_limit: {qps: 1.5}}\n"), "", "")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yamlData []byte, args, env string) {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, yamlData, 0o600); err != nil {
			t.Fatal(err)
		}
		argv := append(split(args), "--config-file", path)
		envv := split(env)
		cfg, _, err := Load(argv, envv)
		if err != nil {
			var ue *UsageError
			if cfg != nil {
				t.Fatalf("Load returned a Config with an error: %v", err)
			}
			if err.Error() == "" && !errors.As(err, &ue) {
				t.Fatalf("empty error")
			}
			return
		}
		if verr := cfg.Validate(); verr != nil {
			t.Fatalf("Load accepted a Config that Validate refuses: %v", verr)
		}
		again, _, err := Load(argv, envv)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("Load is not deterministic: %v", err)
		}
	})
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

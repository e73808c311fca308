package config

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestAutoTLS(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--auto-tls",
		"--listen-client-urls", "https://127.0.0.1:0,https://localhost:0,http://10.0.0.1:0"}
	cfg, _, err := Load(args, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "fixtures", "client", "cert.pem")
	if cfg.Server.TLS.CertFile != want || cfg.Server.TLS.KeyFile != filepath.Join(dir, "fixtures", "client", "key.pem") {
		t.Fatalf("cert %q key %q, want them in %s", cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile, filepath.Dir(want))
	}
	first, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(first)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// Only the https listeners' hosts are named.
	if len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "127.0.0.1" || !slices.Equal(cert.DNSNames, []string{"localhost"}) {
		t.Fatalf("certificate names %v %v", cert.IPAddresses, cert.DNSNames)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Fatal(err)
	}

	// A second load (a restart or a reload) reuses the pair.
	cfg2, _, err := Load(args, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := RestartRequired(cfg, cfg2); len(d) != 0 {
		t.Fatalf("a reload would need a restart for %v", d)
	}
	again, _ := os.ReadFile(want)
	if string(again) != string(first) {
		t.Fatal("the certificate was made again")
	}

	// Given files win, as in etcd; plain listeners need none.
	for _, extra := range [][]string{
		{"--cert-file", want, "--key-file", cfg.Server.TLS.KeyFile, "--data-dir", t.TempDir()},
		{"--listen-client-urls", "http://127.0.0.1:0", "--data-dir", t.TempDir()},
	} {
		c, _, err := Load(append(slices.Clone(args), extra...), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(c.DataDir, "fixtures")); !os.IsNotExist(err) {
			t.Fatalf("%v: a certificate was made: %v", extra, err)
		}
	}
}

func TestStrictReconfigCheckFlag(t *testing.T) {
	for v, want := range map[string]bool{"": true, "--strict-reconfig-check": true, "--strict-reconfig-check=false": false} {
		args := []string{"--data-dir", t.TempDir()}
		if v != "" {
			args = append(args, v)
		}
		cfg, _, err := Load(args, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Cluster.StrictReconfigCheck != want {
			t.Errorf("%q: strict %v, want %v", v, cfg.Cluster.StrictReconfigCheck, want)
		}
	}
}

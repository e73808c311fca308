package raftnode

import (
	"crypto/tls"
	"strings"
	"testing"
)

// TestPeerDial: etcd's four peer schemes reach host:port, TLS where the
// scheme says so; unix and unixs add the Unix dialer; TLS without a peer
// TLS configuration and other schemes are refused.
func TestPeerDial(t *testing.T) {
	tlsConf := &tls.Config{}
	for _, tc := range []struct {
		raw     string
		tls     *tls.Config
		opts    int    // dial options returned
		wantErr string // substring; empty: no error
	}{
		{raw: "http://127.0.0.1:2380", opts: 1},
		{raw: "https://127.0.0.1:2380", tls: tlsConf, opts: 1},
		{raw: "unix://localhost:20001", opts: 2},
		{raw: "unixs://localhost:20001", tls: tlsConf, opts: 2},
		{raw: "https://127.0.0.1:2380", wantErr: "needs TLS but no peer TLS is configured"},
		{raw: "unixs://localhost:20001", wantErr: "needs TLS but no peer TLS is configured"},
		{raw: "ftp://127.0.0.1:21", wantErr: "unsupported scheme"},
		{raw: "http://[::1", wantErr: "peer URL"},
	} {
		target, opts, err := PeerDial(tc.raw, tc.tls)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		host := tc.raw[strings.Index(tc.raw, "://")+3:]
		if err != nil || target != "passthrough:///"+host || len(opts) != tc.opts {
			t.Errorf("%s: target %q, %d options, %v", tc.raw, target, len(opts), err)
		}
	}
}

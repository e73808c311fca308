package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PeerTLS holds the peer listener's and peer clients' certificates (etcd's
// --peer-* security flags). All paths are PEM files.
type PeerTLS struct {
	// CertFile is the peer certificate, served and presented to peers
	// (etcd's --peer-cert-file).
	CertFile string `yaml:"cert_file"`
	// KeyFile is its private key (etcd's --peer-key-file).
	KeyFile string `yaml:"key_file"`
	// ClientCertFile and ClientKeyFile, if set, are the certificate and key
	// this member presents when it dials peers, instead of CertFile and
	// KeyFile (etcd's --peer-client-cert-file, --peer-client-key-file).
	ClientCertFile string `yaml:"client_cert_file"`
	ClientKeyFile  string `yaml:"client_key_file"`
	// TrustedCAFile verifies peers' certificates (etcd's
	// --peer-trusted-ca-file).
	TrustedCAFile string `yaml:"trusted_ca_file"`
	// ClientCertAuth requires peers to present a certificate signed by
	// TrustedCAFile (etcd's --peer-client-cert-auth).
	ClientCertAuth bool `yaml:"client_cert_auth"`
	// AllowedCN, if set, is a comma-separated list of the common names
	// accepted in a peer's certificate (etcd's --peer-cert-allowed-cn).
	AllowedCN string `yaml:"allowed_cn"`
	// AllowedHostname, if set, is a comma-separated list of host names or
	// IPs one of which a peer's certificate must be valid for (etcd's
	// --peer-cert-allowed-hostname); exclusive with AllowedCN.
	AllowedHostname string `yaml:"allowed_hostname"`
	// AutoTLS serves https:// peer URLs with a self-signed certificate
	// made once in <data_dir>/fixtures/peer when no cert_file and
	// key_file are given; peers then skip verification (etcd's
	// --peer-auto-tls).
	AutoTLS bool `yaml:"auto_tls"`
}

// ClusterMode reports whether the member runs Raft: it has peer listeners,
// or its initial cluster lists other members, or it joins a cluster. A
// member without any of these is the single node on the group-commit loop.
func (c *Config) ClusterMode() bool {
	if len(c.Server.ListenPeerURLs) > 0 || c.Cluster.InitialClusterState == "existing" {
		return true
	}
	m, err := c.InitialMembers()
	return err == nil && len(m) > 1
}

// PeerListenURLs are the peer listeners of a cluster member: the
// configured ones, else etcd's default.
func (c *Config) PeerListenURLs() []string {
	if len(c.Server.ListenPeerURLs) > 0 {
		return c.Server.ListenPeerURLs
	}
	return []string{"http://localhost:2380"}
}

// InitialMember is one member of --initial-cluster.
type InitialMember struct {
	Name     string
	PeerURLs []string
}

// InitialMembers parses Cluster.InitialCluster in order of first
// appearance (a name listed twice has both URLs, as etcd's). Empty means
// this member alone at its advertised peer URLs.
func (c *Config) InitialMembers() ([]InitialMember, error) {
	if strings.TrimSpace(c.Cluster.InitialCluster) == "" {
		return []InitialMember{{Name: c.Name, PeerURLs: slices.Clone(c.Server.AdvertisePeerURLs)}}, nil
	}
	var out []InitialMember
	idx := map[string]int{}
	seenURL := map[string]bool{}
	for _, entry := range splitList(c.Cluster.InitialCluster) {
		name, u, ok := strings.Cut(entry, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("invalid entry %q (want name=peer-url)", entry)
		}
		if err := checkURL(u, false); err != nil {
			return nil, err
		}
		if seenURL[u] {
			return nil, fmt.Errorf("initial cluster %s has duplicate url", c.Cluster.InitialCluster)
		}
		seenURL[u] = true
		i, ok := idx[name]
		if !ok {
			i = len(out)
			idx[name] = i
			out = append(out, InitialMember{Name: name})
		}
		out[i].PeerURLs = append(out[i].PeerURLs, u)
	}
	return out, nil
}

// validateCluster checks the clustering settings as etcd's embed config
// and bootstrap do, with etcd's messages where it has them.
func (c *Config) validateCluster(p *problems) {
	cl := &c.Cluster
	p.check(cl.InitialClusterState == "new" || cl.InitialClusterState == "existing",
		"cluster.initial_cluster_state", "invalid value %q (want new or existing)", cl.InitialClusterState)
	p.check(cl.HeartbeatInterval > 0, "cluster.heartbeat_interval", "must be > 0, got %v", cl.HeartbeatInterval)
	p.check(cl.ElectionTimeout > 0, "cluster.election_timeout", "must be > 0, got %v", cl.ElectionTimeout)
	p.check(cl.CorruptCheckTime >= 0, "cluster.corrupt_check_time", "must be >= 0, got %v", cl.CorruptCheckTime)
	// etcd's message.
	p.check(!cl.CompactHashCheck || cl.CompactHashCheckTime > 0, "cluster.compact_hash_check_time", "--compact-hash-check-time must be >0 (set to %v)", cl.CompactHashCheckTime)
	if cl.HeartbeatInterval > 0 && cl.ElectionTimeout > 0 {
		ms := func(d time.Duration) int64 { return d.Milliseconds() }
		// etcd's embed.Config.Validate messages.
		if 5*cl.HeartbeatInterval > cl.ElectionTimeout {
			p.add("cluster.election_timeout", "--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", ms(cl.ElectionTimeout), ms(cl.HeartbeatInterval))
		}
		if cl.ElectionTimeout > 50*time.Second {
			p.add("cluster.election_timeout", "--election-timeout[%vms] is too long, and should be set less than %vms", ms(cl.ElectionTimeout), 50000)
		}
		if cl.HeartbeatInterval%time.Millisecond != 0 || cl.ElectionTimeout%time.Millisecond != 0 {
			p.add("cluster", "heartbeat_interval and election_timeout must be whole milliseconds")
		}
	}
	p.urls("server.listen_peer_urls", c.Server.ListenPeerURLs, true)
	members, err := c.InitialMembers()
	if err != nil {
		p.add("cluster.initial_cluster", "%v", err)
		return
	}
	if !c.ClusterMode() {
		// A single node: only itself may be listed, as a single-node
		// etcd unit file does.
		if strings.TrimSpace(cl.InitialCluster) != "" && members[0].Name != c.Name {
			p.add("cluster.initial_cluster", "couldn't find local name %q in the initial cluster configuration", c.Name)
		}
		return
	}
	i := slices.IndexFunc(members, func(m InitialMember) bool { return m.Name == c.Name })
	if i < 0 {
		p.add("cluster.initial_cluster", "couldn't find local name %q in the initial cluster configuration", c.Name)
		return
	}
	// etcd's advertiseMatchesCluster.
	mine, adv := slices.Sorted(slices.Values(members[i].PeerURLs)), slices.Sorted(slices.Values(c.Server.AdvertisePeerURLs))
	if !slices.Equal(mine, adv) {
		p.add("cluster.initial_cluster", "--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s", strings.Join(mine, ","), strings.Join(adv, ","))
	}
	t := &c.Server.PeerTLS
	var https bool
	for _, u := range append(slices.Clone(c.PeerListenURLs()), c.Server.AdvertisePeerURLs...) {
		https = https || isTLSURL(u)
	}
	if https && !t.AutoTLS {
		p.check(t.CertFile != "" && t.KeyFile != "", "server.peer_tls", "cert_file and key_file (or auto_tls) are required for https:// peer URLs")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		p.add("server.peer_tls", "cert_file and key_file must be given together")
	}
	p.check(!t.ClientCertAuth || t.TrustedCAFile != "" || t.AutoTLS, "server.peer_tls.client_cert_auth", "requires server.peer_tls.trusted_ca_file")
	p.fileExists("server.peer_tls.cert_file", t.CertFile)
	p.fileExists("server.peer_tls.key_file", t.KeyFile)
	p.fileExists("server.peer_tls.trusted_ca_file", t.TrustedCAFile)
}

// milliseconds accepts etcd's bare milliseconds ("100") as well as a Go
// duration ("100ms").
func milliseconds(v string) (string, error) {
	if _, err := strconv.ParseUint(v, 10, 32); err == nil {
		return v + "ms", nil
	}
	return v, nil
}

// peerAutoTLS fills in the peer certificate with a self-signed one for the
// https:// peer URLs' hosts when PeerTLS.AutoTLS is set and no files were
// given (etcd's --peer-auto-tls), made once in <data_dir>/fixtures/peer.
func (c *Config) peerAutoTLS() error {
	t := &c.Server.PeerTLS
	if !t.AutoTLS || t.CertFile != "" || t.KeyFile != "" || c.DataDir == "" || !c.ClusterMode() {
		return nil
	}
	var hosts []string
	for _, raw := range append(slices.Clone(c.PeerListenURLs()), c.Server.AdvertisePeerURLs...) {
		u, err := url.Parse(raw)
		if err != nil || !IsTLSScheme(u.Scheme) {
			continue
		}
		hosts = append(hosts, u.Hostname())
	}
	if len(hosts) == 0 {
		return nil
	}
	dir := filepath.Join(c.DataDir, "fixtures", "peer")
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if !fileExists(certPath) || !fileExists(keyPath) {
		if err := writeSelfSigned(dir, certPath, keyPath, hosts); err != nil {
			return fmt.Errorf("server.peer_tls.auto_tls: %w", err)
		}
	}
	t.CertFile, t.KeyFile = certPath, keyPath
	return nil
}

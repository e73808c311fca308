package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metastore-dev/metastore/tests/framework"
)

// Kinds of server a cluster is made of.
const (
	Etcd      = "etcd"
	Metastore = "metastore"
)

// Kinds returns the servers every cluster test runs against: etcd first
// (to prove the expectation), then metastore unless
// METASTORE_COMPAT_ONLY_ETCD is set.
func Kinds() []string {
	if framework.OnlyEtcd() {
		return []string{Etcd}
	}
	return []string{Etcd, Metastore}
}

// Config describes a cluster to start.
type Config struct {
	// Kind is Etcd or Metastore.
	Kind string
	// Size is the number of members (default 3).
	Size int
	// HeartbeatMs and ElectionMs are --heartbeat-interval and
	// --election-timeout (default 100 and 1000, etcd's defaults).
	HeartbeatMs, ElectionMs int
	// Proxy routes every member's peer traffic through a PeerProxy: the
	// advertised peer URLs are the proxies', so Partition can cut pairs.
	Proxy bool
	// PeerTLS, if set, makes the peer URLs https and gives every member
	// etcd's peer TLS flags.
	PeerTLS *PeerTLS
	// SnapshotCount is --snapshot-count and CatchUpEntries
	// --snapshot-catchup-entries (0: not given, the server's default). Small
	// values make the leader truncate its log within seconds, so a member
	// that falls behind needs a snapshot.
	SnapshotCount, CatchUpEntries int
	// Extra flags for every member.
	Extra []string
}

// PeerTLS are the files and settings of etcd's peer TLS flags.
type PeerTLS struct {
	CertFile, KeyFile, TrustedCAFile string
	// ClientCertAuth is --peer-client-cert-auth.
	ClientCertAuth bool
	// AllowedCN is --peer-cert-allowed-cn (empty: not given).
	AllowedCN string
}

// Cluster is a running set of members.
type Cluster struct {
	t       testing.TB
	Kind    string
	Token   string
	Members []*Member
	cfg     Config
	net     *Network // with Config.Proxy
	pending map[string]*Member
}

// Member is one server process with its own data directory, client port,
// peer port and (with Config.Proxy) peer proxy. Its ports and data stay the
// same across Kill/Restart.
type Member struct {
	c    *Cluster
	Name string
	// Index is the member's position in Cluster.Members.
	Index   int
	DataDir string
	// ClientURL is the member's (listened and advertised) client URL;
	// Endpoint is its host:port.
	ClientURL, Endpoint string
	// ListenPeerURL is where the process listens for peers; PeerURL is the
	// URL it advertises (the proxy's with Config.Proxy).
	ListenPeerURL, PeerURL string
	// Args are the process' flags (etcd's clustering flags, see setArgs).
	Args    []string
	logPath string
	proxy   *PeerProxy

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	starts int
	cli    *clientv3.Client
}

// Binary returns the path of the kind's server binary (built once per test
// binary by the framework, with -race when the tests are).
func Binary(t testing.TB, kind string) string {
	switch kind {
	case Etcd:
		return framework.EtcdBinary(t)
	case Metastore:
		return framework.MetastoreBinary(t)
	}
	t.Fatalf("unknown kind %q", kind)
	return ""
}

func localURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// Start starts a cluster of cfg.Size members as processes (all at once, as
// a new cluster needs a quorum before any member serves), waits until every
// member serves and the members agree on a leader. Every process is killed
// on cleanup; their logs are printed if the test failed.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Size == 0 {
		cfg.Size = 3
	}
	if cfg.HeartbeatMs == 0 {
		cfg.HeartbeatMs = 100
	}
	if cfg.ElectionMs == 0 {
		cfg.ElectionMs = 1000
	}
	// A port picked free may be taken by another process before the member
	// binds it (tests run in parallel): then the cluster starts anew on
	// other ports.
	for attempt := 1; ; attempt++ {
		c, err := start(t, cfg)
		if err == nil {
			return c
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("starting the %s cluster again on other ports: %v", cfg.Kind, firstLine(err.Error()))
	}
}

func start(t testing.TB, cfg Config) (*Cluster, error) {
	c := &Cluster{t: t, Kind: cfg.Kind, cfg: cfg, Token: fmt.Sprintf("tok-%d", time.Now().UnixNano())}
	if cfg.Proxy {
		c.net = newNetwork(t)
	}
	for i := 0; i < cfg.Size; i++ {
		c.Members = append(c.Members, c.newMember(fmt.Sprintf("m%d", i)))
	}
	var initial []string
	for _, m := range c.Members {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.setArgs(strings.Join(initial, ","), "new")
	}
	for _, m := range c.Members {
		m.Start()
	}
	for _, m := range c.Members {
		if err := m.WaitReady(90 * time.Second); err != nil {
			for _, m := range c.Members {
				m.Kill()
			}
			return nil, fmt.Errorf("%s: %v", m, err)
		}
	}
	if _, err := c.WaitLeader(60 * time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// newMember makes a member (not started) with fresh ports and data dir.
func (c *Cluster) newMember(name string) *Member {
	t := c.t
	cp, pp := framework.StablePort(t), framework.StablePort(t)
	scheme := "http://"
	if c.cfg.PeerTLS != nil {
		scheme = "https://"
	}
	m := &Member{
		c: c, Name: name, Index: len(c.Members), DataDir: filepath.Join(t.TempDir(), name),
		ClientURL: localURL(cp), Endpoint: "127.0.0.1:" + strconv.Itoa(cp),
		ListenPeerURL: scheme + "127.0.0.1:" + strconv.Itoa(pp), PeerURL: scheme + "127.0.0.1:" + strconv.Itoa(pp),
		logPath: filepath.Join(t.TempDir(), c.Kind+"-"+name+".log"),
	}
	if c.net != nil {
		m.proxy = c.net.addProxy(t, m)
		m.PeerURL = scheme + m.proxy.Addr()
	}
	t.Cleanup(func() {
		m.Kill()
		m.mu.Lock()
		cli := m.cli
		m.mu.Unlock()
		if cli != nil {
			cli.Close()
		}
		if t.Failed() {
			if data, err := os.ReadFile(m.logPath); err == nil {
				t.Logf("%s log (tail):\n%s", m, tailString(string(data), 6000))
			}
		}
	})
	return m
}

// setArgs sets the member's flags: etcd's clustering flags, the same for
// both kinds.
func (m *Member) setArgs(initialCluster, state string) {
	cfg := m.c.cfg
	m.Args = append([]string{
		"--name", m.Name,
		"--data-dir", m.DataDir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.ListenPeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", m.c.Token,
		"--heartbeat-interval", strconv.Itoa(cfg.HeartbeatMs),
		"--election-timeout", strconv.Itoa(cfg.ElectionMs),
		"--log-level", "warn",
	}, cfg.Extra...)
	if cfg.SnapshotCount > 0 {
		m.Args = append(m.Args, "--snapshot-count", strconv.Itoa(cfg.SnapshotCount))
	}
	if cfg.CatchUpEntries > 0 {
		m.Args = append(m.Args, "--snapshot-catchup-entries", strconv.Itoa(cfg.CatchUpEntries))
	}
	if p := cfg.PeerTLS; p != nil {
		m.Args = append(m.Args, "--peer-cert-file", p.CertFile, "--peer-key-file", p.KeyFile, "--peer-trusted-ca-file", p.TrustedCAFile)
		if p.ClientCertAuth {
			m.Args = append(m.Args, "--peer-client-cert-auth")
		}
		if p.AllowedCN != "" {
			m.Args = append(m.Args, "--peer-cert-allowed-cn", p.AllowedCN)
		}
	}
}

// PeerAddr is the host:port the member listens on for peers.
func (m *Member) PeerAddr() string {
	_, hp, _ := strings.Cut(m.ListenPeerURL, "://")
	return hp
}

func (m *Member) String() string { return m.c.Kind + "/" + m.Name }

// Endpoints returns every member's client address.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Endpoint)
	}
	return eps
}

// Client returns a clientv3 client over every member's endpoint (clientv3
// balances across them and fails over), closed on cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return c.ClientOf(t, c.Members...)
}

// ClientOf returns a clientv3 client over the endpoints of ms only (say,
// the members that stay up while another is killed), closed on cleanup.
func (c *Cluster) ClientOf(t testing.TB, ms ...*Member) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.Endpoint)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          10 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client for %v: %v", eps, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Client returns the member's own client (its endpoint only), made once
// and kept across restarts: gRPC reconnects to the same port.
func (m *Member) Client() *clientv3.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cli == nil {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            []string{m.Endpoint},
			DialKeepAliveTime:    2 * time.Second,
			DialKeepAliveTimeout: 2 * time.Second,
			Logger:               zap.NewNop(),
		})
		if err != nil { // only for a malformed configuration: no dial happens here
			panic(err)
		}
		m.cli = cli
	}
	return m.cli
}

// Start starts the member's process (it must not be running) without
// waiting for it to serve.
func (m *Member) Start() {
	m.c.t.Helper()
	if err := m.start(); err != nil {
		m.c.t.Fatalf("%s: %v", m, err)
	}
}

func (m *Member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return errors.New("start while running")
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	m.starts++
	bin := Binary(m.c.t, m.c.Kind)
	fmt.Fprintf(logf, "=== start #%d: %s %s\n", m.starts, bin, strings.Join(m.Args, " "))
	cmd := exec.Command(bin, m.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "GOTRACEBACK=all")
	// Die with the test binary even if it is killed (e.g. by -timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	m.cmd, m.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		close(exited)
	}()
	return nil
}

// WaitReady waits until the member answers a serializable Get (it has
// joined the cluster and serves clients), or fails if the process exits.
func (m *Member) WaitReady(timeout time.Duration) error {
	m.mu.Lock()
	exited := m.exited
	m.mu.Unlock()
	if exited == nil {
		return errors.New("not running")
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := m.Client().Get(ctx, "/cluster/ready-probe", clientv3.WithSerializable())
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-exited:
			return fmt.Errorf("exited while starting (last probe: %v); log:\n%s", last, tailString(m.Log(), 3000))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("not serving after %v: %v", timeout, last)
}

// Restart starts the killed or stopped member again on the same data
// directory and ports and waits until it serves.
func (m *Member) Restart() {
	m.c.t.Helper()
	m.Start()
	if err := m.WaitReady(90 * time.Second); err != nil {
		m.c.t.Fatalf("%s (start #%d): %v", m, m.starts, err)
	}
}

// Kill SIGKILLs the process and waits for it to exit (no-op if it is not
// running).
func (m *Member) Kill() { _ = m.signalAndWait(syscall.SIGKILL, 30*time.Second) }

// Stop sends SIGTERM and waits up to 30s for a graceful exit (then
// SIGKILLs); nil for exit status 0 or death by the SIGTERM itself.
func (m *Member) Stop() error {
	return framework.GracefulExit(m.signalAndWait(syscall.SIGTERM, 30*time.Second))
}

func (m *Member) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return nil
	}
	escalated := framework.SignalAndWait(cmd, exited, sig, timeout)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmd, m.exited = nil, nil
	if escalated {
		return fmt.Errorf("%s did not exit within %v of %v; killed", m, timeout, sig)
	}
	return m.err
}

// DumpStacks makes every running member print its goroutines and exit
// (SIGQUIT; the member runs with GOTRACEBACK=all) and copies each
// member's whole log to a directory that outlives the test, whose path
// it logs: what a stalled cluster's members were waiting on is the
// evidence a stall needs, and t.TempDir is removed with the test.
func (c *Cluster) DumpStacks(t testing.TB) {
	t.Helper()
	dir, err := os.MkdirTemp("", "metastore-stall-")
	if err != nil {
		t.Logf("no directory for the members' dumps: %v", err)
		return
	}
	for _, m := range c.Members {
		if m.Running() {
			_ = m.signalAndWait(syscall.SIGQUIT, 30*time.Second)
		}
		if data, err := os.ReadFile(m.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(dir, c.Kind+"-"+m.Name+".log"), data, 0o644)
		}
	}
	t.Logf("the members' goroutine dumps and whole logs: %s", dir)
}

// Running reports whether the process is running.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the current process exits, or nil
// if none is running.
func (m *Member) Exited() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exited
}

// Pid returns the running process' id, or 0.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Log returns the process' output of every start so far.
func (m *Member) Log() string {
	data, _ := os.ReadFile(m.logPath)
	return string(data)
}

// Status asks the member for its Status (member id, leader, raft term and
// index, revision).
func (m *Member) Status(ctx context.Context) (*clientv3.StatusResponse, error) {
	return m.Client().Status(ctx, m.Endpoint)
}

// Running returns the members whose process runs.
func (c *Cluster) Running() []*Member {
	var ms []*Member
	for _, m := range c.Members {
		if m.Running() {
			ms = append(ms, m)
		}
	}
	return ms
}

// Leader asks every running member for its Status and returns the leader
// they all name (an error if one does not answer, names none or they
// disagree).
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	var leader uint64
	ids := map[uint64]*Member{}
	for _, m := range c.Running() {
		st, err := m.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: status: %w", m, err)
		}
		ids[st.Header.MemberId] = m
		switch {
		case st.Leader == 0:
			return nil, fmt.Errorf("%s has no leader", m)
		case leader == 0:
			leader = st.Leader
		case leader != st.Leader:
			return nil, fmt.Errorf("members disagree on the leader: %x and %x", leader, st.Leader)
		}
	}
	if m := ids[leader]; m != nil {
		return m, nil
	}
	return nil, fmt.Errorf("leader %x is not a running member", leader)
}

// WaitLeader waits until every running member names the same running
// leader, and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) (*Member, error) {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l, err := c.Leader(ctx)
		cancel()
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no agreed leader after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Followers returns the running members other than leader.
func (c *Cluster) Followers(leader *Member) []*Member {
	var fs []*Member
	for _, m := range c.Running() {
		if m != leader {
			fs = append(fs, m)
		}
	}
	return fs
}

// WaitHealthy waits until there is an agreed leader and every running
// member serves a linearizable Get (what `etcdctl endpoint health`
// checks).
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if _, err := c.WaitLeader(timeout); err != nil {
		return err
	}
	for _, m := range c.Running() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := m.Client().Get(ctx, "health")
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not healthy after %v: %w", m, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// WaitConverged waits until every running member has applied the same
// revision as a linearizable read sees (serializable reads on each), and
// returns that revision.
func (c *Cluster) WaitConverged(timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		revs, err := c.revisions()
		if err == nil {
			same := true
			for _, r := range revs[1:] {
				same = same && r == revs[0]
			}
			if same {
				return revs[0], nil
			}
			last = fmt.Sprint(revs)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("members not converged after %v: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// revisions returns a linearizable read's revision, then each running
// member's serializable one.
func (c *Cluster) revisions() ([]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms := c.Running()
	r, err := ms[0].Client().Get(ctx, "health")
	if err != nil {
		return nil, err
	}
	revs := []int64{r.Header.Revision}
	for _, m := range ms {
		r, err := m.Client().Get(ctx, "health", clientv3.WithSerializable())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m, err)
		}
		revs = append(revs, r.Header.Revision)
	}
	return revs, nil
}

// HashKVs returns every running member's HashKV at rev, each asked with
// its own timeout, and how long each took.
func (c *Cluster) HashKVs(timeout time.Duration, rev int64) (map[string]uint32, map[string]time.Duration, error) {
	hs, took := map[string]uint32{}, map[string]time.Duration{}
	for _, m := range c.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		t0 := time.Now()
		r, err := m.Client().HashKV(ctx, m.Endpoint, rev)
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: hashkv at %d (after %v): %w", m, rev, time.Since(t0).Round(time.Millisecond), err)
		}
		hs[m.Name], took[m.Name] = r.Hash, time.Since(t0)
	}
	return hs, took, nil
}

// CheckRaces fails the test if a member reported a data race.
func (c *Cluster) CheckRaces(t testing.TB) {
	t.Helper()
	for _, m := range c.Members {
		if strings.Contains(m.Log(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", m, tailString(m.Log(), 6000))
		}
	}
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// AddMember makes a new member (not started) with fresh ports and data
// dir, to join the running cluster with --initial-cluster-state existing
// once `member add` has told the cluster about it: initialCluster is the
// ETCD_INITIAL_CLUSTER `member add` printed.
func (c *Cluster) AddMember(name, initialCluster string) *Member {
	m := c.pending[name]
	if m == nil {
		m = c.newMember(name)
	}
	delete(c.pending, name)
	m.Index = len(c.Members)
	c.Members = append(c.Members, m)
	m.setArgs(initialCluster, "existing")
	return m
}

// NewMemberURLs makes the ports (and proxy) of a member named name, to be
// started by AddMember with the same name, and returns the peer URL it will
// advertise (what `member add --peer-urls` needs first).
func (c *Cluster) NewMemberURLs(name string) string {
	if c.pending == nil {
		c.pending = map[string]*Member{}
	}
	m := c.newMember(name)
	c.pending[name] = m
	return m.PeerURL
}

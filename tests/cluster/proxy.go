package cluster

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Network is the set of peer proxies of a cluster and the member pairs cut
// between them.
//
// Every member advertises its proxy's address as its peer URL, so every
// peer connection to a member goes through that member's proxy. A reverse
// proxy alone cannot tell who is calling (every connection comes from
// 127.0.0.1), and etcd's pkg/proxy, which blackholes everything that goes
// through one proxy, would then cut only the connections the other members
// open to the isolated one, not those it opens to them (etcd's own
// robustness tests note the same gap). So each proxy looks the caller's
// socket up in /proc: the accepted connection's source port is the local
// port of a socket one member process holds. A cut pair's connections, old
// and new, are blackholed in both directions (bytes read and dropped, the
// connection kept open, as a lost network does), and closed when healed.
type Network struct {
	t       testing.TB
	mu      sync.Mutex
	cut     map[[2]int]bool
	proxies []*PeerProxy
	members []*Member
}

func newNetwork(t testing.TB) *Network { return &Network{t: t, cut: map[[2]int]bool{}} }

func pair(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

// Partition cuts every pair of members that are on different sides: side
// and the rest of the cluster.
func (c *Cluster) Partition(side ...*Member) {
	n := c.net
	if n == nil {
		c.t.Fatal("Partition needs Config.Proxy")
	}
	in := map[int]bool{}
	for _, m := range side {
		in[m.Index] = true
	}
	n.mu.Lock()
	for _, a := range c.Members {
		for _, b := range c.Members {
			if a.Index < b.Index && in[a.Index] != in[b.Index] {
				n.cut[pair(a.Index, b.Index)] = true
			}
		}
	}
	proxies := append([]*PeerProxy(nil), n.proxies...)
	n.mu.Unlock()
	for _, p := range proxies {
		p.applyCuts()
	}
}

// Heal removes every cut; connections that were blackholed are closed so
// that the members dial again.
func (c *Cluster) Heal() {
	n := c.net
	n.mu.Lock()
	n.cut = map[[2]int]bool{}
	proxies := append([]*PeerProxy(nil), n.proxies...)
	n.mu.Unlock()
	for _, p := range proxies {
		p.closeBlackholed()
	}
}

func (n *Network) isCut(a, b int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[pair(a, b)]
}

// PeerProxy forwards connections to one member's peer listener.
type PeerProxy struct {
	n      *Network
	ln     net.Listener
	member *Member
	mu     sync.Mutex
	conns  map[*proxyConn]bool
	closed bool
}

type proxyConn struct {
	from       int // member index of the caller
	in, out    net.Conn
	mu         sync.Mutex
	blackholed bool
}

func (pc *proxyConn) setBlackholed() {
	pc.mu.Lock()
	pc.blackholed = true
	pc.mu.Unlock()
}

func (pc *proxyConn) isBlackholed() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.blackholed
}

func (pc *proxyConn) close() {
	pc.in.Close()
	pc.out.Close()
}

func (n *Network) addProxy(t testing.TB, m *Member) *PeerProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("peer proxy: %v", err)
	}
	p := &PeerProxy{n: n, ln: ln, member: m, conns: map[*proxyConn]bool{}}
	n.mu.Lock()
	n.proxies = append(n.proxies, p)
	n.members = append(n.members, m)
	n.mu.Unlock()
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's listening address.
func (p *PeerProxy) Addr() string { return p.ln.Addr().String() }

func (p *PeerProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[*proxyConn]bool{}
	p.mu.Unlock()
	for pc := range conns {
		pc.close()
	}
}

func (p *PeerProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(in)
	}
}

func (p *PeerProxy) handle(in net.Conn) {
	from, err := p.n.caller(in)
	if err != nil {
		// Unattributed connections are refused: letting one through could
		// leak across a partition. The caller dials again.
		in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", p.member.PeerAddr(), 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	pc := &proxyConn{from: from, in: in, out: out}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.close()
		return
	}
	p.conns[pc] = true
	p.mu.Unlock()
	if p.n.isCut(from, p.member.Index) {
		pc.setBlackholed()
	}
	done := make(chan struct{}, 2)
	go p.pipe(pc, out, in, done)
	go p.pipe(pc, in, out, done)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// pipe copies src to dst until either side fails; while the connection is
// blackholed what is read is dropped.
func (p *PeerProxy) pipe(pc *proxyConn, dst, src net.Conn, done chan<- struct{}) {
	defer func() {
		pc.close()
		done <- struct{}{}
	}()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pc.isBlackholed() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// applyCuts blackholes the open connections of every cut pair.
func (p *PeerProxy) applyCuts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		if p.n.isCut(pc.from, p.member.Index) {
			pc.setBlackholed()
		}
	}
}

func (p *PeerProxy) closeBlackholed() {
	p.mu.Lock()
	var bh []*proxyConn
	for pc := range p.conns {
		if pc.isBlackholed() {
			bh = append(bh, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range bh {
		pc.close()
	}
}

// caller returns the index of the member whose process holds the other
// end of the accepted connection in.
func (n *Network) caller(in net.Conn) (int, error) {
	ra := in.RemoteAddr().(*net.TCPAddr)
	la := in.LocalAddr().(*net.TCPAddr)
	n.mu.Lock()
	members := append([]*Member(nil), n.members...)
	n.mu.Unlock()
	// The socket may take a moment to appear in /proc/net/tcp under load.
	for attempt := 0; attempt < 20; attempt++ {
		inode, err := socketInode(ra.Port, la.Port)
		if err == nil {
			link := "socket:[" + inode + "]"
			for _, m := range members {
				if pid := m.Pid(); pid > 0 && holdsFD(pid, link) {
					return m.Index, nil
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return -1, fmt.Errorf("no member holds the socket 127.0.0.1:%d → %s", ra.Port, la)
}

// socketInode finds the inode of the TCP socket whose local port is lport
// and remote port rport (both on loopback) in /proc/net/tcp, or tcp6 for a
// dual-stack socket (IPv4-mapped addresses keep the port suffix).
func socketInode(lport, rport int) (string, error) {
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		inode, err := findSocket(table, lport, rport)
		if err != nil || inode != "" {
			return inode, err
		}
	}
	return "", fmt.Errorf("socket :%d→:%d not found", lport, rport)
}

func findSocket(table string, lport, rport int) (string, error) {
	f, err := os.Open(table)
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", lport)
	wantRem := fmt.Sprintf(":%04X", rport)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(fs) < 10 || !strings.HasSuffix(fs[1], want) || !strings.HasSuffix(fs[2], wantRem) {
			continue
		}
		if fs[9] != "0" {
			return fs[9], nil
		}
	}
	return "", sc.Err()
}

func holdsFD(pid int, link string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == link {
			return true
		}
	}
	return false
}

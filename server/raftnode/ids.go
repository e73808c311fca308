package raftnode

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// MemberID derives a member's ID as etcd does (membership.computeMemberID):
// the first 8 bytes, big-endian, of SHA-1 over the member's sorted peer URLs
// joined without separator, then the cluster token, then — for a member added
// to a running cluster — the decimal Unix time of the addition (now == nil at
// bootstrap, so every member of a new cluster computes the same IDs).
//
// URLs are normalized as etcd's types.NewURLs does (parsed and printed back),
// so "http://host:2380" and its parsed form give the same ID.
func MemberID(peerURLs []string, clusterToken string, now *time.Time) (uint64, error) {
	if len(peerURLs) == 0 {
		return 0, fmt.Errorf("raftnode: member has no peer URLs")
	}
	urls := make([]string, len(peerURLs))
	for i, s := range peerURLs {
		u, err := parsePeerURL(s)
		if err != nil {
			return 0, err
		}
		urls[i] = u.String()
	}
	slices.Sort(urls)
	var b []byte
	for _, u := range urls {
		b = append(b, u...)
	}
	b = append(b, clusterToken...)
	if now != nil {
		b = strconv.AppendInt(b, now.Unix(), 10)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8]), nil
}

// parsePeerURL checks a peer URL as etcd's types.NewURLs does: http,
// https, unix or unixs, a host with a port, no path.
func parsePeerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("raftnode: peer URL %q: %w", s, err)
	}
	switch u.Scheme {
	case "http", "https", "unix", "unixs":
	default:
		return nil, fmt.Errorf("raftnode: peer URL %q: scheme must be http, https, unix or unixs", s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("raftnode: peer URL %q: want host:port", s)
	}
	if u.Path != "" {
		return nil, fmt.Errorf("raftnode: peer URL %q: must not contain a path", s)
	}
	return u, nil
}

// ClusterID derives the cluster's ID from its initial members' IDs as etcd
// does (RaftCluster.genID): SHA-1 over the IDs sorted ascending, each as 8
// big-endian bytes, first 8 bytes of the sum, big-endian.
func ClusterID(memberIDs []uint64) uint64 {
	ids := slices.Clone(memberIDs)
	slices.Sort(ids)
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// FormatID prints an ID as etcd does (lower-case hex, no padding).
func FormatID(id uint64) string { return strconv.FormatUint(id, 16) }

// requestIDs generates proposal IDs unique across members and restarts, as
// etcd's idutil.Generator: the low 16 bits of the member ID on top, then the
// start time in milliseconds (40 bits) followed by an 8-bit counter, both
// advanced by one atomic add so the sequence never repeats within a run and
// a restart begins past the IDs of the previous run (unless the clock went
// back by more than the IDs used).
type requestIDs struct {
	prefix uint64
	suffix atomic.Uint64
}

const (
	idTSBits     = 40
	idCountBits  = 8
	idSuffixBits = idTSBits + idCountBits
	idSuffixMask = 1<<idSuffixBits - 1
)

func newRequestIDs(member uint64, now time.Time) *requestIDs {
	g := &requestIDs{prefix: member << idSuffixBits}
	ms := uint64(now.UnixMilli()) & (1<<idTSBits - 1)
	g.suffix.Store(ms << idCountBits)
	return g
}

func (g *requestIDs) next() uint64 {
	return g.prefix | g.suffix.Add(1)&idSuffixMask
}

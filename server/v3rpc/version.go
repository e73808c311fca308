package v3rpc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"

	"github.com/metastore-dev/metastore/server/apply"
)

// Downgrade errors, as etcd's (server/etcdserver/errors and version).
var (
	errWrongDowngradeVersionFormat   = errors.New("etcdserver: wrong downgrade target version format")
	errInvalidDowngradeTargetVersion = errors.New("etcdserver: invalid downgrade target version")
	errDowngradeInProcess            = errors.New("etcdserver: cluster has a downgrade job in progress")
	errNoInflightDowngrade           = errors.New("etcdserver: no inflight downgrade job")
	errUnknownMethod                 = errors.New("etcdserver: unknown method")
	errInvalidDowngradeMonitored     = errors.New("invalid downgrade target")
)

// versionMonitorInterval is etcd's monitorVersionInterval.
const versionMonitorInterval = 4 * time.Second

var (
	serverVersion = mustParseVersion(EtcdVersion)
	// InitialClusterVersion is a new cluster's version: the server's
	// major.minor, as etcd decides it at the first election.
	InitialClusterVersion = majorMinor(serverVersion).String()
)

// version is a semantic version as etcd parses it (github.com/coreos/go-semver):
// "major.minor.patch", optionally -prerelease and +metadata.
type version struct {
	major, minor, patch int64
}

var semverIdentifier = regexp.MustCompile(`^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$`)

func parseVersion(s string) (version, error) {
	var meta, pre string
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s, meta = s[:i], s[i+1:]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		s, pre = s[:i], s[i+1:]
	}
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 {
		return version{}, fmt.Errorf("%s is not in dotted-tri format", s)
	}
	for _, id := range []string{pre, meta} {
		if id != "" && !semverIdentifier.MatchString(id) {
			return version{}, fmt.Errorf("%s is not a valid semver identifier", id)
		}
	}
	var n [3]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return version{}, err
		}
		n[i] = v
	}
	return version{n[0], n[1], n[2]}, nil
}

func mustParseVersion(s string) version {
	v, err := parseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

func majorMinor(v version) version { return version{major: v.major, minor: v.minor} }

func (v version) String() string { return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.patch) }

// cluster is the "major.minor" form etcd answers with.
func (v version) cluster() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

func (v version) less(o version) bool {
	if v.major != o.major {
		return v.major < o.major
	}
	if v.minor != o.minor {
		return v.minor < o.minor
	}
	return v.patch < o.patch
}

// downgradeTarget parses a requested target as etcd's
// convertToClusterVersion: "major.minor.patch" or "major.minor", patch
// dropped.
func downgradeTarget(s string) (version, error) {
	v, err := parseVersion(s)
	if err != nil {
		if v, err = parseVersion(s + ".0"); err != nil {
			return version{}, errWrongDowngradeVersionFormat
		}
	}
	return majorMinor(v), nil
}

// allowedDowngrade is the only version a cluster at v may downgrade to: the
// previous minor.
func allowedDowngrade(v version) version { return version{major: v.major, minor: v.minor - 1} }

// clusterVersion is the current cluster version.
func (s *Server) clusterVersion() version {
	v, err := parseVersion(s.applier.Versions().Cluster)
	if err != nil {
		return majorMinor(serverVersion)
	}
	return v
}

// Downgrade validates, enables or cancels a cluster downgrade as etcd 3.6:
// the target must be the previous minor version; enabling records it, and
// the version monitor then moves the cluster (and storage) version to it.
// Canceling when nothing is in progress succeeds, as in etcd.
func (m *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	s := m.s
	if err := s.requireAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.DowngradeResponse{}
	switch r.Action {
	case pb.DowngradeRequest_VALIDATE:
		target, err := downgradeTarget(r.Version)
		if err != nil {
			return nil, toGRPCError(err)
		}
		resp.Version = s.clusterVersion().cluster()
		if err := s.validateDowngrade(target); err != nil {
			return nil, toGRPCError(err)
		}
	case pb.DowngradeRequest_ENABLE:
		target, err := downgradeTarget(r.Version)
		if err != nil {
			return nil, toGRPCError(err)
		}
		if err := s.validateDowngrade(target); err != nil {
			return nil, toGRPCError(err)
		}
		if _, err := s.propose(ctx, &apply.Request{DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{Enabled: true, Ver: target.String()}}); err != nil {
			return nil, err
		}
		resp.Version = s.clusterVersion().cluster()
	case pb.DowngradeRequest_CANCEL:
		// NB: etcd logs a failed cancel (no downgrade in progress) and
		// answers success all the same.
		if s.applier.Versions().DowngradeEnabled {
			if _, err := s.propose(ctx, &apply.Request{DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{}}); err != nil {
				return nil, err
			}
		} else {
			s.lg.Warn("failed to cancel downgrade", "err", errNoInflightDowngrade)
		}
		resp.Version = s.clusterVersion().cluster()
	default:
		return nil, toGRPCError(errUnknownMethod)
	}
	resp.Header = &pb.ResponseHeader{}
	s.fillHeader(resp.Header)
	return resp, nil
}

func (s *Server) validateDowngrade(target version) error {
	if target != allowedDowngrade(s.clusterVersion()) {
		return errInvalidDowngradeTargetVersion
	}
	if s.applier.Versions().DowngradeEnabled {
		return errDowngradeInProcess
	}
	return nil
}

// runVersionMonitor is etcd's cluster-version monitor on the leader: at
// start and every versionMonitorInterval it moves the cluster version to a
// downgrade's target, or back to the server's version once no downgrade is
// in progress. Changes are proposed, never made outside Apply.
func (s *Server) runVersionMonitor(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.isLeader() {
			// As etcd's monitor: only the leader decides.
		} else if next, err := s.decideClusterVersion(); err != nil {
			s.lg.Error("failed to monitor cluster version", "err", err)
		} else if next != nil {
			_, err := s.propose(ctx, &apply.Request{ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: next.String()}})
			if err != nil && ctx.Err() == nil {
				s.lg.Warn("failed to update cluster version", "err", err)
			}
		}
		t.Reset(versionMonitorInterval)
	}
}

// decideClusterVersion is etcd's decision. It needs every member's server
// version: etcd asks each member over its peer URLs, and a member that
// never started does not answer, so with any member besides this one the
// cluster version stays as it is.
func (s *Server) decideClusterVersion() (*version, error) {
	if len(s.applier.Members().Members) > 1 {
		return nil, nil
	}
	cv := majorMinor(s.clusterVersion())
	sv := majorMinor(serverVersion)
	vs := s.applier.Versions()
	if vs.DowngradeEnabled {
		target, err := parseVersion(vs.DowngradeTarget)
		if err != nil || target == cv {
			return nil, nil
		}
		if target != allowedDowngrade(cv) || target != allowedDowngrade(sv) {
			return nil, errInvalidDowngradeMonitored
		}
		return &target, nil
	}
	if cv.less(sv) && cv.major == sv.major {
		return &sv, nil
	}
	return nil, nil
}

package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/server/raftnode"
)

// peerCollector exports the peer transport's counters under etcd's names
// (etcd_network_peer_*), labelled with the peer's ID as etcd labels them.
type peerCollector struct{ t *raftnode.PeerTransport }

// registerClusterMetrics adds a cluster member's series beside the peer
// transport's: the round trips the prober measures and the apply
// batches' commits.
func (s *Server) registerClusterMetrics() {
	s.peerRTT = newPeerRTT()
	s.metrics.Registry().MustRegister(s.peerRTT)
	s.machine.ObserveCommits(s.metrics.ObserveBackendCommit)
}

// newPeerRTT is etcd's etcd_network_peer_round_trip_time_seconds.
func newPeerRTT() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "etcd_network_peer_round_trip_time_seconds", Help: "Round-Trip-Time histogram between peers",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"To"})
}

var (
	peerSentBytesDesc = prometheus.NewDesc("etcd_network_peer_sent_bytes_total",
		"The total number of bytes sent to peers.", []string{"To"}, nil)
	peerReceivedBytesDesc = prometheus.NewDesc("etcd_network_peer_received_bytes_total",
		"The total number of bytes received from peers.", []string{"From"}, nil)
	peerSentFailuresDesc = prometheus.NewDesc("etcd_network_peer_sent_failures_total",
		"The total number of send failures from peers.", []string{"To"}, nil)
	peerReceivedFailuresDesc = prometheus.NewDesc("etcd_network_peer_received_failures_total",
		"The total number of receive failures from peers.", []string{"From"}, nil)
)

func (c peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerSentBytesDesc
	ch <- peerReceivedBytesDesc
	ch <- peerSentFailuresDesc
	ch <- peerReceivedFailuresDesc
}

func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	for id, m := range c.t.Metrics() {
		peer := raftnode.FormatID(id)
		ch <- prometheus.MustNewConstMetric(peerSentBytesDesc, prometheus.CounterValue, float64(m.SentBytes), peer)
		ch <- prometheus.MustNewConstMetric(peerReceivedBytesDesc, prometheus.CounterValue, float64(m.ReceivedBytes), peer)
		// As etcd's counter vectors, a failure series appears with the
		// first failure.
		if m.SentFailures > 0 {
			ch <- prometheus.MustNewConstMetric(peerSentFailuresDesc, prometheus.CounterValue, float64(m.SentFailures), peer)
		}
		if m.ReceivedFailures > 0 {
			ch <- prometheus.MustNewConstMetric(peerReceivedFailuresDesc, prometheus.CounterValue, float64(m.ReceivedFailures), peer)
		}
	}
}

// proberInterval is how often each peer's round trip is measured: etcd's
// prober's interval (its connection read timeout less a second).
const proberInterval = 4 * time.Second

// runPeerProber measures the round trip of a small peer call (the member
// list) to every other member, as etcd's prober does over its peer
// transport, into etcd_network_peer_round_trip_time_seconds; unreachable
// peers are not observed.
func (s *Server) runPeerProber(ctx context.Context) {
	t := time.NewTicker(proberInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, m := range s.applier.Members().Members {
			if m.ID == s.ids.Member || len(m.PeerURLs) == 0 {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, proberInterval)
			start := time.Now()
			var resp pb.MemberListResponse
			err := s.peers.call(pctx, 0, m.PeerURLs, peerMembers, &pb.MemberListRequest{}, &resp)
			cancel()
			if err == nil {
				s.peerRTT.WithLabelValues(raftnode.FormatID(m.ID)).Observe(time.Since(start).Seconds())
			}
		}
	}
}

package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/metastore-dev/metastore/server/raftnode"
)

// peerCollector exports the peer transport's counters under etcd's names
// (etcd_network_peer_*), labelled with the peer's ID as etcd labels them.
type peerCollector struct{ t *raftnode.PeerTransport }

var (
	peerSentBytesDesc = prometheus.NewDesc("etcd_network_peer_sent_bytes_total",
		"The total number of bytes sent to peers.", []string{"To"}, nil)
	peerReceivedBytesDesc = prometheus.NewDesc("etcd_network_peer_received_bytes_total",
		"The total number of bytes received from peers.", []string{"From"}, nil)
	peerSentFailuresDesc = prometheus.NewDesc("etcd_network_peer_sent_failures_total",
		"The total number of send failures from peers.", []string{"To"}, nil)
)

func (c peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerSentBytesDesc
	ch <- peerReceivedBytesDesc
	ch <- peerSentFailuresDesc
}

func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	for id, m := range c.t.Metrics() {
		peer := raftnode.FormatID(id)
		ch <- prometheus.MustNewConstMetric(peerSentBytesDesc, prometheus.CounterValue, float64(m.SentBytes), peer)
		ch <- prometheus.MustNewConstMetric(peerReceivedBytesDesc, prometheus.CounterValue, float64(m.ReceivedBytes), peer)
		ch <- prometheus.MustNewConstMetric(peerSentFailuresDesc, prometheus.CounterValue, float64(m.SentFailures), peer)
	}
}

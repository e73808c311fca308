package server

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func (s *Server) metricsHandler() http.Handler {
	// Instrumented as etcd's handler is (promhttp_metric_handler_*).
	return promhttp.InstrumentMetricHandler(s.metrics.Registry(),
		promhttp.HandlerFor(s.metrics.Registry(), promhttp.HandlerOpts{Registry: s.metrics.Registry()}))
}

// handleVersion answers /version as etcd.
func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	cv := s.rpc.ClusterVersion()
	json.NewEncoder(w).Encode(map[string]string{
		"etcdserver": EtcdVersion, "etcdcluster": cv, "storage": cv,
	})
}

// handleHealth answers in etcd's shape: {"health":"true","reason":""}, or
// 503 with the reason when an alarm is raised (unless excluded with
// ?exclude=NOSPACE) or a read of the store fails.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	health, reason := "true", ""
	excluded := map[string]bool{}
	for _, e := range r.URL.Query()["exclude"] {
		excluded[strings.ToUpper(e)] = true
	}
	for _, a := range s.applier.Alarms() {
		if a.Alarm == pb.AlarmType_NONE || excluded[a.Alarm.String()] {
			continue
		}
		health, reason = "false", "ALARM "+a.Alarm.String()
		break
	}
	// As etcd's: ?serializable=true checks this member alone; otherwise
	// the member needs a leader and a linearizable read (a ReadIndex
	// round) within etcd's request timeout.
	serializable := r.URL.Query().Get("serializable") == "true"
	if health == "true" && !serializable && s.node != nil && s.node.Leader() == 0 {
		health, reason = "false", "RAFT NO LEADER"
	}
	if health == "true" {
		if err := s.readCheck(r.Context(), serializable); err != nil {
			health, reason = "false", "RANGE ERROR:"+err.Error()
		}
	}
	// NB: etcd sets no content type (net/http sniffs text/plain) and ends
	// the body without a newline; a failure goes through http.Error.
	s.metrics.HealthChecked(health == "true")
	d, _ := json.Marshal(map[string]string{"health": health, "reason": reason})
	if health != "true" {
		http.Error(w, string(d), http.StatusServiceUnavailable)
		return
	}
	w.Write(d)
}

package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/metastore-dev/metastore/mvcc"
)

// newHTTPHandler serves the plain-HTTP endpoints etcd serves on its client
// port: /health, /livez, /readyz, /version and /metrics.
func (s *Server) newHTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.handleHealth)
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"etcdserver": EtcdVersion, "etcdcluster": EtcdVersion, "storage": EtcdVersion,
		})
	})
	mux.Handle("/metrics", s.metricsHandler())
	return mux
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg})
}

// metricsHTTP serves a --listen-metrics-urls listener: /metrics and /health
// only, as etcd.
func (s *Server) metricsHTTP() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metricsHandler())
	mux.HandleFunc("/health", s.handleHealth)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// handleHealth answers in etcd's shape: {"health":"true","reason":""}, or
// 503 with the reason when an alarm is raised (unless excluded with
// ?exclude=NOSPACE) or a read of the store fails.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
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
	if health == "true" {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if _, err := s.store.Range(ctx, []byte("health"), nil, mvcc.RangeOptions{Limit: 1}); err != nil {
			health, reason = "false", "RANGE ERROR"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if health != "true" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(map[string]string{"health": health, "reason": reason})
}

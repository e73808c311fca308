package guard

import (
	"context"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metastore-dev/metastore/wasmhost"
)

// policyMetrics are the per-policy Prometheus metrics, fed by wasmhost's
// events and pulled from Policy.Stats at scrape time.
type policyMetrics struct {
	reg       *prometheus.Registry
	calls     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	audits    *prometheus.CounterVec
	mutations *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	created   *prometheus.HistogramVec
	discarded *prometheus.CounterVec
	compile   *prometheus.HistogramVec
	degraded  *prometheus.CounterVec
	logLines  *prometheus.CounterVec
	throttled *prometheus.CounterVec
	cpuWaits  *prometheus.CounterVec
	cpuWait   *prometheus.HistogramVec

	// children are bound per policy at load, before any call: the call
	// path indexes arrays instead of hashing labels. The map is replaced
	// whole (under the reload lock), never changed.
	children atomic.Pointer[map[string]*policyChildren]
	// gauges pull each policy's stats at scrape time; reload lock only.
	gauges map[string]*policyGauges
}

// policyGauges are one policy name's scrape-time gauges, pointed at the
// module serving under that name now.
type policyGauges struct {
	p    atomic.Pointer[wasmhost.Policy]
	cols []prometheus.Collector
}

type policyChildren struct {
	calls   [2][4]prometheus.Counter // hook, verdict
	latency [2]prometheus.Observer
}

func (s *Guard) newPolicyMetrics() *policyMetrics {
	m := &policyMetrics{reg: s.metrics.reg, gauges: map[string]*policyGauges{}}
	m.children.Store(&map[string]*policyChildren{})
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_calls_total", Help: "Policy calls by hook and verdict (after on_error).",
	}, []string{"policy", "hook", "verdict"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_errors_total", Help: "Failed policy calls and loads, and counted problems, by kind: trap, timeout, oom, fuel, table, stack, bad_result, bad_reason (the DENY stood), bad_mutation, init, load.",
	}, []string{"policy", "hook", "kind"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "metastore_policy_call_duration_seconds", Help: "Latency of policy calls, pool wait included.",
		Buckets: prometheus.ExponentialBuckets(250e-9, 2, 18), // 250ns .. 33ms
	}, []string{"policy", "hook"})
	m.audits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_audit_verdicts_total", Help: "Would-be verdicts of policies in audit mode.",
	}, []string{"policy", "hook", "verdict"})
	m.mutations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_mutations_total", Help: "Writes replaced by an admission policy.",
	}, []string{"policy"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_reloads_total", Help: "Policy reloads by result (ok or failed).",
	}, []string{"policy", "result"})
	m.created = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "metastore_policy_instance_init_seconds", Help: "Time to instantiate and initialise an instance.",
		Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16),
	}, []string{"policy"})
	m.discarded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_instances_discarded_total", Help: "Instances thrown away, by reason (error, calls, memory, retired).",
	}, []string{"policy", "reason"})
	m.compile = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "metastore_policy_compile_seconds", Help: "Time to read, check, meter and compile a module (from the cache or not).",
		Buckets: prometheus.ExponentialBuckets(1e-3, 2, 14),
	}, []string{"policy"})
	m.degraded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_degraded_total", Help: "Times a policy was marked degraded.",
	}, []string{"policy"})
	m.logLines = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_log_lines_dropped_total", Help: "Guest log lines dropped by the rate limit.",
	}, []string{"policy"})
	m.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_throttled_total", Help: "Times a policy became throttled: a call of it ran to its deadline or fuel budget, so for a second its long calls get CPU only when no other policy's call waits.",
	}, []string{"policy"})
	m.cpuWaits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metastore_policy_cpu_waits_total", Help: "Calls that waited for one of the host's guest CPU slots, by class (normal, init: a new instance's start and init, throttled) and result (granted, or deadline: the call timed out waiting).",
	}, []string{"policy", "class", "result"})
	m.cpuWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "metastore_policy_cpu_wait_seconds", Help: "Time calls waited for a guest CPU slot (only calls that waited).",
		Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12), // 1µs .. 4s
	}, []string{"policy"})
	m.reg.MustRegister(m.calls, m.errors, m.latency, m.audits, m.mutations, m.reloads, m.created, m.discarded, m.compile, m.degraded, m.logLines,
		m.throttled, m.cpuWaits, m.cpuWait)
	return m
}

var verdictNames = [4]string{"deny", "allow", "no_opinion", "mutated"}

// bind points name's metrics at p: the call counters' children are bound
// and the gauges pulled from p's stats registered, the first time a policy
// of that name is loaded.
func (m *policyMetrics) bind(name string, p *wasmhost.Policy) {
	if g := m.gauges[name]; g != nil {
		g.p.Store(p)
		return
	}
	c := &policyChildren{}
	for h, hook := range []string{"authorize", "admit"} {
		for v, verdict := range verdictNames {
			c.calls[h][v] = m.calls.WithLabelValues(name, hook, verdict)
		}
		c.latency[h] = m.latency.WithLabelValues(name, hook)
	}
	next := maps.Clone(*m.children.Load())
	next[name] = c
	m.children.Store(&next)
	g := &policyGauges{}
	g.p.Store(p)
	labels := prometheus.Labels{"policy": name}
	gauge := func(metric, help string, f func(wasmhost.Stats) float64) {
		col := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metric, Help: help, ConstLabels: labels},
			func() float64 { return f(g.p.Load().Stats()) })
		m.reg.MustRegister(col)
		g.cols = append(g.cols, col)
	}
	gauge("metastore_policy_pool_instances", "Live instances of the policy.", func(s wasmhost.Stats) float64 { return float64(s.Instances) })
	gauge("metastore_policy_pool_misses", "Calls that found no idle instance (cumulative).", func(s wasmhost.Stats) float64 { return float64(s.Misses) })
	gauge("metastore_policy_instance_memory_bytes", "Linear memory of the idle instances.", func(s wasmhost.Stats) float64 { return float64(s.MemoryBytes) })
	gauge("metastore_policy_degraded", "1 while the policy is degraded.", func(s wasmhost.Stats) float64 {
		if s.Degraded {
			return 1
		}
		return 0
	})
	gauge("metastore_policy_throttled", "1 while the policy is throttled (a call ran to its deadline or fuel budget within the last second).", func(s wasmhost.Stats) float64 {
		if s.Throttled {
			return 1
		}
		return 0
	})
	m.gauges[name] = g
}

// unbind drops a removed policy's gauges (its counters stay, as counters
// do).
func (m *policyMetrics) unbind(name string) {
	g := m.gauges[name]
	if g == nil {
		return
	}
	for _, col := range g.cols {
		m.reg.Unregister(col)
	}
	delete(m.gauges, name)
	next := maps.Clone(*m.children.Load())
	delete(next, name)
	m.children.Store(&next)
}

// reloaded counts a reload of one policy's module.
func (m *policyMetrics) reloaded(name string, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.reloads.WithLabelValues(name, result).Inc()
}

func (m *policyMetrics) audit(name string, hook wasmhost.Hook, v wasmhost.Verdict) {
	m.audits.WithLabelValues(name, hook.String(), v.String()).Inc()
}

func (m *policyMetrics) mutated(name string) { m.mutations.WithLabelValues(name).Inc() }

// observer is the Observe of name's policies: it finds name's metrics on
// its first call after bind and keeps them (a hash of the name per call
// was a third of the host's own cost of a decision).
func (m *policyMetrics) observer(name string) func(wasmhost.Hook, wasmhost.Verdict, time.Duration) {
	var bound atomic.Pointer[policyChildren]
	return func(hook wasmhost.Hook, v wasmhost.Verdict, d time.Duration) {
		c := bound.Load()
		if c == nil {
			if c = (*m.children.Load())[name]; c == nil {
				return // not bound yet: a call made while loading
			}
			bound.Store(c)
		}
		if v < 0 || v > 3 {
			return
		}
		c.calls[hook][v].Inc()
		c.latency[hook].Observe(d.Seconds())
	}
}

// events wires wasmhost's callbacks to the metrics and the log.
func (m *policyMetrics) events(lg *slog.Logger) wasmhost.Events {
	return wasmhost.Events{
		Error: func(name string, hook wasmhost.Hook, kind wasmhost.ErrorKind, err error) {
			m.errors.WithLabelValues(name, hook.String(), string(kind)).Inc()
			lg.Warn("policy error", "policy", name, "hook", hook.String(), "kind", string(kind), "err", err)
		},
		Log: func(name string, level int32, msg string) {
			lvl := slog.LevelError
			switch level {
			case 0:
				lvl = slog.LevelDebug
			case 1:
				lvl = slog.LevelInfo
			case 2:
				lvl = slog.LevelWarn
			}
			lg.Log(context.Background(), lvl, msg, "policy", name)
		},
		LogDropped:        func(name string, _ int) { m.logLines.WithLabelValues(name).Add(1) },
		InstanceCreated:   func(name string, d time.Duration) { m.created.WithLabelValues(name).Observe(d.Seconds()) },
		InstanceDiscarded: func(name, reason string) { m.discarded.WithLabelValues(name, reason).Inc() },
		Compiled:          func(name string, d time.Duration) { m.compile.WithLabelValues(name).Observe(d.Seconds()) },
		Degraded: func(name string, degraded bool) {
			if degraded {
				m.degraded.WithLabelValues(name).Inc()
				lg.Error("policy degraded: failing repeatedly; instances are recreated with backoff", "policy", name)
			} else {
				lg.Info("policy recovered", "policy", name)
			}
		},
		Reloaded: func(name string, err error) { m.reloaded(name, err == nil) },
		Throttled: func(name string) {
			m.throttled.WithLabelValues(name).Inc()
			lg.Warn("policy throttled: a call ran to its deadline or fuel budget; its long calls yield the CPU to other policies' for a second", "policy", name)
		},
		CPUWait: func(name, class string, d time.Duration, ok bool) {
			result := "granted"
			if !ok {
				result = "deadline"
			}
			m.cpuWaits.WithLabelValues(name, class, result).Inc()
			m.cpuWait.WithLabelValues(name).Observe(d.Seconds())
		},
	}
}

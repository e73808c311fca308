package serve

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// registerPprof serves Go's runtime profiles where etcd's --enable-pprof
// serves them: /debug/pprof/ (the index and every named profile),
// profile, trace, symbol and cmdline. As etcd, it turns on mutex
// profiling (one event in five) unless something already set a rate, so
// /debug/pprof/mutex has data.
func registerPprof(mux *http.ServeMux) {
	if runtime.SetMutexProfileFraction(-1) == 0 {
		runtime.SetMutexProfileFraction(5)
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

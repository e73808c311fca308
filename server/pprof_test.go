package server

import (
	"strings"
	"testing"

	"github.com/metastore-dev/metastore/server/config"
)

// TestEnablePprof: --enable-pprof serves Go's profiles under /debug/pprof/
// on the client URL, as etcd's does; without it the paths are not served.
func TestEnablePprof(t *testing.T) {
	on := startTestServer(t, func(c *config.Config) { c.Server.EnablePprof = true })
	base := "http://" + on.s.ClientAddrs()[0]
	if code, body := httpGet(t, base+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/: %d %.200q, want 200 and the profile index", code, body)
	}
	if code, body := httpGet(t, base+"/debug/pprof/cmdline"); code != 200 || body == "" {
		t.Errorf("GET /debug/pprof/cmdline: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("GET /debug/pprof/goroutine: %d %.200q", code, body)
	}

	off := startTestServer(t, nil)
	if code, _ := httpGet(t, "http://"+off.s.ClientAddrs()[0]+"/debug/pprof/"); code != 404 {
		t.Errorf("GET /debug/pprof/ without --enable-pprof: %d, want 404", code)
	}
}

package mvcc

import (
	"fmt"
	"strings"
	"testing"
)

// TestWatchFragmentCatchUp: catching up over ten revisions of 1 MiB, a
// watcher whose responses are fragmented gets them in one response (etcd's
// clientv3 TestWatchFragmentEnable); one that is not gets responses of
// about mergeMaxBytes; fragmentMaxBytes still bounds a fragmented one.
func TestWatchFragmentCatchUp(t *testing.T) {
	e := newWatchEnv(t, HubOptions{})
	big := strings.Repeat("a", 1<<20)
	for i := range 10 {
		e.put(fmt.Sprint("foo", i), big) // revs 2..11
	}
	perResponse := func(o WatchOptions) []int {
		ws := e.h.NewStream()
		defer ws.Close()
		ws.Watch(o)
		var n []int
		for _, r := range drain(t, ws) {
			if !r.Created {
				n = append(n, len(r.Events))
			}
		}
		return n
	}
	o := WatchOptions{Key: []byte("foo"), End: []byte("fop"), StartRev: 1}
	if got := perResponse(o); fmt.Sprint(got) != "[1 1 1 1 1 1 1 1 1 1]" {
		t.Errorf("without fragment: events per response %v, want one each", got)
	}
	o.Fragment = true
	if got := perResponse(o); fmt.Sprint(got) != "[10]" {
		t.Errorf("with fragment: events per response %v, want [10]", got)
	}
	defer func(old int) { fragmentMaxBytes = old }(fragmentMaxBytes)
	fragmentMaxBytes = 3 << 20
	if got := perResponse(o); fmt.Sprint(got) != "[3 3 3 1]" {
		t.Errorf("with fragment, 3 MiB responses: events per response %v, want [3 3 3 1]", got)
	}
}

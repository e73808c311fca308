package reliability

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// never is the return time of a call whose outcome is unknown: porcupine
// may then linearize it anywhere after its call, including after every
// other operation (which is the same as "not applied").
const never = math.MaxInt64

// History records operations with invoke and return times from one
// monotonic clock. Safe for concurrent use.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewHistory starts an empty history; times count from now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the current time on the history's clock.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records one completed (or failed) call. A failed write is recorded
// with out.Unknown set and never returns; a failed read is dropped, since
// it changed nothing and observed nothing.
func (h *History) Add(client int, in Input, call int64, out Output, ret int64) {
	if out.Unknown {
		if in.Kind.readOnly() {
			return
		}
		ret = never
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	h.mu.Unlock()
}

// readOnly reports whether an operation kind changes nothing.
func (k OpKind) readOnly() bool {
	switch k {
	case OpGet, OpRangeAll, OpKeepAlive, OpTimeToLive, OpState:
		return true
	}
	return false
}

// Take returns the recorded operations and starts a new, empty segment.
func (h *History) Take() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := h.ops
	h.ops = nil
	return ops
}

// Segment is a piece of history between two quiescent points: it starts
// from a state read while no client was running and ends with such a read.
type Segment struct {
	Name string
	Init State
	Ops  []porcupine.Operation
}

// CheckResult says what checking a segment found.
type CheckResult struct {
	Result porcupine.CheckResult
	// Visualization is the path of porcupine's HTML rendering, written for
	// every result other than Ok.
	Visualization string
	Duration      time.Duration
}

// OutDirEnv names the directory visualisations are written to (default: a
// new directory under the system's temporary directory, kept after the
// test so the path in the failure message stays valid).
const OutDirEnv = "METASTORE_RELIAB_OUT"

// Check runs porcupine on a segment, with the model starting from seg.Init,
// and writes the visualisation when the history is not proven linearizable.
func Check(seg Segment, timeout time.Duration) (CheckResult, error) {
	m := Model
	init := seg.Init
	m.Init = func() any { return init }
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(m, seg.Ops, timeout)
	cr := CheckResult{Result: res, Duration: time.Since(begin)}
	if res == porcupine.Ok {
		return cr, nil
	}
	dir := os.Getenv(OutDirEnv)
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "metastore-porcupine-"); err != nil {
			return cr, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return cr, err
	}
	path := filepath.Join(dir, fmt.Sprintf("%s.html", sanitize(seg.Name)))
	if err := porcupine.VisualizePath(m, info, path); err != nil {
		return cr, fmt.Errorf("write visualisation: %w", err)
	}
	cr.Visualization = path
	return cr, nil
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

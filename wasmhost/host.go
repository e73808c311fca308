package wasmhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tetratelabs/wazero"
)

// Options configure a Host.
type Options struct {
	// CacheDir holds wazero's compilation cache (the server passes
	// <data-dir>/wasm-cache); empty keeps compiled code in memory only.
	CacheDir string
	// Events receive what happens to every policy of this host.
	Events Events
	// GuestSlots bounds how many guest calls may run at once past their
	// first fuel quantum, over every policy of the host (cpu.go): 0 is
	// GOMAXPROCS−1 (at least 1), so one P is always left to requests that
	// call no policy; negative is no bound (a host whose cores are all for
	// policies).
	GuestSlots int
}

// Host owns what policies share: the compilation cache and the event sinks.
// Each policy gets its own wazero runtime (its own memory cap, nothing linked
// across modules).
type Host struct {
	cache  wazero.CompilationCache
	events Events
	// background counts abandoned loads still finishing (Close waits).
	background sync.WaitGroup
	// validated remembers modules the validator accepted (limits.go);
	// cacheDir, when set, keeps that across restarts.
	validated sync.Map
	cacheDir  string
	// cpu bounds the guests running at once (nil: no bound).
	cpu *cpuSlots
}

// NewHost creates a host. Close it after every policy.
func NewHost(opts Options) (*Host, error) {
	h := &Host{events: opts.Events, cpu: newCPUSlots(opts.GuestSlots)}
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("wasmhost: compilation cache: %w", err)
		}
		dir, err := filepath.Abs(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasmhost: compilation cache: %w", err)
		}
		if err := trustedDir(dir); err != nil {
			return nil, fmt.Errorf("wasmhost: compilation cache: %w", err)
		}
		h.cacheDir = dir
		if h.cache, err = wazero.NewCompilationCacheWithDir(dir); err != nil {
			return nil, fmt.Errorf("wasmhost: compilation cache: %w", err)
		}
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	return h, nil
}

// Close releases the compilation cache (the files on disk stay), after
// any abandoned load has finished (each is bounded by its limits).
func (h *Host) Close(ctx context.Context) error {
	h.background.Wait()
	return h.cache.Close(ctx)
}

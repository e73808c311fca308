package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/metastore-dev/metastore/server/config"
)

// logRoot is the state every logger derived from the server's shares: the
// level, and the handler of the current format. A reload changes both
// without rebuilding the loggers the components hold (they were derived
// with With, so they are re-derived from the new handler on first use).
type logRoot struct {
	w     io.Writer
	level slog.LevelVar
	base  atomic.Pointer[slog.Handler]
}

func (r *logRoot) set(c config.Logging) error {
	r.level.Set(c.SlogLevel())
	opts := &slog.HandlerOptions{Level: &r.level}
	var h slog.Handler = slog.NewTextHandler(r.w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(r.w, opts)
	}
	r.base.Store(&h)
	return nil
}

// newReloadableLogger builds the logger the configuration asks for and
// the function that changes its level and format later.
func newReloadableLogger(c config.Logging, w io.Writer) (*slog.Logger, func(config.Logging) error) {
	r := &logRoot{w: w}
	r.set(c)
	return slog.New(&switchHandler{root: r}), r.set
}

// switchHandler writes through the root's current handler, with the
// attributes and groups it was derived with replayed on it.
type switchHandler struct {
	root  *logRoot
	ops   []func(slog.Handler) slog.Handler // WithAttrs and WithGroup, in order
	cache atomic.Pointer[derived]
}

// derived is ops applied to one base handler.
type derived struct {
	base *slog.Handler
	h    slog.Handler
}

func (h *switchHandler) current() slog.Handler {
	base := h.root.base.Load()
	if d := h.cache.Load(); d != nil && d.base == base {
		return d.h
	}
	out := *base
	for _, op := range h.ops {
		out = op(out)
	}
	h.cache.Store(&derived{base: base, h: out})
	return out
}

func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.root.level.Level()
}

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithAttrs(as) })
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
}

func (h *switchHandler) with(op func(slog.Handler) slog.Handler) slog.Handler {
	return &switchHandler{root: h.root, ops: append(slices.Clip(h.ops), op)}
}

var _ slog.Handler = (*switchHandler)(nil)

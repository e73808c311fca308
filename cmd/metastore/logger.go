package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	var h slog.Handler = slog.NewTextHandler(r.w, &slog.HandlerOptions{Level: &r.level})
	if c.Format == "json" {
		h = newEtcdJSONHandler(r.w, &r.level)
	}
	r.base.Store(&h)
	return nil
}

// newEtcdJSONHandler writes JSON lines shaped as etcd's (zap with etcd's
// encoder settings): "level" in lower case, "ts" with microseconds,
// "caller" as dir/file.go:line, "msg", then the fields, durations as
// strings ("100ms"). Log pipelines built for etcd, and etcd's own e2e
// tests, read these fields.
func newEtcdJSONHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, AddSource: true, ReplaceAttr: etcdAttr})
}

// etcdTimeLayout is etcd's EncodeTime layout.
const etcdTimeLayout = "2006-01-02T15:04:05.000000Z0700"

func etcdAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	if len(groups) > 0 {
		return a
	}
	// NB: a caller's own attribute may share a built-in's key; only values
	// of the built-in's kind are rewritten.
	switch a.Key {
	case slog.TimeKey:
		if a.Value.Kind() == slog.KindTime {
			return slog.String("ts", a.Value.Time().Format(etcdTimeLayout))
		}
	case slog.LevelKey:
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String("level", strings.ToLower(l.String()))
		}
	case slog.SourceKey:
		if src, ok := a.Value.Any().(*slog.Source); ok {
			// zap's ShortCallerEncoder: the file's directory and name.
			file := filepath.Join(filepath.Base(filepath.Dir(src.File)), filepath.Base(src.File))
			return slog.String("caller", file+":"+strconv.Itoa(src.Line))
		}
	}
	return a
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

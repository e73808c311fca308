package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
)

// ErrHelp is returned by Load when the arguments ask for help (-h, --help).
var ErrHelp = flag.ErrHelp

// envConfigFile names the config file when --config-file is not given.
const envConfigFile = "METASTORE_CONFIG_FILE"

// UsageError reports a malformed command line: an unknown flag, a flag
// without its value, or a stray argument. Commands exit with status 2 for
// it, as the flag package does.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Note is something Load noticed that is not an error: an etcd flag that
// was accepted but has no effect on one member, or an unrecognized
// METASTORE_* or ETCD_* environment variable. Load runs before there is a
// logger, so the caller logs the notes once it has one.
type Note struct {
	Level slog.Level
	Msg   string
}

// Load builds the configuration in layers, each overriding the one before:
// Default(), the YAML file named by --config-file (or METASTORE_CONFIG_FILE,
// or etcd's ETCD_CONFIG_FILE), etcd's ETCD_<FLAG> variables, METASTORE_<KEY>
// variables, and finally the flags in args. Then the policies and tenants
// lists are read from policy_config and tenant_config, if the final
// configuration names them. args excludes the program name; env is in
// os.Environ form.
//
// It returns ErrHelp when args ask for help, a *UsageError when args do not
// parse, and otherwise a single error listing every problem found in any
// layer and by Validate. Notes are returned even when there is an error.
func Load(args, env []string) (*Config, []Note, error) {
	return LoadAs("metastore", args, env)
}

// LoadAs is Load over DefaultAs(prog): prog is the name the program was
// invoked by.
func LoadAs(prog string, args, env []string) (*Config, []Note, error) {
	l := &loader{cfg: DefaultAs(prog)}

	// Flags are parsed first, to find --config-file, but applied last:
	// each flag only records its value here.
	var setFlags []flagValue
	fs := flag.NewFlagSet("metastore", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the caller prints the error and the usage
	fs.Usage = func() {}
	for i := range flagDefs {
		fs.Var(&flagRecorder{def: &flagDefs[i], into: &setFlags}, flagDefs[i].name, flagDefs[i].usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, ErrHelp
		}
		return nil, nil, &UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return nil, nil, &UsageError{Err: fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	flagSet := make(map[string]bool, len(setFlags))
	for _, f := range setFlags {
		flagSet[f.def.name] = true
	}
	vars := parseEnv(env)

	if path := l.configFile(setFlags, vars); path != "" {
		l.cfg.ConfigFile = path
		if data, err := os.ReadFile(path); err != nil {
			l.errs = append(l.errs, fmt.Errorf("config file: %w", err))
		} else {
			l.errs = append(l.errs, l.cfg.applyYAML(data, path)...)
		}
	}
	l.applyEtcdEnv(vars, flagSet)
	l.applyEnv(vars)
	for _, f := range setFlags {
		l.applyFlag(f.def, "--"+f.def.name, f.value)
	}
	l.loadLists()
	if err := l.cfg.Server.autoTLS(l.cfg.DataDir); err != nil {
		l.errs = append(l.errs, err)
	}
	if err := l.cfg.peerAutoTLS(); err != nil {
		l.errs = append(l.errs, err)
	}

	if err := l.cfg.Validate(); err != nil {
		l.errs = append(l.errs, unjoin(err)...)
	}
	if len(l.errs) > 0 {
		return nil, l.notes, errors.Join(l.errs...)
	}
	return l.cfg, l.notes, nil
}

// loader carries one Load call's state.
type loader struct {
	cfg   *Config
	errs  []error
	notes []Note
}

func (l *loader) note(level slog.Level, msg string) {
	l.notes = append(l.notes, Note{Level: level, Msg: msg})
}

// configFile returns the YAML path: the flag, else METASTORE_CONFIG_FILE,
// else ETCD_CONFIG_FILE. The last --config-file given wins, as with any flag.
func (l *loader) configFile(setFlags []flagValue, vars map[string]string) string {
	path := ""
	for _, f := range setFlags {
		if f.def.name == configFileFlag {
			path = f.value
		}
	}
	if path == "" {
		path = vars[envConfigFile]
	}
	if path == "" {
		path = vars[etcdEnvName(configFileFlag)]
	}
	return path
}

// applyFlag applies one flag value; source names it in errors and notes.
func (l *loader) applyFlag(f *flagDef, source, value string) {
	var err error
	if f.translate != nil {
		value, err = f.translate(value)
	}
	switch {
	case err != nil:
	case f.apply != nil:
		err = f.apply(l, source, value)
	default:
		err = leafByKey[f.key].set(l.cfg, value)
	}
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s: %w", source, err))
	}
}

// applyEtcdEnv applies ETCD_<FLAG> variables as etcd does: empty values
// are ignored and a flag given on the command line wins (etcd refuses to
// start on that conflict; we note it and let the flag win, as for
// METASTORE_ variables).
func (l *loader) applyEtcdEnv(vars map[string]string, flagSet map[string]bool) {
	used := map[string]bool{etcdEnvName(configFileFlag): true}
	for _, name := range etcdRuntimeEnv {
		used[name] = true
	}
	for i := range flagDefs {
		f := &flagDefs[i]
		name := etcdEnvName(f.name)
		v, ok := vars[name]
		if !ok || v == "" || f.name == configFileFlag {
			continue
		}
		used[name] = true
		if flagSet[f.name] {
			l.note(slog.LevelWarn, fmt.Sprintf("environment variable %s is shadowed by flag --%s", name, f.name))
			continue
		}
		l.applyFlag(f, name, v)
	}
	l.noteUnknown(vars, "ETCD_", used)
}

// etcdRuntimeEnv are ETCD_ variables etcd reads that are not flags:
// ETCD_UNSUPPORTED_ARCH lets etcd run on an architecture it does not
// support, ETCD_VERIFY turns on etcd's extra consistency assertions (etcd's
// test framework sets both). Neither changes what metastore does, so they
// are accepted without a warning rather than reported as unrecognized.
var etcdRuntimeEnv = []string{"ETCD_UNSUPPORTED_ARCH", "ETCD_VERIFY"}

// applyEnv applies METASTORE_<SECTION>_<KEY> variables; empty values are
// ignored, as etcd ignores empty ETCD_ variables.
func (l *loader) applyEnv(vars map[string]string) {
	used := map[string]bool{envConfigFile: true}
	for i := range leaves {
		lf := &leaves[i]
		name := envName(lf.key)
		v, ok := vars[name]
		if !ok || v == "" {
			continue
		}
		used[name] = true
		if err := lf.set(l.cfg, v); err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	l.noteUnknown(vars, "METASTORE_", used)
}

// noteUnknown warns about variables with our prefix that set nothing. They
// are not errors: Kubernetes injects METASTORE_PORT and the like into pods
// when a Service is named metastore.
func (l *loader) noteUnknown(vars map[string]string, prefix string, used map[string]bool) {
	var unknown []string
	for name := range vars {
		if strings.HasPrefix(name, prefix) && !used[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		l.note(slog.LevelWarn, "ignoring unrecognized environment variable "+name)
	}
}

// parseEnv turns os.Environ form into a map; the first of duplicate
// entries wins, as with os.Getenv.
func parseEnv(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

// unjoin flattens an errors.Join result back into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// flagValue is one flag occurrence, kept in command-line order.
type flagValue struct {
	def   *flagDef
	value string
}

// flagRecorder is the flag.Value of every flag: Set records the raw value,
// so a bad value is reported with every other problem instead of aborting
// the parse.
type flagRecorder struct {
	def  *flagDef
	into *[]flagValue
}

func (r *flagRecorder) String() string { return "" }

func (r *flagRecorder) Set(v string) error {
	*r.into = append(*r.into, flagValue{def: r.def, value: v})
	return nil
}

// IsBoolFlag lets a boolean flag be given without a value (--client-cert-auth).
func (r *flagRecorder) IsBoolFlag() bool { return r.def.isBool }

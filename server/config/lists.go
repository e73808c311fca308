package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Policies and tenants may live outside the config file: policy_config and
// tenant_config (METASTORE_POLICY_CONFIG, --policy-config; likewise for
// tenants) name a YAML file, or a directory of them, holding the list under
// its usual key. They are read once every layer is applied, so a flag or a
// variable pointing elsewhere wins as any setting does, and they are read
// again on every reload.

// ListFiles returns the files a policy_config or tenant_config path names:
// the path itself when it is a file; for a directory, the *.yaml and *.yml
// files in it (symlinks followed, hidden names skipped, so a Kubernetes
// ConfigMap volume reads as its keys) in name order.
func ListFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		full := filepath.Join(path, name)
		if st, err := os.Stat(full); err != nil || st.IsDir() {
			continue // a dangling link or a directory named *.yaml
		}
		out = append(out, full)
	}
	slices.Sort(out)
	return out, nil
}

// loadLists replaces the policies and tenants with those of policy_config
// and tenant_config, when set.
func (l *loader) loadLists() {
	if path := l.cfg.PolicyConfig; path != "" {
		var all []Policy
		if l.readList(path, "policy_config", "policies", func(c *Config) { all = append(all, c.Policies...) }) {
			if n := len(l.cfg.Policies); n > 0 {
				l.note(slog.LevelWarn, fmt.Sprintf("policy_config %s replaces the %d policies listed in the config file", path, n))
			}
			l.cfg.Policies = all
		}
	}
	if path := l.cfg.TenantConfig; path != "" {
		var all []Tenant
		if l.readList(path, "tenant_config", "tenants", func(c *Config) { all = append(all, c.Tenants...) }) {
			if n := len(l.cfg.Tenants); n > 0 {
				l.note(slog.LevelWarn, fmt.Sprintf("tenant_config %s replaces the %d tenants listed in the config file", path, n))
			}
			l.cfg.Tenants = all
		}
	}
}

// readList decodes each file of path, which may hold only key, and hands
// the result to take. It reports whether every file was read.
func (l *loader) readList(path, setting, key string, take func(*Config)) bool {
	files, err := ListFiles(path)
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s: %w", setting, err))
		return false
	}
	ok := true
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", setting, err))
			ok = false
			continue
		}
		if err := onlyKey(data, f, key, setting); err != nil {
			l.errs = append(l.errs, err)
			ok = false
			continue
		}
		var c Config
		if errs := c.applyYAML(data, f); len(errs) > 0 {
			l.errs = append(l.errs, errs...)
			ok = false
			continue
		}
		take(&c)
	}
	return ok
}

// onlyKey checks that a list file's document is a mapping with no key but
// key (an empty file is fine).
func onlyKey(data []byte, source, key, setting string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := deref(doc.Content[0])
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: a %s file holds a mapping with the %q list, got %s", source, root.Line, setting, key, kindName(root))
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := deref(root.Content[i]); k.Value != key {
			return fmt.Errorf("%s:%d: %s: only %q belongs in a %s file", source, k.Line, k.Value, key, setting)
		}
	}
	return nil
}

// Sources returns the files and directories the policies and tenants come
// from: the config file, policy_config and tenant_config (a directory and
// its files), and every policy's module. A running server watches them and
// reloads when one changes.
func (c *Config) Sources() []string {
	var out []string
	if c.ConfigFile != "" {
		out = append(out, c.ConfigFile)
	}
	for _, p := range []string{c.PolicyConfig, c.TenantConfig} {
		if p == "" {
			continue
		}
		files, err := ListFiles(p)
		if err != nil || len(files) != 1 || files[0] != p {
			out = append(out, p) // a directory: its own stamp changes as entries come and go
		}
		out = append(out, files...)
	}
	for i := range c.Policies {
		out = append(out, c.Policies[i].Module)
	}
	return out
}

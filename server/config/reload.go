package config

import "slices"

// reloadable are the settings a running server applies when its
// configuration is reloaded (SIGHUP or a changed file). The policies and
// tenants lists are reloadable too; they are not leaves.
var reloadable = map[string]bool{
	"limits.rate_limit":        true,
	"limits.rate_burst":        true,
	"limits.user_rate_limit":   true,
	"limits.user_rate_burst":   true,
	"limits.unary_rate_limit":  true,
	"limits.unary_rate_burst":  true,
	"limits.stream_rate_limit": true,
	"limits.stream_rate_burst": true,
	// Applies to connections accepted after the reload.
	"limits.max_connections":            true,
	"monitoring.slow_request_threshold": true,
	"logging.level":                     true,
	"logging.format":                    true,
	"authorization.chain":               true,
	"policy_config":                     true,
	"tenant_config":                     true,
}

// Reloadable reports whether a reload applies the setting key (a dotted
// YAML path such as "limits.rate_limit") without a restart.
func Reloadable(key string) bool { return reloadable[key] }

// RestartRequired returns, sorted, the keys of the settings that differ
// between the running configuration and next and that a reload does not
// apply: they take effect only after a restart.
func RestartRequired(running, next *Config) []string {
	var keys []string
	for i := range leaves {
		l := &leaves[i]
		if reloadable[l.key] {
			continue
		}
		if l.format(running) != l.format(next) {
			keys = append(keys, l.key)
		}
	}
	slices.Sort(keys)
	return keys
}

// Package config owns metastore's configuration: the typed Config, its
// built-in defaults, and how a running server's settings are assembled and
// checked.
//
// Settings come in layers, each overriding the one before (see Load):
//
//  1. Default() — a working single-node server on 127.0.0.1:2379;
//  2. a YAML file (--config-file), strict: an unknown key is an error;
//  3. etcd's ETCD_<FLAG> environment variables, for etcd deployments;
//  4. METASTORE_<SECTION>_<KEY> environment variables, one per YAML key
//     (METASTORE_LIMITS_MAX_TXN_OPS, METASTORE_DATA_DIR);
//  5. command-line flags, with etcd's names and meaning.
//
// NB: etcd ignores flags and environment when --config-file is given; we
// layer them on top instead, so a unit file can share one YAML file and
// still override a setting per host.
//
// Every layer parses values the same way: sizes as integers or with units
// ("256MiB", "1.5MiB"), durations as Go durations ("100ms", "1h"), lists as
// YAML sequences or comma-separated strings. Validate then checks the
// result and reports every problem at once, each naming its YAML key, so an
// operator fixes a configuration in one pass.
//
// The policies and tenants lists are YAML only: in the config file, or in
// the files policy_config and tenant_config name (lists.go), read once the
// layers above have settled which files those are.
//
// configs/metastore.yaml is the documented template of every setting; a
// test keeps it equal to Default().
//
// config imports no other package of metastore, and server/apply must not
// import it (apply takes its options as plain values).
package config

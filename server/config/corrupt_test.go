package config

import (
	"strings"
	"testing"
	"time"
)

// TestCorruptCheckFlags: etcd 3.6's corruption-check flags, their
// deprecated forms and --feature-gates set the cluster settings; bad
// gates get etcd's errors.
func TestCorruptCheckFlags(t *testing.T) {
	cfg, notes, err := Load([]string{"--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true,LeaseCheckpoint=false",
		"--experimental-corrupt-check-time", "3s", "--compact-hash-check-time", "10s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if !c.InitialCorruptCheck || !c.CompactHashCheck || c.CorruptCheckTime != 3*time.Second || c.CompactHashCheckTime != 10*time.Second {
		t.Fatalf("cluster settings %+v", c)
	}
	deprecated := false
	for _, n := range notes {
		deprecated = deprecated || strings.Contains(n.Msg, "--experimental-corrupt-check-time is deprecated")
	}
	if !deprecated {
		t.Errorf("no deprecation note: %v", notes)
	}
	cfg, _, err = Load([]string{"--experimental-initial-corrupt-check", "--corrupt-check-time", "1m"}, nil)
	if err != nil || !cfg.Cluster.InitialCorruptCheck || cfg.Cluster.CorruptCheckTime != time.Minute {
		t.Fatalf("%+v %v", cfg.Cluster, err)
	}
	for args, want := range map[string]string{
		"--feature-gates=Bogus=true":                             "unrecognized feature gate: Bogus",
		"--feature-gates=InitialCorruptCheck":                    "missing bool value for InitialCorruptCheck",
		"--feature-gates=CompactHashCheck=maybe":                 "invalid value of CompactHashCheck=maybe",
		"--corrupt-check-time=-1s":                               "cluster.corrupt_check_time: must be >= 0",
		"--compact-hash-check-time=0s":                           "", // fine while the check is off
		"--compact-hash-check=true --compact-hash-check-time=0s": "--compact-hash-check-time must be >0",
	} {
		_, _, err := Load(strings.Fields(args), nil)
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}

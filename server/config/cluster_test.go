package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestClusterMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want bool
	}{
		{"defaults: a single node", nil, false},
		{"only itself in the initial cluster", []string{"--initial-cluster=default=http://localhost:2380"}, false},
		{"peer listener", []string{"--listen-peer-urls=http://127.0.0.1:2380"}, true},
		{"joining", []string{"--initial-cluster-state=existing", "--initial-cluster=default=http://localhost:2380,b=http://10.0.0.2:2380"}, true},
		{"three members", []string{"--initial-cluster=default=http://localhost:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := Load(append([]string{"--data-dir", t.TempDir()}, tc.args...), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.ClusterMode(); got != tc.want {
				t.Fatalf("ClusterMode = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestInitialMembers: a name listed twice has both URLs, in order of
// first appearance, as etcd's --initial-cluster.
func TestInitialMembers(t *testing.T) {
	cfg := Default()
	cfg.Cluster.InitialCluster = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,a=http://10.0.0.1:2381"
	got, err := cfg.InitialMembers()
	if err != nil {
		t.Fatal(err)
	}
	want := []InitialMember{
		{Name: "a", PeerURLs: []string{"http://10.0.0.1:2380", "http://10.0.0.1:2381"}},
		{Name: "b", PeerURLs: []string{"http://10.0.0.2:2380"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("InitialMembers = %+v, want %+v", got, want)
	}
	cfg.Cluster.InitialCluster = "a"
	if _, err := cfg.InitialMembers(); err == nil || !strings.Contains(err.Error(), "want name=peer-url") {
		t.Fatalf("bad entry: %v", err)
	}
}

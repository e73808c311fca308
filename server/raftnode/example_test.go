package raftnode_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/metastore-dev/metastore/server/raftnode"
)

// Example starts a one-member group over an in-memory Pebble and proposes
// through it.
func Example() {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	logStore, err := raftnode.OpenLogStore(db, raftnode.LogStoreOptions{})
	if err != nil {
		log.Fatal(err)
	}
	urls := []string{"http://127.0.0.1:2380"}
	id, _ := raftnode.MemberID(urls, "my-cluster", nil)
	sm := &countingSM{}
	node, err := raftnode.Start(raftnode.Config{
		ID:           id,
		Log:          logStore,
		StateMachine: sm,
		Peers:        []raftnode.Peer{{ID: id, PeerURLs: urls}},
		NewCluster:   true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Stop()
	for range 3 {
		if _, err := node.Propose(context.Background(), []byte("x")); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := node.ReadIndex(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("applied payloads:", sm.payloads)
	fmt.Println("leader is self:", node.Leader() == id)
	// Output:
	// applied payloads: 3
	// leader is self: true
}

// countingSM counts the payloads it applies.
type countingSM struct {
	applied  uint64
	cs       raftpb.ConfState
	payloads int
}

func (s *countingSM) AppliedState() (uint64, raftpb.ConfState, error) {
	return s.applied, s.cs, nil
}

func (s *countingSM) Apply(ents []raftnode.Entry) ([]any, error) {
	res := make([]any, len(ents))
	for i, e := range ents {
		if e.Data != nil {
			s.payloads++
		}
		res[i] = e.Index
	}
	s.applied = ents[len(ents)-1].Index
	return res, nil
}

func (s *countingSM) ApplyConfChange(cc raftnode.ConfChange, confirm func() raftpb.ConfState) (any, error) {
	s.cs = confirm()
	s.applied = cc.Index
	return nil, nil
}

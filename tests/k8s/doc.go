// Package k8s runs Kubernetes' storage layer against metastore: the
// k8s.io/apiserver etcd3 store (the code kube-apiserver uses to talk to
// etcd), its generic storage test suite (k8s.io/apiserver/pkg/storage/testing)
// and scenarios of our own that assert what an apiserver observes — paged
// lists at a revision, conflicting updates, preconditions, watches from a
// revision, progress requests, the apiserver's compactor and the resulting
// 410s, event leases, object counts and db-size stats. A soak test (skipped
// unless METASTORE_K8S_SOAK is set) runs a kube-apiserver-like workload.
//
// Every test starts its own metastore binary, built once from the root
// module, on a free loopback port with a fresh data directory.
package k8s

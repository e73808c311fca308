package apply

import (
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"

	"github.com/metastore-dev/metastore/mvcc"
)

// memberAttrSet applies etcd's ClusterMemberAttrSet: a started member
// publishes its name and client URLs, so that every member lists them. An
// unknown or removed member is ignored (etcd's applier does the same with a
// warning: the member may have been removed since it proposed).
func (a *Applier) memberAttrSet(b *mvcc.Batch, r *membershippb.ClusterMemberAttrSetRequest) Result {
	cur := a.members.Load()
	m := cur.Member(r.Member_ID)
	if m == nil || r.MemberAttributes == nil {
		return Result{Resp: &pb.MemberListResponse{}}
	}
	next := &Membership{Members: make([]*pb.Member, len(cur.Members)), Removed: cur.Removed}
	for i, x := range cur.Members {
		if x.ID == r.Member_ID {
			c := *x
			c.Name = r.MemberAttributes.Name
			c.ClientURLs = slices.Clone(r.MemberAttributes.ClientUrls)
			x = &c
		}
		next.Members[i] = x
	}
	if err := writeMembers(b, next); err != nil {
		return Result{Err: err}
	}
	a.members.Store(next)
	return Result{Resp: &pb.MemberListResponse{}}
}

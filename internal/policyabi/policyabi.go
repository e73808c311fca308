package policyabi

// Op is the request's operation (the op byte).
type Op uint8

// Operations of ABI v1.
const (
	OpRange       Op = 1
	OpPut         Op = 2
	OpDeleteRange Op = 3
	OpTxn         Op = 4
	OpWatch       Op = 5
	OpLeaseRevoke Op = 6
	OpCompact     Op = 7
	// OpAdmin is every request that needs the root role (auth management,
	// maintenance); it carries no key ranges.
	OpAdmin Op = 8
)

// IsWrite reports whether op changes data.
func (o Op) IsWrite() bool {
	return o == OpPut || o == OpDeleteRange || o == OpLeaseRevoke || o == OpCompact || o == OpAdmin
}

// Request flags (the flags byte).
const (
	FlagSerializable uint8 = 1 << 0
	FlagKeysOnly     uint8 = 1 << 1
	FlagCountOnly    uint8 = 1 << 2
	FlagPrevKV       uint8 = 1 << 3
)

// Perm is the permission a key range needs (a range's permission byte).
type Perm uint8

// Permissions.
const (
	PermRead  Perm = 1
	PermWrite Perm = 2
)

// AdmitKind is the type of the etcd protobuf message an admission request
// carries.
type AdmitKind uint8

// Admission kinds.
const (
	AdmitPut         AdmitKind = 1 // etcdserverpb.PutRequest
	AdmitDeleteRange AdmitKind = 2 // etcdserverpb.DeleteRangeRequest
	AdmitTxn         AdmitKind = 3 // etcdserverpb.TxnRequest
)

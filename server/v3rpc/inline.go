package v3rpc

import "google.golang.org/protobuf/encoding/protowire"

// rangeMethod is the KV service's Range, as the transport names it.
const rangeMethod = "/etcdserverpb.KV/Range"

// InlineCall reports whether a unary call may run on the lean transport's
// connection reader (h2grpc.Options.Inline): a serializable Range of one
// key, which never waits (no read round, no proposal) and costs about what
// handing it to a worker does. A Range of many keys could hold the reader
// for long, so it goes to a worker as every other call. msg is the
// request's wire encoding; it is read as protobuf decodes it (the last
// occurrence of a field wins), and anything unexpected answers false.
func InlineCall(path string, msg []byte) bool {
	serializable, ok := oneKeyRange(path, msg)
	return ok && serializable
}

// DeferredRead reports whether a unary call is a linearizable Range of one
// key, which the lean transport may leave waiting for its read round
// without a worker (Server.DeferRead); msg is read as InlineCall reads it.
func DeferredRead(path string, msg []byte) bool {
	serializable, ok := oneKeyRange(path, msg)
	return ok && !serializable
}

// oneKeyRange reports whether the call is a Range of one key (ok) and
// whether it is serializable.
func oneKeyRange(path string, msg []byte) (serializable, ok bool) {
	if path != rangeMethod {
		return false, false
	}
	oneKey := true
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return false, false
		}
		msg = msg[n:]
		switch {
		case num == 2 && typ == protowire.BytesType: // range_end
			v, n := protowire.ConsumeBytes(msg)
			if n < 0 {
				return false, false
			}
			oneKey = len(v) == 0
			msg = msg[n:]
		case num == 7 && typ == protowire.VarintType: // serializable
			v, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return false, false
			}
			serializable = v != 0
			msg = msg[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return false, false
			}
			msg = msg[n:]
		}
	}
	return serializable, oneKey
}

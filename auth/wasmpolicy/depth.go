package wasmpolicy

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// checkTxnDepth walks a TxnRequest's wire encoding, without decoding it,
// and refuses one whose txns nest deeper than maxTxnDepth. The generated
// Unmarshal recurses once per level with no bound: a 1.5 MiB mutation of
// nothing but nested txns is ~200,000 levels, a Go stack of over 100 MB
// and as many allocations before txnItems could refuse it.
func checkTxnDepth(msg []byte) error {
	return txnDepth(msg, 0)
}

var errTxnDepth = fmt.Errorf("txns nested too deep (over %d levels)", maxTxnDepth)

// TxnRequest fields 2 and 3 (success, failure) are RequestOps; RequestOp
// field 4 (request_txn) is a TxnRequest.
func txnDepth(b []byte, depth int) error {
	if depth > maxTxnDepth {
		return errTxnDepth
	}
	return walkFields(b, func(num protowire.Number, v []byte) error {
		if num != 2 && num != 3 {
			return nil
		}
		return walkFields(v, func(num protowire.Number, v []byte) error {
			if num != 4 {
				return nil
			}
			return txnDepth(v, depth+1)
		})
	})
}

// walkFields calls f with every length-delimited field of b; it fails on
// malformed input.
func walkFields(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errors.New("malformed protobuf")
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errors.New("malformed protobuf")
			}
			if err := f(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errors.New("malformed protobuf")
		}
		b = b[n:]
	}
	return nil
}

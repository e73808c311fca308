package v3lockpb

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/runtime/protoiface"
	"google.golang.org/protobuf/runtime/protoimpl"
)

// embedded is a nested message with gogo's generated marshalling methods,
// as etcd's ResponseHeader and KeyValue have, and as ours implement.
type embedded interface {
	Size() int
	MarshalToSizedBuffer([]byte) (int, error)
}

func sizeBytes(num protowire.Number, v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(v))
}

func sizeInt(num protowire.Number, v int64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(uint64(v))
}

// sizeMsg is the size of a set message field (call it only when set: an
// empty message is still encoded, as a zero-length field).
func sizeMsg(num protowire.Number, m embedded) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(m.Size())
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendMsg(b []byte, num protowire.Number, m embedded) ([]byte, error) {
	n := m.Size()
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	start := len(b)
	b = append(b, make([]byte, n)...)
	if _, err := m.MarshalToSizedBuffer(b[start:]); err != nil {
		return nil, err
	}
	return b, nil
}

// marshalInto encodes with appendTo into buf, which must be exactly the
// message's size (gogo's MarshalToSizedBuffer contract).
func marshalInto(buf []byte, appendTo func([]byte) ([]byte, error)) (int, error) {
	out, err := appendTo(buf[:0])
	if err != nil {
		return 0, err
	}
	if len(out) != len(buf) || (len(out) > 0 && &out[0] != &buf[0]) {
		return 0, fmt.Errorf("v3lockpb: message size changed while marshalling")
	}
	return len(out), nil
}

// field is one decoded field: varint holds a varint field's value, bytes a
// length-delimited field's contents (aliasing the input).
type field struct {
	num    protowire.Number
	typ    protowire.Type
	varint uint64
	bytes  []byte
}

// forEachField decodes b field by field; unknown fields are skipped, as
// generated code does.
func forEachField(b []byte, f func(field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		fl := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			fl.varint, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			fl.bytes, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(fl); err != nil {
			return err
		}
	}
	return nil
}

// wrongType is gogo's error for a known field with another wire type.
func wrongType(fl field, name string) error {
	return fmt.Errorf("proto: wrong wireType = %d for field %s", fl.typ, name)
}

// bytesOf copies a bytes field; like gogo's, a present empty field decodes
// to an empty, non-nil slice.
func bytesOf(fl field, name string, dst *[]byte) error {
	if fl.typ != protowire.BytesType {
		return wrongType(fl, name)
	}
	*dst = append([]byte{}, fl.bytes...)
	return nil
}

func intOf(fl field, name string, dst *int64) error {
	if fl.typ != protowire.VarintType {
		return wrongType(fl, name)
	}
	*dst = int64(fl.varint)
	return nil
}

// msgOf decodes an embedded message field into a fresh m and stores it.
func msgOf[M interface{ Unmarshal([]byte) error }](fl field, name string, m M, dst *M) error {
	if fl.typ != protowire.BytesType {
		return wrongType(fl, name)
	}
	if err := m.Unmarshal(fl.bytes); err != nil {
		return err
	}
	*dst = m
	return nil
}

// text is a message's String: protobuf's text format, through the same
// reflection over struct tags that JSON uses.
func text(m protoiface.MessageV1) string {
	return protoimpl.X.MessageStringOf(protoimpl.X.ProtoMessageV2Of(m))
}

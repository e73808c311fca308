package v3lockpb

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// LockRequest is v3lockpb.LockRequest: acquire the lock called Name, held
// as long as lease Lease lives (0: a fresh lease of 60 seconds).
type LockRequest struct {
	Name  []byte `protobuf:"bytes,1,opt,name=name,proto3" json:"name,omitempty"`
	Lease int64  `protobuf:"varint,2,opt,name=lease,proto3" json:"lease,omitempty"`
}

func (m *LockRequest) Reset()         { *m = LockRequest{} }
func (m *LockRequest) String() string { return text(m) }
func (*LockRequest) ProtoMessage()    {}

// Size is the encoded size.
func (m *LockRequest) Size() int { return sizeBytes(1, m.Name) + sizeInt(2, m.Lease) }

func (m *LockRequest) appendTo(b []byte) ([]byte, error) {
	return appendInt(appendBytes(b, 1, m.Name), 2, m.Lease), nil
}

// Marshal encodes m.
func (m *LockRequest) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *LockRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *LockRequest) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return bytesOf(fl, "Name", &m.Name)
		case 2:
			return intOf(fl, "Lease", &m.Lease)
		}
		return nil
	})
}

// LockResponse is v3lockpb.LockResponse: Key is the caller's key, which
// owns the lock until it is deleted (Unlock) or its lease ends.
type LockResponse struct {
	Header *pb.ResponseHeader `protobuf:"bytes,1,opt,name=header,proto3" json:"header,omitempty"`
	Key    []byte             `protobuf:"bytes,2,opt,name=key,proto3" json:"key,omitempty"`
}

func (m *LockResponse) Reset()         { *m = LockResponse{} }
func (m *LockResponse) String() string { return text(m) }
func (*LockResponse) ProtoMessage()    {}

// GetHeader returns the header or nil.
func (m *LockResponse) GetHeader() *pb.ResponseHeader {
	if m == nil {
		return nil
	}
	return m.Header
}

// Size is the encoded size.
func (m *LockResponse) Size() int {
	n := sizeBytes(2, m.Key)
	if m.Header != nil {
		n += sizeMsg(1, m.Header)
	}
	return n
}

func (m *LockResponse) appendTo(b []byte) ([]byte, error) {
	if m.Header != nil {
		var err error
		if b, err = appendMsg(b, 1, m.Header); err != nil {
			return nil, err
		}
	}
	return appendBytes(b, 2, m.Key), nil
}

// Marshal encodes m.
func (m *LockResponse) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *LockResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *LockResponse) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return msgOf(fl, "Header", new(pb.ResponseHeader), &m.Header)
		case 2:
			return bytesOf(fl, "Key", &m.Key)
		}
		return nil
	})
}

// UnlockRequest is v3lockpb.UnlockRequest: release the lock owned by Key.
type UnlockRequest struct {
	Key []byte `protobuf:"bytes,1,opt,name=key,proto3" json:"key,omitempty"`
}

func (m *UnlockRequest) Reset()         { *m = UnlockRequest{} }
func (m *UnlockRequest) String() string { return text(m) }
func (*UnlockRequest) ProtoMessage()    {}

// Size is the encoded size.
func (m *UnlockRequest) Size() int { return sizeBytes(1, m.Key) }

func (m *UnlockRequest) appendTo(b []byte) ([]byte, error) { return appendBytes(b, 1, m.Key), nil }

// Marshal encodes m.
func (m *UnlockRequest) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *UnlockRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *UnlockRequest) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		if fl.num == 1 {
			return bytesOf(fl, "Key", &m.Key)
		}
		return nil
	})
}

// UnlockResponse is v3lockpb.UnlockResponse.
type UnlockResponse struct {
	Header *pb.ResponseHeader `protobuf:"bytes,1,opt,name=header,proto3" json:"header,omitempty"`
}

func (m *UnlockResponse) Reset()         { *m = UnlockResponse{} }
func (m *UnlockResponse) String() string { return text(m) }
func (*UnlockResponse) ProtoMessage()    {}

// Size is the encoded size.
func (m *UnlockResponse) Size() int { return headerOnlySize(m.Header) }

func (m *UnlockResponse) appendTo(b []byte) ([]byte, error) { return appendHeaderOnly(b, m.Header) }

// Marshal encodes m.
func (m *UnlockResponse) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *UnlockResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *UnlockResponse) Unmarshal(b []byte) error {
	m.Reset()
	return unmarshalHeaderOnly(b, &m.Header)
}

// headerOnlySize, appendHeaderOnly and unmarshalHeaderOnly serve the
// responses whose only field is header = 1.
func headerOnlySize(h *pb.ResponseHeader) int {
	if h == nil {
		return 0
	}
	return sizeMsg(1, h)
}

func appendHeaderOnly(b []byte, h *pb.ResponseHeader) ([]byte, error) {
	if h == nil {
		return b, nil
	}
	return appendMsg(b, 1, h)
}

func unmarshalHeaderOnly(b []byte, h **pb.ResponseHeader) error {
	return forEachField(b, func(fl field) error {
		if fl.num == 1 {
			return msgOf(fl, "Header", new(pb.ResponseHeader), h)
		}
		return nil
	})
}

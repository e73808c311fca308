package v3lockpb

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// CampaignRequest is v3electionpb.CampaignRequest: campaign in election
// Name with Value, as long as lease Lease lives (0: a fresh 60s lease).
type CampaignRequest struct {
	Name  []byte `protobuf:"bytes,1,opt,name=name,proto3" json:"name,omitempty"`
	Lease int64  `protobuf:"varint,2,opt,name=lease,proto3" json:"lease,omitempty"`
	Value []byte `protobuf:"bytes,3,opt,name=value,proto3" json:"value,omitempty"`
}

func (m *CampaignRequest) Reset()         { *m = CampaignRequest{} }
func (m *CampaignRequest) String() string { return text(m) }
func (*CampaignRequest) ProtoMessage()    {}

// Size is the encoded size.
func (m *CampaignRequest) Size() int {
	return sizeBytes(1, m.Name) + sizeInt(2, m.Lease) + sizeBytes(3, m.Value)
}

func (m *CampaignRequest) appendTo(b []byte) ([]byte, error) {
	return appendBytes(appendInt(appendBytes(b, 1, m.Name), 2, m.Lease), 3, m.Value), nil
}

// Marshal encodes m.
func (m *CampaignRequest) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *CampaignRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *CampaignRequest) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return bytesOf(fl, "Name", &m.Name)
		case 2:
			return intOf(fl, "Lease", &m.Lease)
		case 3:
			return bytesOf(fl, "Value", &m.Value)
		}
		return nil
	})
}

// LeaderKey is v3electionpb.LeaderKey: the key a leader was elected with,
// its create revision and lease; Proclaim and Resign present it.
type LeaderKey struct {
	Name  []byte `protobuf:"bytes,1,opt,name=name,proto3" json:"name,omitempty"`
	Key   []byte `protobuf:"bytes,2,opt,name=key,proto3" json:"key,omitempty"`
	Rev   int64  `protobuf:"varint,3,opt,name=rev,proto3" json:"rev,omitempty"`
	Lease int64  `protobuf:"varint,4,opt,name=lease,proto3" json:"lease,omitempty"`
}

func (m *LeaderKey) Reset()         { *m = LeaderKey{} }
func (m *LeaderKey) String() string { return text(m) }
func (*LeaderKey) ProtoMessage()    {}

// Size is the encoded size.
func (m *LeaderKey) Size() int {
	return sizeBytes(1, m.Name) + sizeBytes(2, m.Key) + sizeInt(3, m.Rev) + sizeInt(4, m.Lease)
}

func (m *LeaderKey) appendTo(b []byte) ([]byte, error) {
	return appendInt(appendInt(appendBytes(appendBytes(b, 1, m.Name), 2, m.Key), 3, m.Rev), 4, m.Lease), nil
}

// Marshal encodes m.
func (m *LeaderKey) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *LeaderKey) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *LeaderKey) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return bytesOf(fl, "Name", &m.Name)
		case 2:
			return bytesOf(fl, "Key", &m.Key)
		case 3:
			return intOf(fl, "Rev", &m.Rev)
		case 4:
			return intOf(fl, "Lease", &m.Lease)
		}
		return nil
	})
}

// CampaignResponse is v3electionpb.CampaignResponse.
type CampaignResponse struct {
	Header *pb.ResponseHeader `protobuf:"bytes,1,opt,name=header,proto3" json:"header,omitempty"`
	Leader *LeaderKey         `protobuf:"bytes,2,opt,name=leader,proto3" json:"leader,omitempty"`
}

func (m *CampaignResponse) Reset()         { *m = CampaignResponse{} }
func (m *CampaignResponse) String() string { return text(m) }
func (*CampaignResponse) ProtoMessage()    {}

// Size is the encoded size.
func (m *CampaignResponse) Size() int {
	n := headerOnlySize(m.Header)
	if m.Leader != nil {
		n += sizeMsg(2, m.Leader)
	}
	return n
}

func (m *CampaignResponse) appendTo(b []byte) ([]byte, error) {
	b, err := appendHeaderOnly(b, m.Header)
	if err != nil || m.Leader == nil {
		return b, err
	}
	return appendMsg(b, 2, m.Leader)
}

// Marshal encodes m.
func (m *CampaignResponse) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *CampaignResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *CampaignResponse) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return msgOf(fl, "Header", new(pb.ResponseHeader), &m.Header)
		case 2:
			return msgOf(fl, "Leader", new(LeaderKey), &m.Leader)
		}
		return nil
	})
}

// LeaderRequest is v3electionpb.LeaderRequest, for Leader and Observe.
type LeaderRequest struct {
	Name []byte `protobuf:"bytes,1,opt,name=name,proto3" json:"name,omitempty"`
}

func (m *LeaderRequest) Reset()         { *m = LeaderRequest{} }
func (m *LeaderRequest) String() string { return text(m) }
func (*LeaderRequest) ProtoMessage()    {}

// Size is the encoded size.
func (m *LeaderRequest) Size() int { return sizeBytes(1, m.Name) }

func (m *LeaderRequest) appendTo(b []byte) ([]byte, error) { return appendBytes(b, 1, m.Name), nil }

// Marshal encodes m.
func (m *LeaderRequest) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *LeaderRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *LeaderRequest) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		if fl.num == 1 {
			return bytesOf(fl, "Name", &m.Name)
		}
		return nil
	})
}

// LeaderResponse is v3electionpb.LeaderResponse: the leader's key-value.
type LeaderResponse struct {
	Header *pb.ResponseHeader `protobuf:"bytes,1,opt,name=header,proto3" json:"header,omitempty"`
	Kv     *mvccpb.KeyValue   `protobuf:"bytes,2,opt,name=kv,proto3" json:"kv,omitempty"`
}

func (m *LeaderResponse) Reset()         { *m = LeaderResponse{} }
func (m *LeaderResponse) String() string { return text(m) }
func (*LeaderResponse) ProtoMessage()    {}

// Size is the encoded size.
func (m *LeaderResponse) Size() int {
	n := headerOnlySize(m.Header)
	if m.Kv != nil {
		n += sizeMsg(2, m.Kv)
	}
	return n
}

func (m *LeaderResponse) appendTo(b []byte) ([]byte, error) {
	b, err := appendHeaderOnly(b, m.Header)
	if err != nil || m.Kv == nil {
		return b, err
	}
	return appendMsg(b, 2, m.Kv)
}

// Marshal encodes m.
func (m *LeaderResponse) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *LeaderResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *LeaderResponse) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return msgOf(fl, "Header", new(pb.ResponseHeader), &m.Header)
		case 2:
			return msgOf(fl, "Kv", new(mvccpb.KeyValue), &m.Kv)
		}
		return nil
	})
}

// ResignRequest is v3electionpb.ResignRequest.
type ResignRequest struct {
	Leader *LeaderKey `protobuf:"bytes,1,opt,name=leader,proto3" json:"leader,omitempty"`
}

func (m *ResignRequest) Reset()         { *m = ResignRequest{} }
func (m *ResignRequest) String() string { return text(m) }
func (*ResignRequest) ProtoMessage()    {}

// Size is the encoded size.
func (m *ResignRequest) Size() int {
	if m.Leader == nil {
		return 0
	}
	return sizeMsg(1, m.Leader)
}

func (m *ResignRequest) appendTo(b []byte) ([]byte, error) {
	if m.Leader == nil {
		return b, nil
	}
	return appendMsg(b, 1, m.Leader)
}

// Marshal encodes m.
func (m *ResignRequest) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *ResignRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *ResignRequest) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		if fl.num == 1 {
			return msgOf(fl, "Leader", new(LeaderKey), &m.Leader)
		}
		return nil
	})
}

// ResignResponse is v3electionpb.ResignResponse.
type ResignResponse struct {
	Header *pb.ResponseHeader `protobuf:"bytes,1,opt,name=header,proto3" json:"header,omitempty"`
}

func (m *ResignResponse) Reset()         { *m = ResignResponse{} }
func (m *ResignResponse) String() string { return text(m) }
func (*ResignResponse) ProtoMessage()    {}

// Size is the encoded size.
func (m *ResignResponse) Size() int { return headerOnlySize(m.Header) }

func (m *ResignResponse) appendTo(b []byte) ([]byte, error) { return appendHeaderOnly(b, m.Header) }

// Marshal encodes m.
func (m *ResignResponse) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *ResignResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *ResignResponse) Unmarshal(b []byte) error {
	m.Reset()
	return unmarshalHeaderOnly(b, &m.Header)
}

// ProclaimRequest is v3electionpb.ProclaimRequest: the leader Leader
// announces Value.
type ProclaimRequest struct {
	Leader *LeaderKey `protobuf:"bytes,1,opt,name=leader,proto3" json:"leader,omitempty"`
	Value  []byte     `protobuf:"bytes,2,opt,name=value,proto3" json:"value,omitempty"`
}

func (m *ProclaimRequest) Reset()         { *m = ProclaimRequest{} }
func (m *ProclaimRequest) String() string { return text(m) }
func (*ProclaimRequest) ProtoMessage()    {}

// Size is the encoded size.
func (m *ProclaimRequest) Size() int {
	n := sizeBytes(2, m.Value)
	if m.Leader != nil {
		n += sizeMsg(1, m.Leader)
	}
	return n
}

func (m *ProclaimRequest) appendTo(b []byte) ([]byte, error) {
	if m.Leader != nil {
		var err error
		if b, err = appendMsg(b, 1, m.Leader); err != nil {
			return nil, err
		}
	}
	return appendBytes(b, 2, m.Value), nil
}

// Marshal encodes m.
func (m *ProclaimRequest) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *ProclaimRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *ProclaimRequest) Unmarshal(b []byte) error {
	m.Reset()
	return forEachField(b, func(fl field) error {
		switch fl.num {
		case 1:
			return msgOf(fl, "Leader", new(LeaderKey), &m.Leader)
		case 2:
			return bytesOf(fl, "Value", &m.Value)
		}
		return nil
	})
}

// ProclaimResponse is v3electionpb.ProclaimResponse.
type ProclaimResponse struct {
	Header *pb.ResponseHeader `protobuf:"bytes,1,opt,name=header,proto3" json:"header,omitempty"`
}

func (m *ProclaimResponse) Reset()         { *m = ProclaimResponse{} }
func (m *ProclaimResponse) String() string { return text(m) }
func (*ProclaimResponse) ProtoMessage()    {}

// Size is the encoded size.
func (m *ProclaimResponse) Size() int { return headerOnlySize(m.Header) }

func (m *ProclaimResponse) appendTo(b []byte) ([]byte, error) { return appendHeaderOnly(b, m.Header) }

// Marshal encodes m.
func (m *ProclaimResponse) Marshal() ([]byte, error) { return m.appendTo(make([]byte, 0, m.Size())) }

// MarshalToSizedBuffer encodes m into buf of exactly Size bytes.
func (m *ProclaimResponse) MarshalToSizedBuffer(buf []byte) (int, error) {
	return marshalInto(buf, m.appendTo)
}

// Unmarshal decodes b into m.
func (m *ProclaimResponse) Unmarshal(b []byte) error {
	m.Reset()
	return unmarshalHeaderOnly(b, &m.Header)
}

package v3rpc

// defaultQuotaBytes is etcd's default --quota-backend-bytes (2 GiB).
const defaultQuotaBytes = 2 << 30

// quotaBytes is the effective quota: 0 in the configuration means etcd's
// default.
func (s *Server) quotaBytes() int64 {
	if q := s.cfg.Limits.QuotaBackendBytes; q > 0 {
		return q
	}
	return defaultQuotaBytes
}

// QuotaBytes is the effective backend quota (etcd's default for 0).
func (s *Server) QuotaBytes() int64 { return s.quotaBytes() }

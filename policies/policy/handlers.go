package policy

var (
	initHandler      func(settings []byte) error
	authorizeHandler func(*Request) Result
	admitHandler     func(*Request, Admission) Result

	// One request view, reused: a guest instance serves one call at a time.
	req Request

	lastReason   []byte
	lastMutation []byte
)

// HandleInit registers the handler that receives the policy's settings
// (the YAML `settings`, as JSON) once per instance. Returning an error
// rejects the settings and the policy fails to load with that message.
func HandleInit(f func(settings []byte) error) { initHandler = f }

// HandleAuthorize registers the authorization handler.
func HandleAuthorize(f func(*Request) Result) { authorizeHandler = f }

// HandleAdmit registers the admission handler; Admission carries the write
// being admitted.
func HandleAdmit(f func(*Request, Admission) Result) { admitHandler = f }

// RunInit hands settings to the init handler (what policy_init does).
func RunInit(settings []byte) error {
	if initHandler == nil {
		return nil
	}
	return initHandler(settings)
}

// RunAuthorize decodes an encoded request and runs the authorization
// handler (what policy_authorize does). The reason is the handler's, or
// the SDK's when no handler is registered or the request is malformed.
func RunAuthorize(b []byte) (Verdict, string) {
	if authorizeHandler == nil {
		return VerdictDeny, "policy: no authorize handler registered"
	}
	if err := req.parse(b); err != nil {
		return VerdictDeny, err.Error()
	}
	res := authorizeHandler(&req)
	if res.Verdict == VerdictMutated {
		return VerdictDeny, "policy: an authorize handler cannot mutate"
	}
	return res.Verdict, res.Reason
}

// RunAdmit decodes an encoded admission request and runs the admission
// handler (what policy_admit does).
func RunAdmit(b []byte) (Verdict, string, []byte) {
	if admitHandler == nil {
		return VerdictDeny, "policy: no admit handler registered", nil
	}
	if err := req.parse(b); err != nil {
		return VerdictDeny, err.Error(), nil
	}
	a, err := req.admission()
	if err != nil {
		return VerdictDeny, err.Error(), nil
	}
	res := admitHandler(&req, a)
	if res.Verdict == VerdictMutated && len(res.Mutation) == 0 {
		return VerdictDeny, "policy: empty mutation", nil
	}
	return res.Verdict, res.Reason, res.Mutation
}

// setReason keeps s for policy_reason without allocating when it fits.
func setReason(s string) {
	lastReason = append(lastReason[:0], s...)
}

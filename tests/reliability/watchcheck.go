package reliability

import (
	"fmt"
	"slices"
)

// The watch guarantees CheckWatch verifies, as etcd documents them
// (https://etcd.io/docs/v3.6/learning/api_guarantees/#watch-apis), each the
// name of the check a violation fails.
const (
	// WatchOrdered: events come in revision order, and a response's header
	// revision is not older than its events.
	WatchOrdered = "ordered"
	// WatchUnique: no event is delivered twice.
	WatchUnique = "unique"
	// WatchReliable: every committed event the watcher matches is
	// delivered, as committed (no gap, nothing invented or altered).
	WatchReliable = "reliable"
	// WatchAtomic: all of a revision's events come in one response.
	WatchAtomic = "atomic"
	// WatchResumable: a watcher re-created from the revision after the
	// newest it saw continues exactly there.
	WatchResumable = "resumable"
	// WatchProgress: a progress notification never carries a revision at
	// or past an event not yet delivered.
	WatchProgress = "progress"
	// WatchCanceled: the server canceled a watcher nobody asked to cancel
	// (there is no compaction in these runs).
	WatchCanceled = "canceled"
)

// WatchViolation is one broken guarantee.
type WatchViolation struct {
	Watcher string
	Check   string
	Msg     string
}

func (v WatchViolation) String() string { return fmt.Sprintf("%s: %s: %s", v.Watcher, v.Check, v.Msg) }

// expected returns the committed events watcher spec must see, grouped by
// revision, for revisions [from, to].
func (c *Committed) expected(spec WatchSpec, from, to int64) [][]WatchEvent {
	var out [][]WatchEvent
	for rev := from; rev <= to; rev++ {
		var evs []WatchEvent
		for _, ev := range c.Revs[rev] {
			if !spec.matches(KeyName(ev.Key)) {
				continue
			}
			if !spec.PrevKV {
				ev.Prev = KV{}
			}
			evs = append(evs, ev)
		}
		if len(evs) > 0 {
			out = append(out, evs)
		}
	}
	return out
}

func sortedEvents(evs []WatchEvent) []WatchEvent {
	s := slices.Clone(evs)
	slices.SortFunc(s, func(a, b WatchEvent) int { return a.Key - b.Key })
	return s
}

// CheckWatch checks one watcher's recording against the committed history
// up to revision through, the newest revision the watcher was known to
// have reached. It returns every violation found (at most a few per
// check, so one bug does not bury the others).
func CheckWatch(c *Committed, rec WatchRecording, through int64) []WatchViolation {
	var vs []WatchViolation
	count := map[string]int{}
	fail := func(check, format string, args ...any) {
		if count[check]++; count[check] <= 3 {
			vs = append(vs, WatchViolation{Watcher: rec.Spec.Name, Check: check, Msg: fmt.Sprintf(format, args...)})
		}
	}
	if rec.Start < c.From || through > c.To {
		fail(WatchReliable, "recording [%d, %d] outside the committed history read [%d, %d]", rec.Start, through, c.From, c.To)
		return vs
	}
	want := c.expected(rec.Spec, rec.Start, through)
	next := 0              // index in want of the next revision to deliver
	delivered := int64(0)  // newest revision delivered
	known := rec.Start - 1 // newest revision delivered or vouched for by progress
	seen := map[[2]int64]bool{}
	incarnation := 0
	resumed := false // a re-created watcher that has not had an event yet
	for ri, r := range rec.Records {
		switch r.Kind {
		case RecCreated:
			incarnation++
			if r.Start != known+1 {
				fail(WatchResumable, "incarnation %d created from revision %d, but the newest revision seen was %d", incarnation, r.Start, known)
			}
			resumed = incarnation > 1
		case RecCanceled:
			fail(WatchCanceled, "canceled by the server at %d: %q", r.Rev, r.Reason)
		case RecProgress:
			if next < len(want) && want[next][0].Rev <= r.Rev {
				fail(WatchProgress, "progress notification at %d (stream-wide %v, response %d) while the event %s was not delivered yet", r.Rev, r.Stream, ri, want[next][0])
			}
			known = max(known, r.Rev)
		case RecEvents:
			check := func(def string) string {
				if resumed {
					return WatchResumable
				}
				return def
			}
			// Split the response into its revisions.
			for i := 0; i < len(r.Events); {
				j := i
				for j < len(r.Events) && r.Events[j].Rev == r.Events[i].Rev {
					j++
				}
				group := r.Events[i:j]
				rev := group[0].Rev
				i = j
				for _, ev := range group {
					k := [2]int64{ev.Rev, int64(ev.Key)}
					if seen[k] {
						fail(check(WatchUnique), "event %s delivered again (response %d)", ev, ri)
					}
					seen[k] = true
				}
				if rev <= delivered {
					if !seen[[2]int64{rev, -2}] || rev < delivered {
						fail(check(WatchOrdered), "revision %d delivered after revision %d (response %d)", rev, delivered, ri)
					}
					continue
				}
				if rev > r.Rev {
					fail(WatchOrdered, "response %d has header revision %d older than its event at %d", ri, r.Rev, rev)
				}
				// Skip (and report) committed revisions the watcher missed.
				for next < len(want) && want[next][0].Rev < rev {
					fail(check(WatchReliable), "revision %d (%v) never delivered; the next delivered is %d (response %d)", want[next][0].Rev, want[next], rev, ri)
					next++
				}
				if next == len(want) || want[next][0].Rev != rev {
					fail(check(WatchReliable), "revision %d delivered (%v, response %d) but the watcher matches no committed event there", rev, group, ri)
					delivered = rev
					continue
				}
				got, exp := sortedEvents(group), want[next]
				switch {
				case slices.Equal(got, exp):
				case len(got) < len(exp) && isSubset(got, exp):
					fail(WatchAtomic, "revision %d split: response %d has %v of %v", rev, ri, got, exp)
				default:
					fail(check(WatchReliable), "revision %d delivered as %v, committed %v (response %d)", rev, got, exp, ri)
				}
				seen[[2]int64{rev, -2}] = true
				next++
				delivered, known = rev, max(known, rev)
				resumed = false
			}
		}
	}
	for ; next < len(want); next++ {
		fail(WatchReliable, "revision %d (%v) never delivered (the watcher was known to have reached %d)", want[next][0].Rev, want[next], through)
	}
	return vs
}

func isSubset(a, b []WatchEvent) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// CheckWatches checks every recording; through is the revision all of them
// reached.
func CheckWatches(c *Committed, recs []WatchRecording, through int64) []WatchViolation {
	var vs []WatchViolation
	for _, rec := range recs {
		vs = append(vs, CheckWatch(c, rec, through)...)
	}
	return vs
}

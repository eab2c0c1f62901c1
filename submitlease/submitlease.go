// Package submitlease keeps consumer replicas from submitting the same return
// parcel to PandaPon at the same time, or again while PandaPon may still be
// carrying out an earlier submission that got no answer.
//
// Before submitting a parcel, a handler takes its lease: an entry in a
// JetStream key-value bucket shared by every replica, keyed by the refund id
// and a hash of the logistics number, created only if absent. The entry says
// who holds it and in which state:
//
//   - submitting: the holder may send its request until its deadline (the
//     deadline of the context it acquired with). Nobody else may submit
//     before that deadline plus the hold: a request sent at the last moment
//     gets the hold to be carried out and show in PandaPon's state.
//   - unanswered: the holder's request got no usable answer (Lease.Unanswered
//     stamps the moment). Nobody, the holder's own redelivery included, may
//     submit before that moment plus the hold.
//
// Past that (plus ClockSkewMargin, and with the longer of the stored and
// the caller's hold), the lease is stale and is taken over
// (compare-and-swap) by the next attempt. Its Lease says TookOver: the
// caller's view of PandaPon's state predates the takeover, so it must query
// again before submitting (PandaPon may have carried the old submission out
// while that query was under way). Every refused attempt gets a *HeldError
// saying when to come back. Releasing the lease (after a refusal, or a failure that provably
// never reached PandaPon) lets the next attempt submit at once; a success
// keeps it, as PandaPon's state now shows the parcel. A write to the bucket
// that got no answer may have been stored: it is read back, and an entry
// carrying this attempt's random tag is this attempt's lease; while the key
// shows that it has not landed, the write is made again (see WriteTimeout).
//
// The bucket is created by topology.Topology.EnsureStreams. Times are
// compared across replicas and with the NATS server's timestamps, so clocks
// must agree to well within the hold (NTP does).
package submitlease

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Store takes and releases leases in one key-value bucket. It binds the
// bucket on first use (and again after it was recreated), so it can be built
// before NATS is reachable. A Store is safe for concurrent use.
type Store struct {
	js     jetstream.JetStream
	bucket string
	now    func() time.Time
	// beforeTakeover, when set (by tests), runs between reading a stale
	// lease and replacing it.
	beforeTakeover func()
	// wrapKV, when set (by tests), wraps the bucket when it is bound.
	wrapKV func(jetstream.KeyValue) jetstream.KeyValue
	// readBackFor, when set (by tests), replaces ReadBackTimeout.
	readBackFor time.Duration

	mu sync.Mutex
	kv jetstream.KeyValue
}

// New returns a Store for bucket (topology.Topology.SubmissionsBucket). It
// does no I/O.
func New(js jetstream.JetStream, bucket string) *Store {
	return &Store{js: js, bucket: bucket, now: time.Now}
}

// OpTimeout bounds each bucket operation of Acquire, Unanswered and
// Release. Without it a request to a bucket whose stream has just lost its
// leader would wait for the caller's whole deadline.
const OpTimeout = 5 * time.Second

// WriteTimeout bounds the wait for the answer to one write of the lease
// (its creation, or the takeover of a stale one). A healthy bucket answers
// in milliseconds; one whose stream has just lost its leader never answers
// the writes it received, and a new leader is elected within seconds. A
// write without an answer is read back and, while it has not landed, made
// again (see readBack).
const WriteTimeout = time.Second

// NoDeadlineBound is how long a submission acquired with a context without
// deadline is assumed to go on.
const NoDeadlineBound = 10 * time.Minute

// ClockSkewMargin is added to every hold: deadlines are written by one
// replica's clock, stamps by the NATS server's, and read by another's.
const ClockSkewMargin = time.Second

// Lease states, as stored.
const (
	stateSubmitting = "submitting"
	stateUnanswered = "unanswered"
)

// entry is a lease as stored in the bucket (JSON).
type entry struct {
	Holder string    `json:"holder"`
	State  string    `json:"state"`
	Until  time.Time `json:"until,omitzero"` // submitting: the holder's deadline
	Hold   string    `json:"hold"`           // the hold it was taken with, for operators
	// Attempt is random per Acquire call: it tells the call that wrote the
	// entry from another attempt of the same holder (input).
	Attempt string `json:"attempt,omitempty"`
}

// HeldError reports a lease held by another submission of the same parcel
// (or an earlier one of the same input).
type HeldError struct {
	RefundID, LogisticsNo string
	// Holder is the input event id of the submission holding it.
	Holder string
	// State is "submitting" or "unanswered".
	State string
	// RetryIn is how long until the lease may be taken over.
	RetryIn time.Duration
}

func (e *HeldError) Error() string {
	what := "is being submitted by input " + e.Holder
	if e.State == stateUnanswered {
		what = "was submitted without an answer by input " + e.Holder
	}
	return fmt.Sprintf("parcel %q of refund %s %s: PandaPon may still be carrying it out; the lease frees in %s",
		e.LogisticsNo, e.RefundID, what, e.RetryIn.Round(time.Millisecond))
}

// Lease is a taken lease.
type Lease struct {
	// TookOver reports that the lease replaced a stale one: query
	// PandaPon again before submitting.
	TookOver bool

	kv       jetstream.KeyValue
	key      string
	holder   string
	hold     time.Duration
	revision uint64
}

// Unanswered records that the holder's request got no usable answer, so the
// hold now runs from this moment. Errors are worth logging only: the lease
// then stays "submitting" until the holder's deadline plus the hold, which
// is as safe and at most the deadline later.
func (l *Lease) Unanswered(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	b, _ := json.Marshal(entry{Holder: l.holder, State: stateUnanswered, Hold: l.hold.String()})
	rev, err := l.kv.Update(ctx, l.key, b, l.revision)
	if err != nil {
		return err
	}
	l.revision = rev
	return nil
}

// Release deletes the lease if it is still this one (a lease taken over
// since is left alone). Errors are worth logging only: an unreleased lease
// delays the next submission until it is stale.
func (l *Lease) Release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.revision))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// Acquire takes the lease of parcel (refundID, logisticsNo) for holder, the
// input event id, for a submission that ends by ctx's deadline
// (NoDeadlineBound when it has none). It fails with a *HeldError while a
// lease of the same parcel is not stale (see the package documentation),
// and with the bucket's error when NATS cannot be asked within OpTimeout
// (the caller should retry later, not submit). A write that got no answer
// is read back (for up to ReadBackTimeout more, see readBack): if it was
// stored, the lease is this call's.
func (s *Store) Acquire(ctx context.Context, refundID, logisticsNo, holder string, hold time.Duration) (*Lease, error) {
	until, ok := ctx.Deadline()
	if !ok {
		until = s.now().Add(NoDeadlineBound)
	}
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	kv, err := s.bind(ctx)
	if err != nil {
		return nil, err
	}
	key := Key(refundID, logisticsNo)
	attempt := rand.Text()
	value, _ := json.Marshal(entry{Holder: holder, State: stateSubmitting, Until: until, Hold: hold.String(), Attempt: attempt})
	lease := func(rev uint64) *Lease {
		return &Lease{kv: kv, key: key, holder: holder, hold: hold, revision: rev}
	}
	held := func(e entry, retryIn time.Duration) error {
		return &HeldError{RefundID: refundID, LogisticsNo: logisticsNo, Holder: e.Holder, State: e.State, RetryIn: retryIn}
	}
	createKey := func(ctx context.Context) (uint64, error) { return kv.Create(ctx, key, value) }
	// create takes the lease if the key is absent; held means it is not.
	create := func() (l *Lease, held bool, err error) {
		rev, err := writeOnce(ctx, createKey)
		switch {
		case err == nil:
			return lease(rev), false, nil
		case keyExists(err):
			return nil, true, nil
		}
		if rev, ok := s.readBack(ctx, kv, key, attempt, 0, err, createKey); ok {
			return lease(rev), false, nil
		}
		return nil, false, s.failed(err)
	}
	l, exists, err := create()
	if !exists {
		return l, err
	}
	cur, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) { // released meanwhile: one more try
		l, exists, err := create()
		if exists {
			return nil, held(entry{Holder: "(another)", State: stateSubmitting}, time.Second)
		}
		return l, err
	}
	if err != nil {
		return nil, s.failed(err)
	}
	var e entry
	if json.Unmarshal(cur.Value(), &e) != nil || e.State == "" {
		// Not ours to read: assume the longest a submission may take.
		e = entry{Holder: string(cur.Value()), State: stateSubmitting, Until: cur.Created().Add(NoDeadlineBound)}
	}
	if stored, err := time.ParseDuration(e.Hold); err == nil && stored > hold {
		hold = stored // the holder's setting, if longer (a config change under way)
	}
	stale := cur.Created().Add(hold) // unanswered: the hold from the stamp
	if e.State != stateUnanswered {
		stale = e.Until.Add(hold)
	}
	if wait := stale.Add(ClockSkewMargin).Sub(s.now()); wait > 0 {
		return nil, held(e, wait)
	}
	// Stale: whatever its submission did, PandaPon's state has had the hold
	// to show it, which the caller checks again (TookOver).
	if s.beforeTakeover != nil {
		s.beforeTakeover()
	}
	takeOver := func(ctx context.Context) (uint64, error) { return kv.Update(ctx, key, value, cur.Revision()) }
	rev, err := writeOnce(ctx, takeOver)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, held(entry{Holder: "(another)", State: stateSubmitting}, time.Second)
	}
	if err != nil {
		var ok bool
		if rev, ok = s.readBack(ctx, kv, key, attempt, cur.Revision(), err, takeOver); !ok {
			return nil, s.failed(err)
		}
	}
	l = lease(rev)
	l.TookOver = true
	return l, nil
}

// writeOnce makes one write of the lease, waiting at most WriteTimeout for
// its answer.
func writeOnce(ctx context.Context, write func(context.Context) (uint64, error)) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, WriteTimeout)
	defer cancel()
	return write(ctx)
}

// keyExists reports whether a Create failed because the key is present.
// nats.go maps the conflict to ErrKeyExists except on its path that
// re-creates a deleted key, where a replicated bucket's code 10164 comes
// back unmapped.
func keyExists(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// refused reports whether a write failed with the server's (or the
// client's) certain refusal, so that it was not stored: an API error (the
// server answers one only before storing), no responders (nobody received
// it), an invalid key.
func refused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrInvalidKey) || errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// closedConn reports errors that no retry within ReadBackTimeout can clear.
func closedConn(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining)
}

// ReadBackTimeout bounds readBack's attempts to read an entry whose write
// got no answer.
const ReadBackTimeout = 5 * time.Second

// readBack reads the lease after a write that failed with writeErr; the
// write was conditional on the key being at revision prev (0: absent). A
// refused write (see refused) was not stored, and ok is false at once. Any
// other failure (a timeout, a lost connection, a leader change) may have
// stored the write and lost its answer, or the write may still be on its
// way (a read can be answered by a replica that lags behind), or it may
// have been lost with the node it was sent to. So readBack reads until it
// can tell: the entry carries this attempt's tag (ok, the lease is held, its
// revision is returned), or the key has moved on from prev to a state this
// write can no longer produce (another's entry, or prev deleted) or
// ReadBackTimeout passes (ok false: the write counts as failed). While the
// key is still at prev, ctx (Acquire's: the caller's, capped at OpTimeout)
// is not done and at least 2 × WriteTimeout of reading is left, it also
// makes the write again (rewrite, each within WriteTimeout): conditional on
// prev like the first, with the same tag, so whichever copy lands first is
// this attempt's lease and the others fail on the condition. It stops
// rewriting at a conflict (a copy landed) or a lasting refusal. Without the reading, a lease whose
// answer was lost would hold off its own input, like a holder that died
// while sending, until its deadline plus the hold; without the rewriting, a
// write lost with a dying node would fail the input after ReadBackTimeout
// (10 s with the first write's wait, in the chaos suite's cluster-node-loss)
// instead of landing once a new leader is elected. The reads, each within
// WriteTimeout, are not bound to ctx, whose deadline may be what failed the
// write: a lease read back after it is then released by the caller's failure
// handling, not left to go stale.
func (s *Store) readBack(ctx context.Context, kv jetstream.KeyValue, key, attempt string, prev uint64, writeErr error, rewrite func(context.Context) (uint64, error)) (rev uint64, ok bool) {
	if refused(writeErr) || closedConn(writeErr) {
		return 0, false
	}
	limit := ReadBackTimeout
	if s.readBackFor > 0 {
		limit = s.readBackFor
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	defer cancel()
	// A rewrite may itself be stored and its answer lost: the last one is
	// made early enough to be read back, margin before the end.
	margin := min(2*WriteTimeout, limit/2)
	readUntil := time.Now().Add(limit)
	wait := 50 * time.Millisecond
	rewriting := true
	for {
		rctx, rcancel := context.WithTimeout(ctx, WriteTimeout)
		cur, err := kv.Get(rctx, key)
		rcancel()
		atPrev := false
		switch {
		case err == nil:
			var e entry
			if json.Unmarshal(cur.Value(), &e) == nil && e.Attempt == attempt {
				return cur.Revision(), true
			}
			if cur.Revision() != prev {
				return 0, false // another's entry: this write can no longer land
			}
			atPrev = true
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			if prev != 0 {
				return 0, false // prev was deleted: this write can no longer land
			}
			atPrev = true
		case closedConn(err) || errors.Is(err, jetstream.ErrInvalidKey):
			return 0, false
		}
		if atPrev && rewriting && caller.Err() == nil && time.Until(readUntil) > margin {
			rev, err := writeOnce(caller, rewrite)
			switch {
			case err == nil:
				return rev, true
			case keyExists(err) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
				// A copy landed (revisions only grow, so no later copy
				// can): the next read tells whose.
				rewriting = false
				continue
			case closedConn(err):
				return 0, false
			case refused(err) && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse):
				rewriting = false // refused for good: only an earlier copy may still land
			}
			// No answer (or nobody to answer yet, in a failover): read, and
			// write, again after the pause.
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// Key is the bucket key of a parcel: the refund id (digits, as inputs are
// validated; anything else is hashed too), a dot, and the first 32 hex
// digits of the SHA-256 of the logistics number, which may hold characters
// a key may not.
func Key(refundID, logisticsNo string) string {
	if refundID == "" || strings.Trim(refundID, "0123456789") != "" {
		refundID = hash(refundID)
	}
	return refundID + "." + hash(logisticsNo)
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func (s *Store) bind(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if err != nil {
		return nil, fmt.Errorf("submission leases: bucket %s: %w", s.bucket, err)
	}
	if s.wrapKV != nil {
		kv = s.wrapKV(kv)
	}
	s.kv = kv
	return kv, nil
}

// failed wraps a bucket error and forgets a bucket that no longer exists,
// so that the next call binds the recreated one.
func (s *Store) failed(err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		s.mu.Lock()
		s.kv = nil
		s.mu.Unlock()
	}
	return fmt.Errorf("submission leases: bucket %s: %w", s.bucket, err)
}

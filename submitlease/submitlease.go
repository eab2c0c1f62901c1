// Package submitlease keeps consumer replicas from submitting the same return
// parcel to PandaPon at the same time.
//
// Before submitting a parcel, a handler takes its lease: an entry in a
// JetStream key-value bucket shared by every replica, keyed by the refund id
// and a hash of the logistics number, created only if absent (or taken over,
// compare-and-swap, once older than the hold). While the lease is held by a
// submission that started less than the hold ago, every other attempt to
// take it gets a *HeldError and must come back later, when PandaPon's state
// will show whether the first submission was carried out. Releasing the
// lease (after a definitive refusal, or a failure that provably never
// reached PandaPon) lets the next attempt submit at once.
//
// The bucket is created by topology.Topology.EnsureStreams. Lease ages are
// measured against the NATS server's timestamps with the local clock, so
// clocks must agree to well within the hold (NTP does).
package submitlease

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Store takes and releases leases in one key-value bucket. It binds the
// bucket on first use (and again after it was recreated), so it can be built
// before NATS is reachable. A Store is safe for concurrent use.
type Store struct {
	js     jetstream.JetStream
	bucket string
	now    func() time.Time

	mu sync.Mutex
	kv jetstream.KeyValue
}

// New returns a Store for bucket (topology.Topology.SubmissionsBucket). It
// does no I/O.
func New(js jetstream.JetStream, bucket string) *Store {
	return &Store{js: js, bucket: bucket, now: time.Now}
}

// HeldError reports a lease held by another submission of the same parcel.
type HeldError struct {
	RefundID, LogisticsNo string
	// Holder is the input event id of the submission holding it.
	Holder string
	// Age is how long ago that submission took the lease.
	Age time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("parcel %q of refund %s is being submitted by input %s, which took the lease %s ago",
		e.LogisticsNo, e.RefundID, e.Holder, e.Age.Round(time.Millisecond))
}

// Lease is a taken lease. Release it when the parcel may be submitted again
// at once; otherwise leave it to age past the hold.
type Lease struct {
	kv       jetstream.KeyValue
	key      string
	revision uint64
}

// Release deletes the lease if it is still this one (a lease taken over
// after the hold is left alone). Errors are worth logging only: an
// unreleased lease delays the next submission by at most the hold.
func (l *Lease) Release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.revision))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// OpTimeout bounds each of Acquire and Release. Without it a request to a
// bucket whose stream has just lost its leader would wait for the caller's
// whole deadline.
const OpTimeout = 5 * time.Second

// Acquire takes the lease of parcel (refundID, logisticsNo) for holder, the
// input event id. It fails with a *HeldError when another submission took it
// less than hold ago, and with the bucket's error when NATS cannot be asked
// within OpTimeout (the caller should retry later, not submit).
func (s *Store) Acquire(ctx context.Context, refundID, logisticsNo, holder string, hold time.Duration) (*Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	kv, err := s.bind(ctx)
	if err != nil {
		return nil, err
	}
	key := Key(refundID, logisticsNo)
	value := []byte(holder)
	rev, err := kv.Create(ctx, key, value)
	if err == nil {
		return &Lease{kv: kv, key: key, revision: rev}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, s.failed(err)
	}
	cur, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) { // released meanwhile: one more try
		if rev, err = kv.Create(ctx, key, value); err == nil {
			return &Lease{kv: kv, key: key, revision: rev}, nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, &HeldError{RefundID: refundID, LogisticsNo: logisticsNo, Holder: "(another)", Age: 0}
		}
		return nil, s.failed(err)
	}
	if err != nil {
		return nil, s.failed(err)
	}
	age := max(s.now().Sub(cur.Created()), 0)
	if age < hold {
		return nil, &HeldError{RefundID: refundID, LogisticsNo: logisticsNo, Holder: string(cur.Value()), Age: age}
	}
	// Older than the hold: whatever its submission did, PandaPon's state
	// has had time to show it, and the caller has just queried it.
	rev, err = kv.Update(ctx, key, value, cur.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, &HeldError{RefundID: refundID, LogisticsNo: logisticsNo, Holder: "(another)", Age: 0}
	}
	if err != nil {
		return nil, s.failed(err)
	}
	return &Lease{kv: kv, key: key, revision: rev}, nil
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
	s.kv = kv
	return kv, nil
}

// failed wraps a bucket error and forgets a bucket that no longer exists,
// so that the next call binds the recreated one.
func (s *Store) failed(err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		s.mu.Lock()
		s.kv = nil
		s.mu.Unlock()
	}
	return fmt.Errorf("submission leases: bucket %s: %w", s.bucket, err)
}

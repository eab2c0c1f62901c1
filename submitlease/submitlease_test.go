package submitlease

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/internal/testkit"
)

func newStore(t *testing.T) (*Store, func() error) {
	t.Helper()
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns.URL)
	topo := testkit.EnsureStreams(t, js)
	s := New(js, topo.SubmissionsBucket)
	recreate := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteKeyValue(ctx, topo.SubmissionsBucket); err != nil {
			return err
		}
		return topo.EnsureStreams(ctx, js)
	}
	return s, recreate
}

func TestLeaseKeepsASecondSubmissionOut(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const hold = time.Minute
	first, err := s.Acquire(ctx, "110000303674", "SF 123/45", "input-1", hold)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(ctx, "110000303674", "SF 123/45", "input-2", hold)
	held, ok := errors.AsType[*HeldError](err)
	if !ok || held.Holder != "input-1" || held.Age < 0 || held.Age > 10*time.Second {
		t.Fatalf("second Acquire: %v, want a HeldError naming input-1", err)
	}
	if !strings.Contains(err.Error(), `parcel "SF 123/45" of refund 110000303674 is being submitted by input input-1`) {
		t.Errorf("error %q does not name the parcel and its holder", err)
	}
	// Another parcel, or the same number on another refund, is free.
	for _, p := range [][2]string{{"110000303674", "SF 999"}, {"110000300003", "SF 123/45"}} {
		if _, err := s.Acquire(ctx, p[0], p[1], "input-3", hold); err != nil {
			t.Errorf("Acquire(%s, %s): %v", p[0], p[1], err)
		}
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, "110000303674", "SF 123/45", "input-2", hold); err != nil {
		t.Errorf("Acquire after Release: %v", err)
	}
}

func TestLeaseOlderThanTheHoldIsTakenOver(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const hold = time.Minute
	old, err := s.Acquire(ctx, "1", "SF1", "input-1", hold)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(hold + time.Second) } // a minute later
	taken, err := s.Acquire(ctx, "1", "SF1", "input-2", hold)
	if err != nil {
		t.Fatalf("Acquire of a lease older than the hold: %v", err)
	}
	// The first holder's late release must not free the new holder's lease.
	if err := old.Release(ctx); err != nil {
		t.Fatal(err)
	}
	s.now = time.Now
	_, err = s.Acquire(ctx, "1", "SF1", "input-3", hold)
	if held, ok := errors.AsType[*HeldError](err); !ok || held.Holder != "input-2" {
		t.Fatalf("Acquire after a stale release: %v, want held by input-2", err)
	}
	if err := taken.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStoreBindsARecreatedBucket(t *testing.T) {
	s, recreate := newStore(t)
	ctx := context.Background()
	if _, err := s.Acquire(ctx, "1", "SF1", "input-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := recreate(); err != nil {
		t.Fatal(err)
	}
	// The first call may still use the deleted bucket's handle and fail;
	// within two calls the store works on the new bucket.
	_, err := s.Acquire(ctx, "1", "SF1", "input-2", time.Minute)
	if err != nil {
		if _, err = s.Acquire(ctx, "1", "SF1", "input-2", time.Minute); err != nil {
			t.Fatalf("Acquire on the recreated bucket: %v", err)
		}
	}
}

func TestKey(t *testing.T) {
	k := Key("110000303674", "SF 123/45")
	if !strings.HasPrefix(k, "110000303674.") || len(k) != len("110000303674.")+32 || strings.ContainsAny(k, " /") {
		t.Errorf("Key = %q", k)
	}
	if Key("1", "a") == Key("1", "b") || Key("1", "a") == Key("2", "a") {
		t.Error("different parcels share a key")
	}
	if k := Key("1.*>", "a"); strings.ContainsAny(k[:len(k)-33], ".*>") {
		t.Errorf("Key of a refund id with key metacharacters = %q", k)
	}
}

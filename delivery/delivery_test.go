package delivery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pandabridge/pandabridge/delivery"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/topology"
	"github.com/pandabridge/pandabridge/webhooks"
)

const secretText = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver is a webhook target on 127.0.0.1 that verifies every request
// with the documented Go snippet and counts successful deliveries by
// webhook-id.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	respond   func(id string, attempt int) int // status to answer; nil: 200
	block     chan struct{}                    // when set, requests wait on it
	attempts  map[string]int
	delivered map[string]int   // webhook-id → 2xx answers
	order     map[string][]int // refund → seq of delivered events, in order
	bad       []string         // what failed verification
	headers   map[string]http.Header
	bodies    map[string][]byte
	inFlight  int
	peak      int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, attempts: map[string]int{}, delivered: map[string]int{}, order: map[string][]int{},
		headers: map[string]http.Header{}, bodies: map[string][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		r.mu.Lock()
		if r.block != nil {
			close(r.block)
			r.block = nil
		}
		r.mu.Unlock()
		r.srv.Close()
	})
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.inFlight++
	r.peak = max(r.peak, r.inFlight)
	block := r.block
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.inFlight--; r.mu.Unlock() }()
	if block != nil {
		<-block
	}
	if err := verifyWebhook(secretText, req.Header, body, time.Now()); err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, id+": "+err.Error())
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.mu.Lock()
	r.attempts[id]++
	status := http.StatusOK
	if r.respond != nil {
		status = r.respond(id, r.attempts[id])
	}
	if status >= 200 && status < 300 {
		r.delivered[id]++
		r.headers[id] = req.Header.Clone()
		r.bodies[id] = body
		var d struct {
			Seq int `json:"seq"`
		}
		json.Unmarshal(body, &d)
		refund := req.Header.Get("ce-subject")
		r.order[refund] = append(r.order[refund], d.Seq)
	}
	r.mu.Unlock()
	if status == -1 { // drop the connection: a network error
		hj, _ := w.(http.Hijacker)
		conn, _, _ := hj.Hijack()
		conn.Close()
		return
	}
	w.WriteHeader(status)
}

func (r *receiver) setRespond(f func(id string, attempt int) int) {
	r.mu.Lock()
	r.respond = f
	r.mu.Unlock()
}

func (r *receiver) deliveredIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.delivered))
	for k, v := range r.delivered {
		out[k] = v
	}
	return out
}

func (r *receiver) checkVerified() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Errorf("%d deliveries failed signature verification with the documented snippet: %v", len(r.bad), r.bad[:min(3, len(r.bad))])
	}
}

type env struct {
	t    *testing.T
	nc   *nats.Conn
	js   jetstream.JetStream
	topo topology.Topology
	d    *delivery.Deliverer
	stop func()
}

func secret(t *testing.T) webhooks.Secret {
	s, err := webhooks.ParseSecret(secretText)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// target returns a fast-retrying target for r.
func target(t *testing.T, name string, r *receiver) delivery.Target {
	return delivery.Target{Name: name, URL: r.srv.URL + "/hooks", Secret: secret(t), Concurrency: 4,
		Timeout:    delivery.Duration{Duration: 5 * time.Second},
		BackoffMin: delivery.Duration{Duration: 10 * time.Millisecond}, BackoffMax: delivery.Duration{Duration: 80 * time.Millisecond}}
}

func start(t *testing.T, targets ...delivery.Target) *env {
	t.Helper()
	ns := testkit.NATS(t)
	nc, js := testkit.Connect(t, ns.URL)
	topo := topology.New(events.DefaultSubjectPrefix)
	d, err := delivery.New(nc, delivery.Config{Targets: targets, Topology: topo, AckWait: 3 * time.Second, DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	testkit.Eventually(t, 10*time.Second, d.Ready, "the deliverer to be ready")
	return &env{t: t, nc: nc, js: js, topo: topo, d: d, stop: stop}
}

// publish stores a refund.updated for refund with a seq and status in its
// data, as the consumer would, and returns its id.
func (e *env) publish(refund string, seq int, status int) string {
	e.t.Helper()
	ev := event.New()
	ev.SetID(uuid.NewString())
	ev.SetSource("pandabridge")
	ev.SetType(events.TypeRefundUpdated)
	ev.SetSubject(refund)
	ev.SetTime(time.Now().UTC())
	ev.SetExtension(events.ExtCausationID, "input-"+refund)
	ev.SetDataContentType(events.ContentTypeJSON)
	ev.DataEncoded = []byte(fmt.Sprintf(`{"distributorId":1,"seq":%d,"currency":"CNY","refundOrderAggregate":{"refundOrder":{"refundId":%q,"refundStatus":%d}}}`, seq, refund, status))
	msg, err := events.EncodeNATS(e.topo.Subjects.Of(events.TypeRefundUpdated), ev)
	if err != nil {
		e.t.Fatal(err)
	}
	testkit.PublishMsg(e.t, e.js, msg)
	return ev.ID()
}

// settled reports whether a target's consumer has nothing pending nor
// unacknowledged.
func (e *env) settled(name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := e.js.Consumer(ctx, e.topo.OutputStream, delivery.ConsumerName(name))
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func TestDeliversASignedBinaryModeCloudEvent(t *testing.T) {
	r := newReceiver(t)
	e := start(t, target(t, "erp", r))
	id := e.publish("110000303674", 1, 20)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.deliveredIDs()[id] == 1 }, "the event to be delivered")
	r.checkVerified()
	r.mu.Lock()
	h, body := r.headers[id], r.bodies[id]
	r.mu.Unlock()
	for k, want := range map[string]string{
		"ce-specversion": "1.0", "ce-id": id, "ce-type": events.TypeRefundUpdated, "ce-source": "pandabridge",
		"ce-subject": "110000303674", "ce-causationid": "input-110000303674", "Content-Type": "application/json",
		"webhook-id": id, "User-Agent": delivery.UserAgent,
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Get("ce-time")); err != nil {
		t.Errorf("ce-time %q is not RFC 3339", h.Get("ce-time"))
	}
	if !strings.Contains(string(body), `"seq":1`) || !strings.HasPrefix(string(body), `{"distributorId":1`) {
		t.Errorf("body %s is not the event data byte for byte", body)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return e.settled("erp") }, "the event to be acknowledged")
}

func TestTargetDownThenUpReceivesEachEventExactlyOnce(t *testing.T) {
	r := newReceiver(t)
	var mu sync.Mutex
	down := true
	r.setRespond(func(id string, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if !down {
			return http.StatusNoContent
		}
		if attempt%2 == 0 {
			return -1 // connection dropped
		}
		return http.StatusServiceUnavailable
	})
	e := start(t, target(t, "erp", r))
	var ids []string
	for i := range 30 {
		ids = append(ids, e.publish(fmt.Sprint(120000000000+i%7), i, 20))
	}
	// Every event is tried, and retried, while the target is down.
	testkit.Eventually(t, 10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := 0
		for _, a := range r.attempts {
			if a >= 2 {
				n++
			}
		}
		return n >= 7 // one head event per refund is being retried
	}, "retries while the target is down")
	if n := len(r.deliveredIDs()); n != 0 {
		t.Fatalf("%d events counted delivered while the target was down", n)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	testkit.Eventually(t, 20*time.Second, func() bool { return len(r.deliveredIDs()) == len(ids) }, "all %d events delivered once the target is up", len(ids))
	testkit.Eventually(t, 10*time.Second, func() bool { return e.settled("erp") }, "every event acknowledged")
	for _, id := range ids {
		if n := r.deliveredIDs()[id]; n != 1 {
			t.Errorf("event %s was delivered successfully %d times, want exactly once", id, n)
		}
	}
	r.checkVerified()
}

func TestEventsOfARefundArriveInOrderDespiteRetries(t *testing.T) {
	r := newReceiver(t)
	// The first attempt of every third event fails: without per-refund
	// ordering a later event would overtake it.
	failFirst := map[string]bool{}
	var mu sync.Mutex
	r.setRespond(func(id string, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if failFirst[id] && attempt == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	tg := target(t, "erp", r)
	tg.Concurrency = 8
	e := start(t, tg)
	refunds := []string{"1001", "1002", "1003", "1004"}
	const perRefund = 12
	for i := range perRefund * len(refunds) {
		refund := refunds[i%len(refunds)]
		seq := i / len(refunds)
		id := e.publish(refund, seq, 20)
		if seq%3 == 0 {
			mu.Lock()
			failFirst[id] = true
			mu.Unlock()
		}
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return len(r.deliveredIDs()) == perRefund*len(refunds) }, "every event delivered")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, refund := range refunds {
		if got := r.order[refund]; !slices.IsSorted(got) || len(got) != perRefund {
			t.Errorf("refund %s: delivered in order %v, want 0..%d in order", refund, got, perRefund-1)
		}
	}
}

func TestDifferentRefundsInParallelOneRefundInSeries(t *testing.T) {
	r := newReceiver(t)
	r.block = make(chan struct{})
	tg := target(t, "erp", r)
	tg.Concurrency = 8
	e := start(t, tg)
	for i := range 3 {
		e.publish("7000", i, 20) // one refund, three events
	}
	for _, refund := range []string{"7001", "7002", "7003"} {
		e.publish(refund, 0, 20)
	}
	ackPending := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := e.js.Consumer(ctx, e.topo.OutputStream, delivery.ConsumerName("erp"))
		if err != nil {
			return -1
		}
		info, err := c.Info(ctx)
		if err != nil {
			return -1
		}
		return info.NumAckPending
	}
	// All six are held by the deliverer, four POSTs are blocked at the
	// target: refund 7000's first event and one per other refund.
	testkit.Eventually(t, 10*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.inFlight == 4 && ackPending() == 6
	}, "4 POSTs in flight with 6 events held")
	r.mu.Lock()
	peak := r.peak
	close(r.block)
	r.block = nil
	r.mu.Unlock()
	if peak != 4 {
		t.Fatalf("%d POSTs were in flight at once, want 4: one per refund", peak)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.deliveredIDs()) == 6 }, "every event delivered")
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.order["7000"]; !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("refund 7000 delivered in order %v, want [0 1 2]", got)
	}
}

func TestHorizonExceededIsDeadLetteredWithTheReason(t *testing.T) {
	r := newReceiver(t)
	r.setRespond(func(string, int) int { return http.StatusBadGateway })
	tg := target(t, "erp", r)
	tg.Horizon = delivery.Duration{Duration: 400 * time.Millisecond}
	e := start(t, tg)
	dlq := testkit.Collect(t, e.js, e.topo.DLQStream, delivery.DeadLetterSubject(e.topo.Subjects, "erp"))
	id := e.publish("110000303674", 7, 20)
	msgs := dlq.WaitN(t, 1, 10*time.Second)
	m := msgs[0]
	h := m.Headers()
	if m.Subject() != "pandapon.dlq.webhook.erp" {
		t.Errorf("dead letter on %s, want pandapon.dlq.webhook.erp", m.Subject())
	}
	if reason := h.Get(delivery.HeaderDLQReason); !strings.Contains(reason, "horizon") || !strings.Contains(reason, "HTTP 502") {
		t.Errorf("reason %q does not say the horizon passed and what the target answered", reason)
	}
	r.mu.Lock()
	attempts := r.attempts[id]
	r.mu.Unlock()
	if h.Get(delivery.HeaderDLQDeliveries) != fmt.Sprint(attempts) || attempts < 2 {
		t.Errorf("Pandabridge-Dlq-Deliveries = %q, target saw %d attempts", h.Get(delivery.HeaderDLQDeliveries), attempts)
	}
	if h.Get(delivery.HeaderWebhookTarget) != "erp" || h.Get(delivery.HeaderDLQStream) != e.topo.OutputStream ||
		h.Get(delivery.HeaderDLQStreamSeq) != "1" || h.Get("ce-id") != id || h.Get("Nats-Msg-Id") != id+"/webhook/erp" {
		t.Errorf("dead-letter headers %v do not identify the target, stream, sequence and event", h)
	}
	if !strings.Contains(string(m.Data()), `"seq":7`) {
		t.Errorf("dead letter payload %s is not the original", m.Data())
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return e.settled("erp") }, "the dead-lettered event to be settled")
	if n := len(r.deliveredIDs()); n != 0 {
		t.Fatalf("%d deliveries counted", n)
	}
}

func TestGoneIsDeadLetteredAtOnceAndReplayDeliversToThatTargetOnly(t *testing.T) {
	gone, other := newReceiver(t), newReceiver(t)
	var mu sync.Mutex
	isGone := true
	gone.setRespond(func(string, int) int {
		mu.Lock()
		defer mu.Unlock()
		if isGone {
			return http.StatusGone
		}
		return http.StatusOK
	})
	e := start(t, target(t, "gone", gone), target(t, "other", other))
	dlq := testkit.Collect(t, e.js, e.topo.DLQStream, e.topo.Subjects.DeadLetters())
	id := e.publish("110000303674", 1, 20)
	dl := dlq.WaitN(t, 1, 10*time.Second)[0]
	if got := dl.Headers().Get(delivery.HeaderDLQDeliveries); got != "1" {
		t.Errorf("410 must dead-letter after 1 attempt, got %s", got)
	}
	if !strings.Contains(dl.Headers().Get(delivery.HeaderDLQReason), "410") {
		t.Errorf("reason %q does not mention 410", dl.Headers().Get(delivery.HeaderDLQReason))
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return other.deliveredIDs()[id] == 1 }, "the other target to get the event")

	// Replay as the DLQ tooling does: the original message, without the
	// dead-letter headers, to the original subject.
	mu.Lock()
	isGone = false
	mu.Unlock()
	orig, ok := e.topo.Subjects.OriginalOfDeadLetter(dl.Subject())
	if !ok || orig != delivery.ReplaySubject(e.topo.Subjects, "gone") {
		t.Fatalf("OriginalOfDeadLetter(%s) = %s, %v; want the target's replay subject", dl.Subject(), orig, ok)
	}
	replay := nats.NewMsg(orig)
	replay.Data = dl.Data()
	for k, v := range dl.Headers() {
		if !strings.HasPrefix(k, "Pandabridge-Dlq-") {
			replay.Header[k] = v
		}
	}
	testkit.PublishMsg(t, e.js, replay)
	testkit.Eventually(t, 10*time.Second, func() bool { return gone.deliveredIDs()[id] == 1 }, "the replay to be delivered")
	gone.checkVerified()
	// The other target is not sent the replay.
	e.publish("110000303674", 2, 20) // a marker behind it, in order
	testkit.Eventually(t, 10*time.Second, func() bool { return len(other.deliveredIDs()) == 2 }, "the marker event at the other target")
	if n := other.deliveredIDs()[id]; n != 1 {
		t.Fatalf("the other target got the event %d times; a replay is for its own target only", n)
	}
}

func TestFiltersSelectRefundsAndStatuses(t *testing.T) {
	r := newReceiver(t)
	tg := target(t, "erp", r)
	tg.RefundIDs = []string{"111"}
	tg.Statuses = []int64{30, 40}
	e := start(t, tg)
	want := e.publish("111", 1, 30)
	e.publish("111", 2, 20)
	e.publish("222", 3, 30)
	want2 := e.publish("111", 4, 40)
	testkit.Eventually(t, 10*time.Second, func() bool { return e.settled("erp") }, "every event settled")
	got := r.deliveredIDs()
	if len(got) != 2 || got[want] != 1 || got[want2] != 1 {
		t.Fatalf("delivered %v, want only the events of refund 111 with status 30 or 40", got)
	}
}

func TestASlowTargetDoesNotDelayAnother(t *testing.T) {
	slow, fast := newReceiver(t), newReceiver(t)
	slow.block = make(chan struct{})
	st := target(t, "slow", slow)
	st.Concurrency = 2
	e := start(t, st, target(t, "fast", fast))
	const n = 40
	for i := range n {
		e.publish(fmt.Sprint(3000+i), i, 20)
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return len(fast.deliveredIDs()) == n }, "the fast target to get all %d events", n)
	slow.mu.Lock()
	inFlight, delivered := slow.inFlight, len(slow.delivered)
	slow.mu.Unlock()
	if delivered != 0 || inFlight > 2 {
		t.Fatalf("slow target: %d delivered, %d in flight; want 0 delivered and at most its concurrency (2) blocked", delivered, inFlight)
	}
}

func TestRateLimitSpacesAttempts(t *testing.T) {
	r := newReceiver(t)
	tg := target(t, "erp", r)
	tg.RateLimit, tg.Burst = 20, 1
	e := start(t, tg)
	begin := time.Now()
	for i := range 11 {
		e.publish(fmt.Sprint(4000+i), i, 20)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(r.deliveredIDs()) == 11 }, "11 deliveries")
	if took := time.Since(begin); took < 450*time.Millisecond {
		t.Fatalf("11 POSTs at 20/s with burst 1 took %s; the rate limit is not applied", took)
	}
}

func TestShutdownHandsBackEventsBeingRetried(t *testing.T) {
	r := newReceiver(t)
	r.setRespond(func(string, int) int { return http.StatusServiceUnavailable })
	tg := target(t, "erp", r)
	tg.BackoffMin = delivery.Duration{Duration: time.Hour}
	tg.BackoffMax = delivery.Duration{Duration: time.Hour}
	e := start(t, tg)
	e.publish("5000", 1, 20)
	testkit.Eventually(t, 10*time.Second, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.attempts) == 1 }, "a first attempt")
	done := make(chan struct{})
	go func() { e.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown waited for an hour-long retry delay")
	}
	// Handed back, not acknowledged: it is still to be delivered.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := e.js.Consumer(ctx, e.topo.OutputStream, delivery.ConsumerName("erp"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Consumer != 0 {
		t.Fatalf("the event was acknowledged at shutdown (ack floor %d) although never delivered", info.AckFloor.Consumer)
	}
}

func TestLoadTargets(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "erp.secret")
	os.WriteFile(sec, []byte(secretText+"\n"), 0o600)
	write := func(s string) string {
		p := filepath.Join(dir, "targets.json")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	ts, err := delivery.LoadTargets(write(fmt.Sprintf(`[{"name":"erp","url":"https://erp.example/hooks","secretFile":%q,"statuses":[20,30],"timeout":"3s"}]`, sec)))
	if err != nil {
		t.Fatal(err)
	}
	if tg := ts[0]; tg.Secret.IsZero() || tg.Timeout.Duration != 3*time.Second || tg.Horizon.Duration != 24*time.Hour ||
		tg.Concurrency != delivery.DefaultConcurrency || tg.DeliverPolicy != delivery.DeliverNew {
		t.Fatalf("loaded %+v: secret, timeout or defaults missing", tg)
	}
	for _, tc := range []struct{ file, want string }{
		{`{}`, "JSON array"},
		{`[{"name":"erp","url":"https://x","secretFile":"` + sec + `","concurency":3}]`, "concurency"},
		{`[{"name":"bad name","url":"https://x","secretFile":"` + sec + `"}]`, `target "bad name" (#1): name`},
		{`[{"name":"erp","url":"ftp://x","secretFile":"` + sec + `"}]`, `target "erp" (#1): url`},
		{`[{"name":"erp","url":"https://x"}]`, "secretFile: is missing"},
		{`[{"name":"erp","url":"https://x","secretFile":"` + sec + `","refundIds":["12x"]}]`, "refundIds[0]"},
		{`[{"name":"erp","url":"https://x","secretFile":"` + sec + `","horizon":"soon"}]`, "soon"},
		{`[{"name":"erp","url":"https://x","secretFile":"` + sec + `","deliverPolicy":"last"}]`, "deliverPolicy"},
		{`[{"name":"a","url":"https://x","secretFile":"` + sec + `"},{"name":"a","url":"https://y","secretFile":"` + sec + `"}]`, `target "a" (#2): name: already used`},
		{`[{"name":"erp","url":"https://x","secretFile":"` + filepath.Join(dir, "nope") + `"}]`, `target "erp" (#1): secretFile`},
	} {
		_, err := delivery.LoadTargets(write(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.file, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "MfKQ9r8G") {
			t.Errorf("an error shows the secret: %v", err)
		}
	}
	// A URL with credentials is never printed.
	_, err = delivery.LoadTargets(write(`[{"name":"erp","url":"ftp://user:hunter2@x","secretFile":"` + sec + `"}]`))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("err = %v; must refuse the URL without printing it", err)
	}
}

func TestDocumentHoldsTheTestedGoSnippet(t *testing.T) {
	src, err := os.ReadFile("receiver_snippet_test.go")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	begin, end := strings.Index(s, "// BEGIN GO SNIPPET\n"), strings.Index(s, "// END GO SNIPPET")
	if begin < 0 || end < 0 {
		t.Fatal("snippet markers missing")
	}
	snippet := strings.TrimSpace(s[begin+len("// BEGIN GO SNIPPET\n") : end])
	doc, err := os.ReadFile("../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), snippet) {
		t.Fatal("docs/webhooks.md does not hold the Go receiver snippet verbatim: copy it from delivery/receiver_snippet_test.go")
	}
}

// While every slot of a target is busy retrying, no further event waits in
// a client buffer past its ack wait: once the target is back, each event is
// delivered exactly once, without any crash or restart to excuse a repeat.
func TestEventsWaitingForASlotAreNotDeliveredTwice(t *testing.T) {
	r := newReceiver(t)
	var mu sync.Mutex
	down := true
	r.setRespond(func(string, int) int {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	tg := target(t, "erp", r)
	tg.Concurrency, tg.MaxInFlight = 2, 2
	e := start(t, tg) // ack wait 3 s
	var ids []string
	for i := range 8 {
		ids = append(ids, e.publish(fmt.Sprintf("%d000", i+1), 0, 20))
	}
	// The target stays down for longer than the ack wait: the case where
	// a buffered, unobserved message used to be redelivered.
	time.Sleep(4 * time.Second)
	mu.Lock()
	down = false
	mu.Unlock()
	testkit.Eventually(t, 30*time.Second, func() bool { return len(r.deliveredIDs()) == len(ids) && e.settled("erp") },
		"every event delivered and acknowledged")
	for id, n := range r.deliveredIDs() {
		if n > 1 {
			t.Errorf("event %s was delivered (2xx) %d times", id, n)
		}
	}
}

// When the dead letter cannot be stored at first (the DLQ stream is gone),
// the event keeps its refund's place: the DLQ stream is recreated, the
// event is dead-lettered, and only then does the refund's next event go
// out, so the target never sees an older state after a newer one.
func TestDeadLetterFailureKeepsTheRefundsOrder(t *testing.T) {
	r := newReceiver(t)
	var mu sync.Mutex
	var first string
	r.setRespond(func(id string, _ int) int {
		mu.Lock()
		defer mu.Unlock()
		if id == first {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	tg := target(t, "erp", r)
	tg.Horizon = delivery.Duration{Duration: 300 * time.Millisecond}
	e := start(t, tg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, e.topo.DLQStream); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	first = e.publish("5555", 0, 20)
	mu.Unlock()
	newer := e.publish("5555", 1, 20)
	testkit.Eventually(t, 15*time.Second, func() bool { return r.deliveredIDs()[newer] == 1 }, "the newer event delivered")
	if n := r.deliveredIDs()[first]; n != 0 {
		t.Errorf("the older event was delivered %d times", n)
	}
	s, err := e.js.Stream(ctx, e.topo.DLQStream)
	if err != nil {
		t.Fatalf("the DLQ stream was not recreated: %v", err)
	}
	if info, _ := s.Info(ctx); info == nil || info.State.Msgs != 1 {
		t.Errorf("DLQ holds %v messages, want the older event", info)
	}
}

// A target's durable deleted at runtime is recreated, and deliveries go
// on.
func TestDeletedDurableIsRecreated(t *testing.T) {
	r := newReceiver(t)
	e := start(t, target(t, "erp", r))
	first := e.publish("7001", 0, 20)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.deliveredIDs()[first] == 1 }, "the first event")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, e.topo.OutputStream, delivery.ConsumerName("erp")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, func() bool {
		_, err := e.js.Consumer(ctx, e.topo.OutputStream, delivery.ConsumerName("erp"))
		return err == nil
	}, "the durable to be recreated")
	second := e.publish("7002", 0, 20)
	testkit.Eventually(t, 10*time.Second, func() bool { return r.deliveredIDs()[second] == 1 }, "an event published after the recreation")
}

// TestDeadLetterSeriesExistPerTargetFromTheStart: the webhook dead-letter
// alert uses increase(), so each target's series are exported at 0 before
// its first dead letter.
func TestDeadLetterSeriesExistPerTargetFromTheStart(t *testing.T) {
	ns := testkit.NATS(t)
	nc, _ := testkit.Connect(t, ns.URL)
	reg := prometheus.NewRegistry()
	r := newReceiver(t)
	if _, err := delivery.New(nc, delivery.Config{Targets: []delivery.Target{target(t, "erp", r)}, Metrics: delivery.NewMetrics(reg)}); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range families {
		if f.GetName() != "pandabridge_webhook_dead_lettered_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				labels += l.GetName() + "=" + l.GetValue() + " "
			}
			got = append(got, labels)
		}
	}
	slices.Sort(got)
	if want := []string{"reason=gone target=erp ", "reason=horizon target=erp ", "reason=invalid target=erp "}; !slices.Equal(got, want) {
		t.Errorf("webhook dead-letter series at start: %q, want %q", got, want)
	}
}

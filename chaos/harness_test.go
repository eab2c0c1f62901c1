package chaos_test

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/topology"
)

var (
	logDir   = flag.String("chaos.logs", "", "directory to write every consumer process's full log to (default: none)")
	soak     = flag.Bool("chaos.soak", false, "long run: ten times the events (and kills) of the default suite")
	seedFlag = flag.Uint64("chaos.seed", 0, "seed of workloads, kill moments and sandbox faults (0: from the clock; the seed used is logged)")
)

// consumerBin is the consumer binary, built once without -race: the race
// detector slows this test process (embedded NATS, sandbox), not the
// processes under test.
var consumerBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "pandabridge-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	consumerBin = filepath.Join(dir, "consumer")
	out, err := exec.Command("go", "build", "-o", consumerBin, "github.com/pandabridge/pandabridge/cmd/consumer").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the consumer: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// size scales a default count for -chaos.soak.
func size(n int) int {
	if *soak {
		return 10 * n
	}
	return n
}

// newRand returns the test's random source and logs its seed.
func newRand(t *testing.T) (*rand.Rand, uint64) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with: go test ./chaos/ -run '^%s$' -args -chaos.seed=%d)", seed, t.Name(), seed)
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), seed
}

// every throttles cond to one evaluation per d, so that polling the
// JetStream API with testkit.Eventually does not load the servers under
// test.
func every(d time.Duration, cond func() bool) func() bool {
	var last time.Time
	return func() bool {
		if time.Since(last) < d {
			return false
		}
		last = time.Now()
		return cond()
	}
}

// ---- workload ----

const (
	kindLookup  = "lookup"
	kindShipped = "return.shipped"
	kindPoison  = "poison"
)

// input is one message the test publishes. id is its Nats-Msg-Id (the
// event id for CloudEvents), the key every check counts by.
type input struct {
	id, kind, subject   string
	refund, logisticsNo string
	header              nats.Header
	data                []byte
}

// msg builds a fresh NATS message, so that a retried publish never reuses
// one the client has touched.
func (in input) msg() *nats.Msg {
	m := nats.NewMsg(in.subject)
	for k, v := range in.header {
		m.Header[k] = slices.Clone(v)
	}
	m.Data = in.data
	return m
}

// workloadSpec describes a mix of inputs.
type workloadSpec struct {
	n int
	// lookupRefunds spreads the lookups over that many refunds (0: a refund
	// of its own for each lookup).
	lookupRefunds int
	// shippedFrac and poisonFrac are the expected fractions of
	// return.shipped (each on a refund of its own, waiting for the buyer's
	// return) and poison inputs; the rest are lookups.
	shippedFrac, poisonFrac float64
}

type workload struct {
	inputs                   []input
	lookups, shipped, poison int
	// refunds is how many generated sandbox refunds the inputs use.
	refunds int
	// mayDeadLetter: valid inputs may end dead-lettered after exhausting
	// their deliveries (a PandaPon outage); each still ends answered or
	// dead-lettered, once.
	mayDeadLetter bool
}

func buildWorkload(t *testing.T, rng *rand.Rand, spec workloadSpec) workload {
	t.Helper()
	w := workload{refunds: spec.lookupRefunds}
	fromEvent := func(kind, subject, refund, logisticsNo string, e event.Event) input {
		m, err := events.EncodeNATS(subject, e)
		if err != nil {
			t.Fatal(err)
		}
		return input{id: e.ID(), kind: kind, subject: subject, refund: refund, logisticsNo: logisticsNo, header: m.Header, data: m.Data}
	}
	subjects := topology.New(events.DefaultSubjectPrefix).Subjects
	for i := range spec.n {
		u := rng.Float64()
		switch {
		case u < spec.poisonFrac:
			w.inputs = append(w.inputs, poisonInput(t, i, subjects))
			w.poison++
		case u < spec.poisonFrac+spec.shippedFrac:
			refund := sandbox.GeneratedRefundID(w.refunds)
			w.refunds++
			no := fmt.Sprintf("SF%010d", i)
			w.inputs = append(w.inputs, fromEvent(kindShipped, subjects.Of(events.TypeReturnShipped), refund, no,
				testkit.ReturnShipped(refund, "SF", no)))
			w.shipped++
		default:
			var refund string
			if spec.lookupRefunds > 0 {
				refund = sandbox.GeneratedRefundID(rng.IntN(spec.lookupRefunds))
			} else {
				refund = sandbox.GeneratedRefundID(w.refunds)
				w.refunds++
			}
			w.inputs = append(w.inputs, fromEvent(kindLookup, subjects.Of(events.TypeRefundLookupRequested), refund, "",
				testkit.Lookup(refund)))
			w.lookups++
		}
	}
	return w
}

// poisonInput is an input that can never be processed, in one of five
// shapes, each with a Nats-Msg-Id the dead letter keeps.
func poisonInput(t *testing.T, i int, subjects events.Subjects) input {
	t.Helper()
	id := fmt.Sprintf("poison-%d", i)
	in := input{id: id, kind: kindPoison, header: nats.Header{}}
	var e event.Event
	switch i % 5 {
	case 0: // not a CloudEvent at all
		in.subject = subjects.Of(events.TypeReturnShipped)
		in.data = []byte("ship it! #" + id)
	case 1: // structured mode, cut off
		in.subject = subjects.Of(events.TypeRefundLookupRequested)
		in.header.Set("Content-Type", events.ContentTypeStructured)
		in.data = []byte(`{"specversion":"1.0","id":"` + id + `","source":"chaos","type":"refund.lookup.requ`)
	case 2: // a refundId that is not one
		e = testkit.Lookup("twelve")
	case 3: // return.shipped without its parcel
		e = testkit.NewInput(events.TypeReturnShipped, map[string]any{"refundId": "120000000001", "logisticsCompanyCode": "SF"})
	case 4: // a type nobody handles, on an input subject
		e = testkit.NewInput("com.example.refund.deleted", map[string]any{"refundId": "120000000001"})
	}
	if e.ID() != "" {
		e.SetID(id)
		subject := subjects.Of(events.TypeRefundLookupRequested)
		if e.Type() == events.TypeReturnShipped {
			subject = subjects.Of(events.TypeReturnShipped)
		}
		m, err := events.EncodeNATS(subject, e)
		if err != nil {
			t.Fatal(err)
		}
		in.subject, in.header, in.data = subject, m.Header, m.Data
	}
	in.header.Set(events.HeaderMsgID, id)
	return in
}

// ---- NATS side ----

// bus is the test's view of the NATS deployment under test.
type bus struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	ajs  jetstream.JetStream // for async publishing
	topo topology.Topology
}

// connectBus connects to url and creates pandabridge's streams with the
// given replicas, retrying while a cluster elects its leaders.
func connectBus(t *testing.T, url string, replicas int) *bus {
	t.Helper()
	nc, js := testkit.Connect(t, url)
	ajs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b := &bus{nc: nc, js: js, ajs: ajs, topo: topology.New(events.DefaultSubjectPrefix)}
	b.topo.Replicas = replicas
	var last error
	testkit.Eventually(t, time.Minute, every(250*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		last = b.topo.EnsureStreams(ctx, js)
		return last == nil
	}), "the streams to be created (last error: %v)", &lastErr{&last})
	return b
}

// lastErr prints the latest value of an error when formatted.
type lastErr struct{ err *error }

func (l *lastErr) String() string { return fmt.Sprint(*l.err) }

// publish stores every input: asynchronously first, then each publish that
// failed (a node going away, a timeout) again until it is stored. Repeats
// are harmless: the input stream de-duplicates by Nats-Msg-Id.
func (b *bus) publish(t *testing.T, ins []input) {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, len(ins))
	var again []input
	for i, in := range ins {
		f, err := b.ajs.PublishMsgAsync(in.msg())
		if err != nil {
			again = append(again, in)
			continue
		}
		futures[i] = f
	}
	select {
	case <-b.ajs.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("async publishes not acknowledged within a minute")
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case <-f.Err():
			again = append(again, ins[i])
		}
	}
	for _, in := range again {
		deadline := time.Now().Add(time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := b.js.PublishMsg(ctx, in.msg())
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publishing input %s: %v", in.id, err)
			}
			<-time.After(100 * time.Millisecond) // retry pace, not a condition wait
		}
	}
	if len(again) > 0 {
		t.Logf("%d publishes retried", len(again))
	}
}

func (b *bus) streamMsgs(stream string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

func (b *bus) consumerInfo() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := b.js.Consumer(ctx, b.topo.InputStream, b.topo.Durable)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// waitSettled waits until the output and dead-letter streams hold at least
// what the workload must produce and the durable consumer has nothing
// pending or unacknowledged: after that, nothing more can be published.
func (b *bus) waitSettled(t *testing.T, w workload, timeout time.Duration) {
	t.Helper()
	valid := uint64(len(w.inputs) - w.poison)
	var last string
	testkit.Eventually(t, timeout, every(200*time.Millisecond, func() bool {
		out, err1 := b.streamMsgs(b.topo.OutputStream)
		dlq, err2 := b.streamMsgs(b.topo.DLQStream)
		info, err3 := b.consumerInfo()
		if err := errors.Join(err1, err2, err3); err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("outputs %d of %d, dead letters %d of %d, consumer pending %d, unacknowledged %d",
			out, valid, dlq, w.poison, info.NumPending, info.NumAckPending)
		settled := out >= valid && dlq >= uint64(w.poison)
		if w.mayDeadLetter {
			settled = out+dlq >= uint64(len(w.inputs))
		}
		return settled && info.NumPending == 0 && info.NumAckPending == 0
	}), "every input settled (last seen: %s)", &lastString{&last})
}

// lastString prints the latest value of a string when formatted.
type lastString struct{ s *string }

func (l *lastString) String() string { return *l.s }

// record is one stored message as the checks see it.
type record struct {
	msgID, causation, typ string
	at                    time.Time
}

// read returns every message stored on stream, in order.
func (b *bus) read(t *testing.T, stream string) []record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := b.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var out []record
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			t.Fatalf("reading %s: %v after %d of %d messages", stream, err, len(out), info.State.Msgs)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		h := m.Headers()
		out = append(out, record{
			msgID:     h.Get(events.HeaderMsgID),
			causation: h.Get(events.HeaderPrefix + events.ExtCausationID),
			typ:       h.Get(events.HeaderPrefix + "type"),
			at:        meta.Timestamp,
		})
		if meta.Sequence.Stream >= info.State.LastSeq {
			return out
		}
	}
}

// ---- consumer processes ----

var (
	// handledLine is the one line per settled input; outcome published or
	// dead_lettered means the work is done (retry and handed_back do not).
	handledLine = regexp.MustCompile(`"msg":"handled","event_id":"([^"]*)".*?"outcome":"([a-z_]+)"`)
	addrLine    = regexp.MustCompile(`"msg":"serving health and metrics","addr":"([^"]+)"`)
)

// consumer is one running consumer process whose JSON log is followed.
type consumer struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu           sync.Mutex
	lines        []string       // lines other than "handled", for the failure dump
	handled      map[string]int // event_id → "handled" lines saying published or dead-lettered
	outcomes     map[string]int // outcome → "handled" lines saying it
	nHandled     int
	firstHandled time.Time
	addr         string
	consuming    bool
}

// consumerEnv is the environment of a consumer process: nothing of the
// developer's, quick retries, and the overrides (NAME=value) last.
func consumerEnv(natsURL, sandboxURL string, over ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(),
		"NATS_URL=" + natsURL,
		"PANDAPON_BASE_URL=" + sandboxURL,
		"PANDAPON_ACCESS_KEY=" + sandbox.DefaultAccessKey,
		"PANDAPON_ACCESS_SECRET=" + sandbox.DefaultAccessSecret,
		"PANDAPON_RATE_LIMIT=100000",
		"PANDABRIDGE_HTTP_ADDR=127.0.0.1:0",
		"PANDABRIDGE_BACKOFF_MIN=20ms",
		"PANDABRIDGE_BACKOFF_MAX=500ms",
		"PANDABRIDGE_MAX_DELIVERIES=20",
		// The sandbox carries a submission out before it answers, and its
		// faults act before processing: nothing is ever carried out late,
		// so waiting the production minute before re-checking a submission
		// without an answer would only stretch the suite. The duplicate
		// checks still hold it to one submission per parcel.
		"PANDABRIDGE_RECHECK_DELAY=1s",
		"PANDABRIDGE_LOG_LEVEL=info",
	}
	return append(env, over...) // the last value of a variable wins
}

func startConsumer(t *testing.T, name string, env []string) *consumer {
	t.Helper()
	c := &consumer{t: t, name: name, cmd: exec.Command(consumerBin), done: make(chan struct{}), handled: map[string]int{}, outcomes: map[string]int{}}
	c.cmd.Env = env
	r, w := io.Pipe()
	c.cmd.Stdout, c.cmd.Stderr = w, w
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var full io.Writer = io.Discard
	if *logDir != "" {
		f, err := os.Create(filepath.Join(*logDir, strings.NewReplacer("/", "_", "#", "-").Replace(t.Name()+"-"+name+".log")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		full = f
	}
	go c.follow(io.TeeReader(r, full))
	go func() { _ = c.cmd.Wait(); w.Close(); close(c.done) }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			lines := c.output()
			if len(lines) > 60 {
				lines = append([]string{"…"}, lines[len(lines)-60:]...)
			}
			t.Logf("last lines of %s (other than handled):\n%s", c.name, strings.Join(lines, "\n"))
		}
	})
	return c
}

func (c *consumer) follow(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		now := time.Now()
		c.mu.Lock()
		if m := handledLine.FindStringSubmatch(l); m != nil {
			c.outcomes[m[2]]++
			if m[1] == "" || (m[2] != "published" && m[2] != "dead_lettered") {
				// Not done, or not a CloudEvent (no id: the dead-letter
				// stream is the record of those).
				c.mu.Unlock()
				continue
			}
			c.handled[m[1]]++
			c.nHandled++
			if c.firstHandled.IsZero() {
				c.firstHandled = now
			}
		} else {
			if m := addrLine.FindStringSubmatch(l); m != nil {
				c.addr = m[1]
			}
			if strings.Contains(l, `"msg":"consuming"`) {
				c.consuming = true
			}
			if len(c.lines) < 5000 {
				c.lines = append(c.lines, l)
			}
		}
		c.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// outcome is how many "handled" lines so far said outcome (retry, ...).
func (c *consumer) outcome(outcome string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outcomes[outcome]
}

// circuitOpenLine is in the consumer's log line for each opening of
// PandaPon's circuit breaker.
const circuitOpenLine = "circuit breaker open"

// count is how many of the lines logged so far (other than handled ones,
// the first 5,000) contain s.
func (c *consumer) count(s string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func (c *consumer) output() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

func (c *consumer) handledCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nHandled
}

func (c *consumer) firstHandledAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.firstHandled
}

func (c *consumer) waitConsuming(timeout time.Duration) {
	c.t.Helper()
	testkit.Eventually(c.t, timeout, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.consuming
	}, "%s to log consuming", c.name)
}

// httpAddr waits for the health listener's address.
func (c *consumer) httpAddr() string {
	c.t.Helper()
	var addr string
	testkit.Eventually(c.t, 20*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		addr = c.addr
		return addr != ""
	}, "%s to serve health", c.name)
	return addr
}

var httpClient = &http.Client{Timeout: time.Second}

// status is the HTTP status of GET path, 0 when the request fails.
func (c *consumer) status(path string) int {
	resp, err := httpClient.Get("http://" + c.httpAddr() + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *consumer) kill() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	<-c.done
}

// terminate sends SIGTERM and returns the exit code and how long the
// process took to exit.
func (c *consumer) terminate(timeout time.Duration) (int, time.Duration) {
	c.t.Helper()
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(timeout):
		c.t.Fatalf("%s did not exit within %s of SIGTERM", c.name, timeout)
	}
	return c.cmd.ProcessState.ExitCode(), time.Since(start)
}

// totalHandled sums the "handled" lines of processes.
func totalHandled(cs []*consumer) int {
	n := 0
	for _, c := range cs {
		n += c.handledCount()
	}
	return n
}

// rehandled returns the event ids that more than one "handled" line names,
// across processes, with their counts.
func rehandled(cs []*consumer) map[string]int {
	all := map[string]int{}
	for _, c := range cs {
		c.mu.Lock()
		for id, n := range c.handled {
			all[id] += n
		}
		c.mu.Unlock()
	}
	for id, n := range all {
		if n < 2 {
			delete(all, id)
		}
	}
	return all
}

// ---- verdict ----

// figures is a scenario's result line.
type figures struct {
	scenario                      string
	inputs, outputs, lost, dups   int
	dlq                           int
	recover                       time.Duration
	slowest                       time.Duration // input stored → its output stored, worst case
	extra                         string
	wrongType, unexpected, badDLQ int
	// spent: valid inputs dead-lettered as workload.mayDeadLetter allows.
	spent int
}

func (f figures) String() string {
	s := fmt.Sprintf("chaos: %s: inputs=%d outputs=%d lost=%d duplicates=%d dlq=%d recover=%s slowest=%s",
		f.scenario, f.inputs, f.outputs, f.lost, f.dups, f.dlq, f.recover.Round(10*time.Millisecond), f.slowest.Round(10*time.Millisecond))
	if f.extra != "" {
		s += " " + f.extra
	}
	return s
}

// verify reads the output and dead-letter streams and the sandbox and
// checks, input by input: each valid input has exactly one refund.updated
// (by causationid), each poison input exactly one dead letter (by
// Nats-Msg-Id) and no output, and each return.shipped recorded its parcel
// at PandaPon with exactly one accepted submission and no duplicate one.
func verify(t *testing.T, b *bus, sb *sandbox.Server, w workload, scenario string) (figures, []record) {
	t.Helper()
	outs := b.read(t, b.topo.OutputStream)
	dlqs := b.read(t, b.topo.DLQStream)
	f := figures{scenario: scenario, inputs: len(w.inputs), outputs: len(outs), dlq: len(dlqs)}
	stored := map[string]time.Time{}
	for _, r := range b.read(t, b.topo.InputStream) {
		if _, seen := stored[r.msgID]; !seen {
			stored[r.msgID] = r.at
		}
	}

	byCause := map[string][]record{}
	for _, r := range outs {
		byCause[r.causation] = append(byCause[r.causation], r)
	}
	dead := map[string]int{}
	for _, r := range dlqs {
		dead[r.msgID]++
	}
	known, spent := map[string]bool{}, map[string]bool{}
	for _, in := range w.inputs {
		known[in.id] = true
		got := byCause[in.id]
		if in.kind == kindPoison {
			switch n := dead[in.id]; {
			case n == 0:
				f.lost++
				t.Errorf("poison input %s was not dead-lettered", in.id)
			case n > 1:
				f.dups += n - 1
				t.Errorf("poison input %s was dead-lettered %d times", in.id, n)
			}
			if len(got) > 0 {
				f.unexpected += len(got)
				t.Errorf("poison input %s produced %d outputs", in.id, len(got))
			}
			continue
		}
		if n := dead[in.id]; n > 0 {
			switch {
			case w.mayDeadLetter && n == 1 && len(got) == 0:
				f.spent++
				spent[in.id] = true
				continue
			case w.mayDeadLetter:
				f.dups++
				t.Errorf("valid %s input %s (refund %s) was dead-lettered %d times and answered %d times, want one of them once", in.kind, in.id, in.refund, n, len(got))
			default:
				f.badDLQ++
				t.Errorf("valid %s input %s (refund %s) was dead-lettered", in.kind, in.id, in.refund)
			}
		}
		switch len(got) {
		case 0:
			if dead[in.id] == 0 {
				f.lost++
			}
			if f.lost <= 5 {
				t.Errorf("%s input %s (refund %s) produced no output: lost", in.kind, in.id, in.refund)
			}
		case 1:
		default:
			f.dups += len(got) - 1
			t.Errorf("%s input %s produced %d outputs: duplicates escaped the output stream's de-duplication", in.kind, in.id, len(got))
		}
		for _, r := range got {
			if at, ok := stored[in.id]; ok {
				f.slowest = max(f.slowest, r.at.Sub(at))
			}
			if r.typ != events.TypeRefundUpdated {
				f.wrongType++
				t.Errorf("%s input %s (refund %s) answered with %s, want %s", in.kind, in.id, in.refund, r.typ, events.TypeRefundUpdated)
			}
		}
	}
	for cause, rs := range byCause {
		if !known[cause] {
			f.unexpected += len(rs)
			t.Errorf("%d outputs answer unknown input %q", len(rs), cause)
		}
	}

	notRecorded, twice := 0, 0
	for _, in := range w.inputs {
		if in.kind != kindShipped || spent[in.id] {
			continue
		}
		st, ok := sb.Refund(in.refund)
		switch {
		case !ok:
			t.Errorf("sandbox has no refund %s", in.refund)
		case st.LogisticsNo != in.logisticsNo:
			notRecorded++
			t.Errorf("refund %s records parcel %q, want %q from return.shipped %s", in.refund, st.LogisticsNo, in.logisticsNo, in.id)
		case st.LogisticsSubmissions > 1:
			twice++
			t.Errorf("refund %s: PandaPon accepted %d logistics submissions, want 1", in.refund, st.LogisticsSubmissions)
		}
	}
	if d := sb.Stats().DuplicateSubmissions; d != 0 {
		t.Errorf("PandaPon saw %d duplicate logistics submissions (a parcel submitted again), want 0", d)
	}
	if notRecorded+twice > 0 {
		t.Errorf("%d return.shipped inputs did not record their parcel, %d recorded it more than once", notRecorded, twice)
	}
	return f, outs
}

// report prints the figure line (in -v and in the plain CI output) and
// fails the test on any loss or duplicate.
func report(t *testing.T, f figures) {
	t.Helper()
	t.Log(f.String())
	fmt.Println(f.String())
	if f.lost > 0 || f.dups > 0 || f.wrongType > 0 || f.unexpected > 0 || f.badDLQ > 0 {
		t.Errorf("%s: lost %d, duplicated %d, wrong type %d, unexpected %d, valid dead-lettered %d; want all 0",
			f.scenario, f.lost, f.dups, f.wrongType, f.unexpected, f.badDLQ)
	}
}

// longestGap is the longest interval between consecutive outputs stored
// after from: how long output stalled at worst.
func longestGap(outs []record, from time.Time) time.Duration {
	ts := make([]time.Time, 0, len(outs))
	for _, r := range outs {
		ts = append(ts, r.at)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	var gap time.Duration
	prev := from
	for _, at := range ts {
		if at.Before(from) {
			continue
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return gap
}

// settledAt is when the last of ins got its output: the moment the
// outputs caught up with those inputs.
func settledAt(outs []record, ins []input) time.Time {
	want := map[string]bool{}
	for _, in := range ins {
		want[in.id] = true
	}
	var last time.Time
	for _, r := range outs {
		if want[r.causation] && r.at.After(last) {
			last = r.at
		}
	}
	return last
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

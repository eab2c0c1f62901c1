package chaos_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/topology"
)

// TestConsumerKilledWithSIGKILLLosesAndDuplicatesNothing kills the only
// consumer process with SIGKILL at random moments while it works through
// thousands of inputs, restarting it each time. Inputs it held come back
// after the ack wait; whatever it had done before dying (a lookup answered,
// a parcel submitted) is redone idempotently: the same output id, no second
// submission.
func TestConsumerKilledWithSIGKILLLosesAndDuplicatesNothing(t *testing.T) {
	rng, _ := newRand(t)
	w := buildWorkload(t, rng, workloadSpec{n: size(5000), lookupRefunds: 100, shippedFrac: 0.4})
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: w.refunds})
	b := connectBus(t, ns.URL, 1)
	env := consumerEnv(ns.URL, sb.URL, "PANDABRIDGE_ACK_WAIT=2s")

	procs := []*consumer{startConsumer(t, "consumer#1", env)}
	procs[0].waitConsuming(20 * time.Second)
	start := time.Now()
	b.publish(t, w.inputs)

	kills := 4
	if *soak {
		kills = 12
	}
	// Kill when the handled count crosses random points of the run, plus a
	// random few milliseconds, so the kill lands anywhere in a handling.
	points := make([]int, kills)
	for i := range points {
		points[i] = len(w.inputs)/20 + rng.IntN(len(w.inputs)*3/4) // 5 %…80 %: work remains after each kill
	}
	slices.Sort(points)
	var recover time.Duration
	for i, at := range points {
		testkit.Eventually(t, 2*time.Minute, func() bool { return totalHandled(procs) >= at }, "%d inputs handled before kill %d", at, i+1)
		<-time.After(time.Duration(rng.IntN(20)) * time.Millisecond)
		cur := procs[len(procs)-1]
		killedAt := time.Now()
		cur.kill()
		t.Logf("kill %d: SIGKILL after %d handled lines", i+1, totalHandled(procs))
		next := startConsumer(t, fmt.Sprintf("consumer#%d", len(procs)+1), env)
		procs = append(procs, next)
		testkit.Eventually(t, time.Minute, func() bool { return !next.firstHandledAt().IsZero() }, "the restarted consumer to handle an input")
		recover = max(recover, next.firstHandledAt().Sub(killedAt))
	}
	b.waitSettled(t, w, 3*time.Minute)
	elapsed := time.Since(start)

	f, _ := verify(t, b, sb, w, "kill")
	f.recover = recover
	f.extra = fmt.Sprintf("kills=%d redone=%d elapsed=%s", kills, len(rehandled(procs)), elapsed.Round(100*time.Millisecond))
	report(t, f)
}

// TestNATSRestartMidStreamReconnectsAndReadyzFollows stops the NATS server
// in the middle of the stream and starts it again on the same port and
// store, as an operator restarting NATS would. The consumer must say 503 on
// /readyz while NATS is gone, reconnect by itself, say 200 again, and
// finish every input exactly once.
func TestNATSRestartMidStreamReconnectsAndReadyzFollows(t *testing.T) {
	rng, _ := newRand(t)
	w := buildWorkload(t, rng, workloadSpec{n: size(1500), lookupRefunds: 50, shippedFrac: 0.4})
	ns, err := embeddednats.Start(embeddednats.Options{Port: freePort(t), StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	// A PandaPon answering in 50 ms keeps work in flight when NATS goes.
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: w.refunds, Faults: sandbox.Faults{Latency: 50 * time.Millisecond}})
	b := connectBus(t, ns.URL, 1)
	c := startConsumer(t, "consumer", consumerEnv(ns.URL, sb.URL, "PANDABRIDGE_ACK_WAIT=2s"))
	c.waitConsuming(20 * time.Second)
	if code := c.status("/readyz"); code != 200 {
		t.Fatalf("/readyz = %d before the restart, want 200", code)
	}
	start := time.Now()
	half := len(w.inputs) / 2
	b.publish(t, w.inputs[:half])
	testkit.Eventually(t, time.Minute, func() bool { return c.handledCount() >= half/3 }, "a third of the first half handled")

	// The outage: NATS gone for a while, /readyz sampled all along.
	const outage = 2 * time.Second
	ns.Server.Shutdown()
	ns.Server.WaitForShutdown()
	downAt := time.Now()
	handledAtDown := c.handledCount()
	testkit.Eventually(t, 5*time.Second, func() bool { return c.status("/readyz") == 503 }, "/readyz to answer 503 once NATS is down")
	notReadyAfter := time.Since(downAt)
	for time.Since(downAt) < outage {
		if code := c.status("/readyz"); code != 503 {
			t.Errorf("/readyz = %d while NATS is down, want 503", code)
		}
		if code := c.status("/healthz"); code != 200 {
			t.Errorf("/healthz = %d while NATS is down, want 200: the process is alive", code)
		}
		<-time.After(100 * time.Millisecond) // sampling pace during the outage
	}
	if err := ns.Restart(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	testkit.Eventually(t, 30*time.Second, func() bool { return c.status("/readyz") == 200 }, "/readyz to answer 200 after NATS is back")
	readyAfter := time.Since(upAt)
	testkit.Eventually(t, 30*time.Second, func() bool { return c.handledCount() > handledAtDown }, "the consumer to handle inputs again")
	b.publish(t, w.inputs[half:])
	b.waitSettled(t, w, 3*time.Minute)
	elapsed := time.Since(start)

	// Recovered: every input published before the outage has its output.
	f, outs := verify(t, b, sb, w, "nats-restart")
	f.recover = max(0, settledAt(outs, w.inputs[:half]).Sub(upAt))
	f.extra = fmt.Sprintf("down=%s handled_at_outage=%d/%d readyz_503_after=%s readyz_200_after=%s redone=%d elapsed=%s",
		outage, handledAtDown, half, notReadyAfter.Round(10*time.Millisecond), readyAfter.Round(10*time.Millisecond),
		len(rehandled([]*consumer{c})), elapsed.Round(100*time.Millisecond))
	report(t, f)
}

// TestClusterNodeLossWithConsumersSharingTheDurable runs a 3-node NATS
// cluster with R3 streams and three consumer processes sharing the durable
// consumer, the way users scale out, and kills the node leading the input
// stream mid-stream. Nothing may be lost or duplicated; inputs published
// after the loss go to the surviving majority.
func TestClusterNodeLossWithConsumersSharingTheDurable(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster scenario skipped in -short mode")
	}
	rng, _ := newRand(t)
	w := buildWorkload(t, rng, workloadSpec{n: size(1200), lookupRefunds: 60, shippedFrac: 0.4})
	nodes := startCluster(t, 3)
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.URL
	}
	natsURL := strings.Join(urls, ",")
	// A PandaPon answering in 50 ms keeps work in flight when the node goes.
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: w.refunds, Faults: sandbox.Faults{Latency: 50 * time.Millisecond}})
	b := connectBus(t, natsURL, 3)

	env := consumerEnv(natsURL, sb.URL, "PANDABRIDGE_STREAM_REPLICAS=3", "PANDABRIDGE_ACK_WAIT=5s")
	var procs []*consumer
	for i := range 3 {
		procs = append(procs, startConsumer(t, fmt.Sprintf("consumer#%d", i+1), env))
	}
	for _, c := range procs {
		c.waitConsuming(time.Minute)
	}
	start := time.Now()
	before := len(w.inputs) * 2 / 3
	b.publish(t, w.inputs[:before])
	testkit.Eventually(t, 2*time.Minute, func() bool { return totalHandled(procs) >= len(w.inputs)/4 }, "a quarter of the inputs handled")

	leader := streamLeader(t, b, b.topo.InputStream)
	var victim *embeddednats.Server
	for _, n := range nodes {
		if n.Name() == leader {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("no node named %q leads %s", leader, b.topo.InputStream)
	}
	killedAt := time.Now()
	victim.Shutdown()
	handledAtLoss := totalHandled(procs)
	t.Logf("node %s (leader of %s) shut down after %d handled lines", leader, b.topo.InputStream, handledAtLoss)
	b.publish(t, w.inputs[before:])
	b.waitSettled(t, w, 3*time.Minute)
	elapsed := time.Since(start)

	// Recovered: every input published before the loss has its output.
	f, outs := verify(t, b, sb, w, "cluster-node-loss")
	f.recover = max(0, settledAt(outs, w.inputs[:before]).Sub(killedAt))
	perProc := make([]string, len(procs))
	for i, c := range procs {
		perProc[i] = fmt.Sprint(c.handledCount())
	}
	f.extra = fmt.Sprintf("killed=%s handled_at_loss=%d consumers=%d handled_per_consumer=%s redone=%d elapsed=%s",
		leader, handledAtLoss, len(procs), strings.Join(perProc, "/"), len(rehandled(procs)), elapsed.Round(100*time.Millisecond))
	report(t, f)
}

// startCluster starts n JetStream servers routed to each other and waits
// for a JetStream meta leader.
func startCluster(t *testing.T, n int) []*embeddednats.Server {
	t.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		ports[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
	}
	nodes := make([]*embeddednats.Server, n)
	for i := range nodes {
		s, err := embeddednats.Start(embeddednats.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			StoreDir:   t.TempDir(),
			Cluster:    &server.ClusterOpts{Name: "chaos", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		nodes[i] = s
	}
	_, js := testkit.Connect(t, nodes[0].URL)
	testkit.Eventually(t, time.Minute, every(250*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	}), "the cluster to elect a JetStream meta leader")
	return nodes
}

func streamLeader(t *testing.T, b *bus, stream string) string {
	t.Helper()
	var leader string
	testkit.Eventually(t, 30*time.Second, every(250*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := b.js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != ""
	}), "a leader of %s", stream)
	return leader
}

// TestPandaPonFaultsAndPoisonInputs runs the stream against a PandaPon that
// answers 20 % of requests 503, 5 % 429 with Retry-After, lets 3 % hang
// longer than the client's timeout, and holds some refunds' answers longer
// than the ack wait; 5 % of the inputs are poison. Every valid input must
// come through exactly once, handled once (no redelivery of work in
// progress), every poison input must be dead-lettered exactly once, and no
// parcel submitted twice.
func TestPandaPonFaultsAndPoisonInputs(t *testing.T) {
	rng, seed := newRand(t)
	w := buildWorkload(t, rng, workloadSpec{n: size(1500), lookupRefunds: 100, shippedFrac: 0.4, poisonFrac: 0.05})
	// Refunds whose every answer takes longer than the ack wait: 10
	// lookups on refunds of their own, appended to the workload.
	const spikes = 10
	spiked := map[string]bool{}
	subjects := topology.New(events.DefaultSubjectPrefix).Subjects
	for range spikes {
		refund := sandbox.GeneratedRefundID(w.refunds)
		w.refunds++
		spiked[refund] = true
		e := testkit.Lookup(refund)
		m, err := events.EncodeNATS(subjects.Of(events.TypeRefundLookupRequested), e)
		if err != nil {
			t.Fatal(err)
		}
		in := input{id: e.ID(), kind: kindLookup, subject: m.Subject, refund: refund, header: m.Header, data: m.Data}
		at := rng.IntN(len(w.inputs) + 1)
		w.inputs = slices.Insert(w.inputs, at, in)
		w.lookups++
	}
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: w.refunds, RandSeed: int64(seed)})
	const (
		ackWait       = time.Second
		clientTimeout = 2 * time.Second
		spike         = 1500 * time.Millisecond // > ack wait, < client timeout
		hang          = 5 * time.Second         // > client timeout
	)
	sb.SetFaults(sandbox.Faults{ServerErrorRate: 0.20, RateLimitRate: 0.05, RetryAfter: time.Second, TimeoutRate: 0.03, Hang: hang})
	for refund := range spiked {
		sb.SetRefundFaults(refund, sandbox.Faults{Latency: spike})
	}
	b := connectBus(t, ns.URL, 1)
	c := startConsumer(t, "consumer", consumerEnv(ns.URL, sb.URL,
		"PANDABRIDGE_ACK_WAIT="+ackWait.String(), "PANDAPON_TIMEOUT="+clientTimeout.String(), "PANDABRIDGE_CONCURRENCY=64"))
	c.waitConsuming(20 * time.Second)
	start := time.Now()
	b.publish(t, w.inputs)
	b.waitSettled(t, w, 3*time.Minute)
	elapsed := time.Since(start)

	f, outs := verify(t, b, sb, w, "pandapon-faults")
	if f.dlq != w.poison {
		t.Errorf("%d dead letters, want exactly the %d poison inputs", f.dlq, w.poison)
	}
	redone := rehandled([]*consumer{c})
	for id, n := range redone {
		t.Errorf("input %s handled %d times: work done was redelivered", id, n)
	}
	st := sb.Stats()
	for _, kind := range []string{sandbox.FaultServerError, sandbox.FaultRateLimit, sandbox.FaultTimeout} {
		if st.FaultsInjected[kind] == 0 {
			t.Errorf("no %s fault was injected: the scenario did not test it", kind)
		}
	}
	f.recover = longestGap(outs, start)
	f.extra = fmt.Sprintf("poison=%d faults=%d/%d/%d(503/429/timeout) requests=%d redone=%d elapsed=%s",
		w.poison, st.FaultsInjected[sandbox.FaultServerError], st.FaultsInjected[sandbox.FaultRateLimit],
		st.FaultsInjected[sandbox.FaultTimeout], st.Requests[sandbox.PathQuery]+st.Requests[sandbox.PathSubmitLogistics],
		len(redone), elapsed.Round(100*time.Millisecond))
	report(t, f)
}

// TestPandaPonOutageOutlastingTheDeliveryBudget: PandaPon answers every
// request 503 until the circuit breaker has opened 16 times, several
// times longer than an input refused by an open breaker lasts
// (PANDABRIDGE_MAX_DELIVERIES × PANDAPON_BREAKER_OPEN_TIMEOUT: 2 s here).
// While the breaker is open the consumer must not pull inputs, so they wait
// in the stream instead of using up their deliveries on refusals. Only the
// inputs pulled as the breaker's probes, one at a time, spend deliveries:
// at most about one dead letter per MAX_DELIVERIES−1 failed probes.
// Meanwhile a second replica is started, stopped and started again three
// times, as a rolling restart or an autoscaler would: having had no answer
// from PandaPon, each must pull one input at a time too, not a batch to
// fail. Everything else is answered once PandaPon is back.
func TestPandaPonOutageOutlastingTheDeliveryBudget(t *testing.T) {
	rng, seed := newRand(t)
	w := buildWorkload(t, rng, workloadSpec{n: size(600), lookupRefunds: 200, shippedFrac: 0.3})
	w.mayDeadLetter = true
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: w.refunds, RandSeed: int64(seed)})
	const (
		maxDeliveries = 4
		openTimeout   = 500 * time.Millisecond
		openings      = 16
	)
	b := connectBus(t, ns.URL, 1)
	env := consumerEnv(ns.URL, sb.URL,
		fmt.Sprintf("PANDABRIDGE_MAX_DELIVERIES=%d", maxDeliveries),
		"PANDAPON_BREAKER_FAILURES=5", "PANDAPON_BREAKER_OPEN_TIMEOUT="+openTimeout.String(), "PANDAPON_MAX_RETRIES=0")
	c := startConsumer(t, "consumer", env)
	c.waitConsuming(20 * time.Second)
	sb.SetFaults(sandbox.Faults{ServerErrorRate: 1})
	start := time.Now()
	b.publish(t, w.inputs)
	waitOpened := func(n int) {
		t.Helper()
		testkit.Eventually(t, time.Minute, every(20*time.Millisecond, func() bool { return c.count(circuitOpenLine) >= n }),
			"the circuit breaker to open %d times", n)
	}
	waitOpened(2)
	replicaRetries := 0
	for i := range 3 {
		r := startConsumer(t, fmt.Sprintf("replica#%d", i+1), env)
		r.waitConsuming(20 * time.Second)
		began := time.Now()
		waitOpened(c.count(circuitOpenLine) + 2) // about a second of outage
		if code, _ := r.terminate(10 * time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", r.name, code)
		}
		// One input at a time, the next an open timeout after a failure.
		retries := r.outcome("retry") + r.outcome("dead_lettered") // the last failure of an input is a dead letter
		if limit := int(time.Since(began)/openTimeout) + 2; retries > limit {
			t.Errorf("%s, started during the outage, failed %d inputs in %s, want at most %d: it pulled a batch before PandaPon had answered it",
				r.name, retries, time.Since(began).Round(10*time.Millisecond), limit)
		}
		replicaRetries += retries
		if r.count("has not answered this process yet") == 0 {
			t.Errorf("%s logged no line saying it pulls one input at a time until PandaPon answers", r.name)
		}
	}
	testkit.Eventually(t, time.Minute, every(20*time.Millisecond, func() bool {
		if c.count(circuitOpenLine) >= openings {
			return true
		}
		// Or nothing is left to wait for PandaPon: all dead-lettered.
		info, err := b.consumerInfo()
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}), "the circuit breaker to open %d times", openings)
	sb.SetFaults(sandbox.Faults{})
	outage := time.Since(start)
	b.waitSettled(t, w, 2*time.Minute)

	f, outs := verify(t, b, sb, w, "pandapon-outage")
	opened := c.count(circuitOpenLine)
	// A delivery after an input's first needs a pull, and while the
	// breaker is open or probing a pull is one probe: at most opened−1 of
	// them failed (each failure reopened the breaker), plus up to the
	// breaker's 5 failures of redeliveries pulled before it first opened,
	// plus the inputs the replicas failed.
	if limit := (opened-1+5+replicaRetries)/(maxDeliveries-1) + 1; f.spent > limit {
		t.Errorf("%d inputs dead-lettered during an outage with %d breaker openings, want at most %d: inputs were pulled while the breaker was open",
			f.spent, opened, limit)
	}
	if budget := maxDeliveries * openTimeout; outage < 3*budget {
		t.Errorf("the outage lasted %s, not several times an input's delivery budget (%s): the scenario did not test it", outage, budget)
	}
	st := sb.Stats()
	f.recover = longestGap(outs, start.Add(outage))
	f.extra = fmt.Sprintf("outage=%s opened=%d replica_failures=%d spent=%d failed_requests=%d elapsed=%s",
		outage.Round(100*time.Millisecond), opened, replicaRetries, f.spent, st.FaultsInjected[sandbox.FaultServerError],
		time.Since(start).Round(100*time.Millisecond))
	report(t, f)
}

// TestSIGTERMMidLoadDrainsWithoutLosingOrRedoing sends SIGTERM to a
// consumer busy with a slow PandaPon. It must finish what it started, hand
// back what it had not started, exit 0, and a second process must finish
// the rest without redoing anything: every input handled once across both
// processes, and PandaPon asked exactly once per request.
func TestSIGTERMMidLoadDrainsWithoutLosingOrRedoing(t *testing.T) {
	rng, _ := newRand(t)
	w := buildWorkload(t, rng, workloadSpec{n: size(1200), shippedFrac: 0.3})
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: w.refunds, Faults: sandbox.Faults{Latency: 100 * time.Millisecond}})
	b := connectBus(t, ns.URL, 1)
	env := consumerEnv(ns.URL, sb.URL)
	first := startConsumer(t, "consumer#1", env)
	first.waitConsuming(20 * time.Second)
	start := time.Now()
	b.publish(t, w.inputs)
	stopAt := len(w.inputs)/5 + rng.IntN(len(w.inputs)/2)
	testkit.Eventually(t, time.Minute, func() bool { return first.handledCount() >= stopAt }, "%d inputs handled", stopAt)
	termAt := time.Now()
	code, drain := first.terminate(30 * time.Second)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(strings.Join(first.output(), "\n"), `"msg":"shut down"`) {
		t.Error(`no "shut down" line after SIGTERM`)
	}
	handledByFirst := first.handledCount()
	second := startConsumer(t, "consumer#2", env)
	b.waitSettled(t, w, 3*time.Minute)
	elapsed := time.Since(start)

	f, _ := verify(t, b, sb, w, "sigterm")
	procs := []*consumer{first, second}
	redone := rehandled(procs)
	for id, n := range redone {
		t.Errorf("input %s handled %d times across the two processes: work done before SIGTERM was redone", id, n)
	}
	if second.handledCount() == 0 {
		t.Error("the second process handled nothing: SIGTERM did not land mid-load")
	}
	st := sb.Stats()
	if q, want := st.Requests[sandbox.PathQuery], w.lookups+w.shipped; q != want {
		t.Errorf("PandaPon got %d refund queries, want %d (one per input): work was redone", q, want)
	}
	if s := st.Requests[sandbox.PathSubmitLogistics]; s != w.shipped {
		t.Errorf("PandaPon got %d logistics submissions, want %d (one per return.shipped)", s, w.shipped)
	}
	if !second.firstHandledAt().IsZero() {
		f.recover = second.firstHandledAt().Sub(termAt)
	}
	f.extra = fmt.Sprintf("drain=%s handled_before/after=%d/%d redone=%d elapsed=%s",
		drain.Round(10*time.Millisecond), handledByFirst, second.handledCount(), len(redone), elapsed.Round(100*time.Millisecond))
	report(t, f)
}

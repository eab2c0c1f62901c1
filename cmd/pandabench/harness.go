package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/topology"
)

const (
	modeDrain  = "drain"
	modeSteady = "steady"
	modeSoak   = "soak"

	contConsumer  = "consumer"
	contBaseline  = "baseline"
	contRaw       = "raw"
	contInProcess = "inprocess"

	// durable is the consumer name every contestant uses, so the harness
	// can read its info.
	durable = topology.DefaultDurable
	// inputSource is the source of every input event.
	inputSource = "pandabench"
)

// Result is one contestant's run of one scenario and mode.
type Result struct {
	Scenario   Scenario
	Mode       string
	Contestant string
	Round      int // 0-based round of -repeat
	N          int
	Rate       float64 // events/s: drain (N-1)/(last-first output); steady arrival rate achieved
	Wall       time.Duration
	Startup    time.Duration // child start to first output (drain)
	CPU        time.Duration // contestant CPU per event
	ParentCPU  time.Duration // broker+sandbox+load generator CPU per event
	PeakRSS    int64
	TotalCPU   time.Duration // whole child lifetime (rusage)
	P50, P95   time.Duration
	P99, Max   time.Duration
	Late       int           // steady: outputs more than 1 s after their input
	MaxGap     time.Duration // longest pause between two outputs
	RSS        []rssSample
	Metrics    map[string]float64 // consumer's /metrics counters by outcome
	Err        error              // correctness failure
	Notes      []string
}

type rssSample struct {
	Events int
	RSS    int64
	At     time.Duration
}

// env is everything shared by the runs: broker, sandbox, binaries.
type env struct {
	o        Options
	log      io.Writer
	ns       *embeddednats.Server
	nsLog    *embeddednats.WarningLog
	nc       *nats.Conn
	js       jetstream.JetStream
	sb       *sandbox.Server
	refunds  []string
	expected map[string][]byte
	consumer string
	self     string
	seq      int
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "pandabench: "+format+"\n", args...)
}

// Bench runs what o asks for and returns every result; the error is about
// the harness itself (could not start), not a contestant's correctness.
func Bench(ctx context.Context, o Options, log io.Writer) ([]Result, error) {
	tmp, err := os.MkdirTemp("", "pandabench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	e := &env{o: o, log: log}
	if e.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if slices.Contains(o.Contestants, contConsumer) {
		if e.consumer = o.ConsumerBin; e.consumer == "" {
			if e.consumer, err = buildConsumer(ctx, tmp); err != nil {
				return nil, err
			}
			e.logf("consumer built as the production image builds it: %s go build %s ./cmd/consumer",
				strings.Join(productionBuild.env, " "), strings.Join(productionBuild.flags, " "))
		}
	}
	e.nsLog = &embeddednats.WarningLog{}
	e.ns, err = embeddednats.Start(embeddednats.Options{StoreDir: filepath.Join(tmp, "jetstream"), Logger: e.nsLog})
	if err != nil {
		return nil, err
	}
	defer e.ns.Shutdown()
	e.nc, err = nats.Connect(e.ns.URL, nats.Name("pandabench"))
	if err != nil {
		return nil, err
	}
	defer e.nc.Close()
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return nil, err
	}
	nref := o.Refunds
	e.sb, err = sandbox.Start("127.0.0.1:0", sandbox.Options{GeneratedRefunds: nref})
	if err != nil {
		return nil, err
	}
	defer e.sb.Close()
	if err := e.prepareRefunds(ctx, nref); err != nil {
		return nil, err
	}
	e.logf("NATS %s, sandbox %s, %d refunds of %d–%d bytes", e.ns.URL, e.sb.URL, nref, minLen(e.expected), maxLen(e.expected))

	var results []Result
	if o.Soak {
		sc := defaultScenarios[0]
		sc.N = o.SoakEvents
		for _, c := range o.Contestants {
			if ctx.Err() != nil {
				break
			}
			results = append(results, e.run(ctx, sc, modeSoak, c, 0))
		}
		return results, ctx.Err()
	}
	for _, name := range o.Scenarios {
		sc, _ := scenarioByName(name)
		switch {
		case o.Events > 0:
			sc.N = o.Events
		case o.Quick && sc.Latency == 0:
			sc.N = 2000
		case o.Quick:
			sc.N = 1000
		}
		if o.SteadyRate > 0 {
			sc.SteadyRate = o.SteadyRate
		}
		for _, mode := range o.Modes {
			for round := range max(1, o.Repeat) {
				for _, c := range rotate(o.Contestants, round) {
					if ctx.Err() != nil {
						return results, ctx.Err()
					}
					results = append(results, e.run(ctx, sc, mode, c, round))
				}
			}
		}
	}
	return results, ctx.Err()
}

// rotate returns list starting at its (round mod len)-th element, so that
// over rounds every contestant runs first as often as the others (exactly so
// when the number of rounds is a multiple of the number of contestants): the
// machine's load drifts.
func rotate(list []string, round int) []string {
	if len(list) == 0 {
		return nil
	}
	k := round % len(list)
	return append(slices.Clone(list[k:]), list[:k]...)
}

func minLen(m map[string][]byte) int {
	n := -1
	for _, b := range m {
		if n < 0 || len(b) < n {
			n = len(b)
		}
	}
	return n
}

func maxLen(m map[string][]byte) int {
	n := 0
	for _, b := range m {
		n = max(n, len(b))
	}
	return n
}

// productionBuild is how the Dockerfile builds the consumer of the
// production image (checked by TestBuildMatchesDockerfile): static, without
// symbol tables, and without the -dev mode's embedded NATS server and
// sandbox. The benchmark measures that binary, not a development build,
// which is larger and keeps about 4 MB more resident.
var productionBuild = struct {
	env   []string
	flags []string
}{
	env:   []string{"CGO_ENABLED=0"},
	flags: []string{"-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-tags=nodev"},
}

// buildConsumer builds ./cmd/consumer of the module around the working
// directory as the production image does (productionBuild).
func buildConsumer(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("cannot find the module to build cmd/consumer from; run inside the repository or pass -consumer-bin")
	}
	bin := filepath.Join(dir, "consumer")
	args := append(append([]string{"build"}, productionBuild.flags...), "-o", bin, "./cmd/consumer")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(gomod)
	cmd.Env = append(os.Environ(), productionBuild.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cmd/consumer: %v\n%s", err, out)
	}
	return bin, nil
}

// prepareRefunds queries every refund once through the real client: it
// builds the sandbox's generated refunds before any run and records the
// data each output must carry.
func (e *env) prepareRefunds(ctx context.Context, n int) error {
	c, err := pandapon.New(pandapon.Config{
		BaseURL:       e.sb.URL,
		Credentials:   pandapon.Credentials{AccessKey: sandbox.DefaultAccessKey, AccessSecret: sandbox.DefaultAccessSecret},
		RateLimit:     -1,
		MaxConcurrent: 32,
	})
	if err != nil {
		return err
	}
	e.refunds = make([]string, n)
	e.expected = make(map[string][]byte, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	sem := make(chan struct{}, 32)
	for i := range n {
		id := sandbox.GeneratedRefundID(i)
		e.refunds[i] = id
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := c.QueryRefund(ctx, id)
			if err != nil {
				select {
				case errs <- fmt.Errorf("preparing refund %s: %w", id, err):
				default:
				}
				return
			}
			mu.Lock()
			e.expected[id] = resp.Data
			mu.Unlock()
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return nil
}

// refundOf is the refund of input i.
func (e *env) refundOf(i int) string { return e.refunds[i%len(e.refunds)] }

// inputID is the id of input i of a run; outputs name it as causationid.
func inputID(tag string, i int) string { return tag + "-" + strconv.Itoa(i) }

func parseInputID(tag, id string) (int, bool) {
	if len(id) <= len(tag)+1 || id[:len(tag)] != tag || id[len(tag)] != '-' {
		return 0, false
	}
	i, err := strconv.Atoi(id[len(tag)+1:])
	return i, err == nil
}

// input builds input i: a binary-mode refund.lookup.requested.
func (e *env) input(topo topology.Topology, tag string, i int) *nats.Msg {
	ev := event.New()
	ev.SetID(inputID(tag, i))
	ev.SetSource(inputSource)
	ev.SetType(events.TypeRefundLookupRequested)
	ev.SetTime(time.Now().UTC())
	ev.SetDataContentType(events.ContentTypeJSON)
	ev.DataEncoded = []byte(`{"refundId":"` + e.refundOf(i) + `"}`)
	msg, err := events.EncodeNATS(topo.Subjects.Of(events.TypeRefundLookupRequested), ev)
	if err != nil {
		panic(err) // our own input
	}
	return msg
}

// collector watches the output subjects (core NATS, so it sees every
// publish, a repeated one too) and records when each input was answered.
type collector struct {
	e    *env
	tag  string
	n    int
	mu   sync.Mutex
	seen []bool
	sent []atomic.Int64 // unix ns of each input's publish (steady, soak)
	lat  []time.Duration

	count, dups, bad atomic.Int64
	badMsg           atomic.Value // string
	first, last      time.Time
	maxGap           time.Duration // longest pause between two outputs
	firstCh, doneCh  chan struct{}
	subs             []*nats.Subscription
}

func (e *env) collect(topo topology.Topology, tag string, n int, timed bool) (*collector, error) {
	c := &collector{e: e, tag: tag, n: n, seen: make([]bool, n), firstCh: make(chan struct{}), doneCh: make(chan struct{})}
	if timed {
		c.sent = make([]atomic.Int64, n)
		c.lat = make([]time.Duration, n)
	}
	for _, subj := range topo.Subjects.Outputs() {
		sub, err := e.nc.Subscribe(subj, c.onMsg)
		if err != nil {
			c.stop()
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		c.subs = append(c.subs, sub)
	}
	return c, e.nc.Flush()
}

func (c *collector) stop() {
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
}

func (c *collector) fail(format string, args ...any) {
	c.bad.Add(1)
	c.badMsg.CompareAndSwap(nil, fmt.Sprintf(format, args...))
}

func hdr(h nats.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c *collector) onMsg(m *nats.Msg) {
	now := time.Now()
	cause := hdr(m.Header, events.HeaderPrefix+events.ExtCausationID)
	i, ok := parseInputID(c.tag, cause)
	if !ok || i < 0 || i >= c.n {
		c.fail("output on %s with causationid %q that is no input of this run", m.Subject, cause)
		return
	}
	if t := hdr(m.Header, events.HeaderPrefix+"type"); t != events.TypeRefundUpdated {
		c.fail("output for input %d has type %q, want %s (data %.200s)", i, t, events.TypeRefundUpdated, m.Data)
	}
	if s := hdr(m.Header, events.HeaderPrefix+"subject"); s != c.e.refundOf(i) {
		c.fail("output for input %d has subject %q, want %s", i, s, c.e.refundOf(i))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[i] {
		c.dups.Add(1)
		return
	}
	c.seen[i] = true
	if c.lat != nil {
		c.lat[i] = now.Sub(time.Unix(0, c.sent[i].Load()))
	}
	n := c.count.Add(1)
	if n == 1 {
		c.first = now
		close(c.firstCh)
	}
	if n > 1 {
		c.maxGap = max(c.maxGap, now.Sub(c.last))
	}
	c.last = now
	if int(n) == c.n {
		close(c.doneCh)
	}
}

func (c *collector) times() (first, last time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first, c.last
}

// child is a running contestant.
type child struct {
	cmd     *exec.Cmd
	pid     int
	exited  chan struct{}
	waitErr error
	tail    *tailBuffer
}

// tailBuffer keeps the last lines a child wrote on stderr.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(p))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t.lines = append(t.lines, sc.Text())
		if len(t.lines) > 20 {
			t.lines = t.lines[1:]
		}
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// passedThrough are the runtime settings runtimeTuning copies from this
// process's environment to every contestant's.
var passedThrough = []string{"GOMAXPROCS", "GOGC", "GOMEMLIMIT", "PANDABRIDGE_GC_HEAP_FLOOR"}

// runtimeTuning appends to vars the runtime settings every contestant gets
// alike: GOMAXPROCS, GOGC, GOMEMLIMIT and PANDABRIDGE_GC_HEAP_FLOOR from
// this process's environment, so that their effect can be measured (e.g.
// GOGC=400 go run ./cmd/pandabench; the floor only means something to the
// consumer and inprocess), then -gomaxprocs, which wins over GOMAXPROCS (the
// last of duplicate keys is the one a child sees).
func runtimeTuning(vars []string, o Options) []string {
	for _, name := range passedThrough {
		if v := os.Getenv(name); v != "" {
			vars = append(vars, name+"="+v)
		}
	}
	if o.GOMAXPROCS > 0 {
		vars = append(vars, "GOMAXPROCS="+strconv.Itoa(o.GOMAXPROCS))
	}
	return vars
}

// start launches contestant name for the run's topology.
func (e *env) start(name string, sc Scenario, topo topology.Topology, profile, httpAddr, logName string) (*child, error) {
	vars := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.TempDir(),
		"NATS_URL=" + e.ns.URL,
		"PANDAPON_BASE_URL=" + e.sb.URL,
		"PANDAPON_ACCESS_KEY=" + sandbox.DefaultAccessKey,
		"PANDAPON_ACCESS_SECRET=" + sandbox.DefaultAccessSecret,
		"PANDABRIDGE_CONCURRENCY=" + strconv.Itoa(sc.C),
		"PANDAPON_MAX_CONCURRENT=" + strconv.Itoa(sc.C),
		"PANDAPON_RATE_LIMIT=1000000",
		"PANDABRIDGE_SUBJECT_PREFIX=" + topo.Subjects.Prefix,
		"PANDABRIDGE_LOG_LEVEL=" + e.o.LogLevel,
		"PANDABRIDGE_HTTP_ADDR=" + httpAddr,
	}
	vars = runtimeTuning(vars, e.o)
	var cmd *exec.Cmd
	switch name {
	case contConsumer:
		cmd = exec.Command(e.consumer)
	default:
		cmd = exec.Command(e.self)
		vars = append(vars, envRole+"="+name, envPool+"="+strconv.Itoa(e.o.BaselinePool))
		if profile != "" {
			vars = append(vars, envCPUProfile+"="+profile)
		}
	}
	cmd.Env = vars
	ch := &child{cmd: cmd, exited: make(chan struct{}), tail: &tailBuffer{}}
	cmd.Stdout = io.Discard
	cmd.Stderr = ch.tail
	var logFile *os.File
	if e.o.ChildLogDir != "" {
		_ = os.MkdirAll(e.o.ChildLogDir, 0o755)
		f, err := os.Create(filepath.Join(e.o.ChildLogDir, logName+".log"))
		if err != nil {
			return nil, err
		}
		logFile = f
		cmd.Stderr = io.MultiWriter(ch.tail, f)
	}
	// The child dies with us, whatever happens to this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, err
	}
	ch.pid = cmd.Process.Pid
	go func() {
		ch.waitErr = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(ch.exited)
	}()
	return ch, nil
}

// stop sends SIGTERM and waits for a graceful exit, killing after grace.
func (ch *child) stop(grace time.Duration) error {
	select {
	case <-ch.exited:
		return fmt.Errorf("exited early: %v\n%s", ch.waitErr, ch.tail)
	default:
	}
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch.exited:
		if ch.waitErr != nil {
			return fmt.Errorf("exit after SIGTERM: %v\n%s", ch.waitErr, ch.tail)
		}
		return nil
	case <-time.After(grace):
		_ = ch.cmd.Process.Kill()
		<-ch.exited
		return fmt.Errorf("did not exit within %s of SIGTERM; killed\n%s", grace, ch.tail)
	}
}

func (ch *child) rusage() (cpu time.Duration, maxRSS int64) {
	if ch.cmd.ProcessState == nil {
		return 0, 0
	}
	ru, ok := ch.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Maxrss << 10
}

// createStreams creates the run's streams; a soak bounds them so a million
// events do not fill the disk. A stream whose store the server could not
// create (JetStream error 10049, a file-system failure such as a full disk
// on a shared machine) is tried again up to three times, 100 ms, 400 ms and
// 1.6 s apart; each failure is logged with the cause the server logged, and
// the last one is returned with it.
func (e *env) createStreams(ctx context.Context, topo topology.Topology, soak bool) error {
	for _, cfg := range topo.StreamConfigs() {
		if soak && cfg.Name != topo.DLQStream {
			cfg.MaxMsgs = 200_000
		}
		wait := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			mark := e.nsLog.Mark()
			_, err := e.js.CreateStream(ctx, cfg)
			if err == nil {
				break
			}
			if cause := e.nsLog.Since(mark); cause != "" {
				err = fmt.Errorf("%w (server log: %s)", err, cause)
			}
			err = fmt.Errorf("creating stream %s: %w", cfg.Name, err)
			var apiErr *jetstream.APIError
			if attempt > 3 || !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrStreamCreate {
				return err
			}
			e.logf("%v; trying again in %s", err, wait)
			select {
			case <-ctx.Done():
				return err
			case <-time.After(wait):
			}
			wait *= 4
		}
	}
	return nil
}

// jsErrStreamCreate is JetStream's "stream create failed" error code
// (JSStreamCreateErrF); nats.go names no constant for it.
const jsErrStreamCreate jetstream.ErrorCode = 10049

func (e *env) deleteStreams(topo topology.Topology) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range []string{topo.InputStream, topo.OutputStream, topo.DLQStream} {
		_ = e.js.DeleteStream(ctx, s)
	}
}

// run performs one contestant's run; it never panics on the contestant's
// failure, it records it in Result.Err.
func (e *env) run(ctx context.Context, sc Scenario, mode, name string, round int) (r Result) {
	r = Result{Scenario: sc, Mode: mode, Contestant: name, Round: round}
	// What the run's files (profile, child log, metrics) are named after.
	fileBase := fmt.Sprintf("%s-%s-%s", sc.Name, mode, name)
	if e.o.Repeat > 1 {
		fileBase += fmt.Sprintf("-r%d", round+1)
	}
	e.seq++
	tag := fmt.Sprintf("pb%d%s%s", e.seq, strings.ToLower(sc.Name), mode[:2])
	topo := topology.New(tag)
	e.sb.SetFaults(sandbox.Faults{Latency: sc.Latency})
	n := sc.N
	if mode == modeSteady {
		n = max(1, int(sc.SteadyRate*e.o.SteadyDuration.Seconds()))
	}
	r.N = n
	e.logf("%s %s %s: %d events, C=%d, upstream latency %s", sc.Name, mode, name, n, sc.C, sc.Latency)
	defer func() {
		if r.Err != nil {
			e.logf("%s %s %s: FAILED: %v", sc.Name, mode, name, r.Err)
		} else {
			e.logf("%s %s %s: %.0f events/s, %.1f µs CPU/event, peak RSS %.1f MB", sc.Name, mode, name,
				r.Rate, us(r.CPU), mb(r.PeakRSS))
		}
	}()

	rctx, cancel := context.WithTimeout(ctx, e.o.RunTimeout)
	defer cancel()
	if err := e.createStreams(rctx, topo, mode == modeSoak); err != nil {
		r.Err = err
		return r
	}
	defer e.deleteStreams(topo)
	col, err := e.collect(topo, tag, n, mode != modeDrain)
	if err != nil {
		r.Err = err
		return r
	}
	defer col.stop()

	if mode == modeDrain {
		if err := e.preload(rctx, topo, tag, n); err != nil {
			r.Err = err
			return r
		}
	}

	profile := ""
	if e.o.CPUProfileDir != "" {
		_ = os.MkdirAll(e.o.CPUProfileDir, 0o755)
		if name != contConsumer {
			profile, _ = filepath.Abs(filepath.Join(e.o.CPUProfileDir, fileBase+".pprof"))
		}
		// The parent's share of the run: the broker, the sandbox and the
		// collector, from the contestant's start to the end of the run.
		stop, err := startCPUProfile(filepath.Join(e.o.CPUProfileDir, fileBase+".parent.pprof"))
		if err != nil {
			e.logf("parent CPU profile: %v", err)
		} else {
			defer stop()
		}
	}
	httpAddr, err := freePort()
	if err != nil {
		r.Err = err
		return r
	}
	started := time.Now()
	ch, err := e.start(name, sc, topo, profile, httpAddr, fileBase)
	if err != nil {
		r.Err = err
		return r
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = ch.stop(5 * time.Second)
		}
	}()

	// Sample RSS while running.
	var rssMu sync.Mutex
	samplerDone := make(chan struct{})
	sampleStop := make(chan struct{})
	go func() {
		defer close(samplerDone)
		period := 250 * time.Millisecond
		if mode == modeSoak {
			period = time.Second
		}
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-sampleStop:
				return
			case <-ch.exited:
				return
			case <-t.C:
			}
			rss, _, err := procMem(ch.pid)
			if err != nil {
				continue
			}
			rssMu.Lock()
			r.RSS = append(r.RSS, rssSample{Events: int(col.count.Load()), RSS: rss, At: time.Since(started)})
			rssMu.Unlock()
		}
	}()

	var cpu0, cpu1, pcpu0, pcpu1 time.Duration
	var waitErr error
	switch mode {
	case modeDrain:
		select {
		case <-col.firstCh:
			cpu0, _ = procCPU(ch.pid)
			pcpu0 = selfCPU()
		case <-ch.exited:
		case <-rctx.Done():
		}
		waitErr = e.waitDone(rctx, col, ch)
		cpu1, _ = procCPU(ch.pid)
		pcpu1 = selfCPU()
		first, last := col.times()
		r.Startup = first.Sub(started)
		r.Wall = last.Sub(first)
		if waitErr == nil && n > 1 {
			r.Rate = float64(n-1) / r.Wall.Seconds()
		}
		if n > 1 {
			r.CPU = (cpu1 - cpu0) / time.Duration(n-1)
			r.ParentCPU = (pcpu1 - pcpu0) / time.Duration(n-1)
		}
	case modeSteady, modeSoak:
		if err := e.waitConsumer(rctx, topo, ch); err != nil {
			r.Err = err
			return r
		}
		time.Sleep(200 * time.Millisecond)
		cpu0, _ = procCPU(ch.pid)
		pcpu0 = selfCPU()
		t0 := time.Now()
		pubErr := make(chan error, 1)
		go func() {
			if mode == modeSteady {
				pubErr <- e.publishSteady(rctx, topo, col, sc.SteadyRate)
			} else {
				pubErr <- e.publishClosedLoop(rctx, topo, col, 20_000)
			}
		}()
		waitErr = e.waitDone(rctx, col, ch)
		if err := <-pubErr; err != nil && waitErr == nil {
			waitErr = err
		}
		cpu1, _ = procCPU(ch.pid)
		pcpu1 = selfCPU()
		_, last := col.times()
		r.Wall = last.Sub(t0)
		if waitErr == nil {
			r.Rate = float64(n) / r.Wall.Seconds()
		}
		r.CPU = (cpu1 - cpu0) / time.Duration(n)
		r.ParentCPU = (pcpu1 - pcpu0) / time.Duration(n)
		r.P50, r.P95, r.P99, r.Max, r.Late = latencies(col, n)
	}
	col.mu.Lock()
	r.MaxGap = col.maxGap
	col.mu.Unlock()
	if waitErr != nil {
		r.Err = waitErr
		return r
	}

	// Let the last acks land, then read the peak and the metrics.
	ackErr := e.waitAcked(rctx, topo, n)
	if _, hwm, err := procMem(ch.pid); err == nil {
		r.PeakRSS = hwm
	}
	if name == contConsumer {
		var text []byte
		r.Metrics, text = scrapeMetrics(httpAddr)
		if e.o.ChildLogDir != "" && text != nil {
			_ = os.WriteFile(filepath.Join(e.o.ChildLogDir, fileBase+".metrics"), text, 0o644)
		}
	}
	close(sampleStop)
	<-samplerDone
	stopped = true
	if err := ch.stop(30 * time.Second); err != nil {
		r.Notes = append(r.Notes, "stop: "+firstLine(err.Error()))
	}
	r.TotalCPU, _ = ch.rusage()
	if ackErr != nil {
		r.Err = ackErr
		return r
	}
	r.Err = e.verify(rctx, topo, col, name, mode == modeSoak)
	return r
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// preload publishes the n inputs of a drain before the contestant starts.
func (e *env) preload(ctx context.Context, topo topology.Topology, tag string, n int) error {
	for i := range n {
		if _, err := e.js.PublishMsgAsync(e.input(topo, tag, i)); err != nil {
			return fmt.Errorf("preloading input %d: %w", i, err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("preloading: %w", ctx.Err())
	}
	info, err := e.js.Stream(ctx, topo.InputStream)
	if err != nil {
		return err
	}
	if got := info.CachedInfo().State.Msgs; got != uint64(n) {
		return fmt.Errorf("preloading: input stream holds %d messages, want %d", got, n)
	}
	return nil
}

// publishSteady publishes col.n inputs at rate per second, recording when
// each was published.
func (e *env) publishSteady(ctx context.Context, topo topology.Topology, col *collector, rate float64) error {
	interval := time.Duration(float64(time.Second) / rate)
	t0 := time.Now()
	for i := range col.n {
		due := t0.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		msg := e.input(topo, col.tag, i)
		col.sent[i].Store(time.Now().UnixNano())
		if _, err := e.js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("publishing input %d: %w", i, err)
		}
	}
	return nil
}

// publishClosedLoop publishes col.n inputs keeping at most window of them
// unanswered (a soak: bounded backlog, bounded streams).
func (e *env) publishClosedLoop(ctx context.Context, topo topology.Topology, col *collector, window int) error {
	for i := range col.n {
		for i-int(col.count.Load()) >= window {
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		msg := e.input(topo, col.tag, i)
		col.sent[i].Store(time.Now().UnixNano())
		if _, err := e.js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("publishing input %d: %w", i, err)
		}
	}
	return nil
}

// waitDone waits for every output, the child's death or the deadline.
func (e *env) waitDone(ctx context.Context, col *collector, ch *child) error {
	select {
	case <-col.doneCh:
		return nil
	case <-ch.exited:
		return fmt.Errorf("contestant exited after %d of %d outputs: %v\n%s", col.count.Load(), col.n, ch.waitErr, ch.tail)
	case <-ctx.Done():
		return fmt.Errorf("timed out with %d of %d outputs (%d duplicates, %d bad)", col.count.Load(), col.n, col.dups.Load(), col.bad.Load())
	}
}

// waitConsumer waits until the contestant's durable consumer exists.
func (e *env) waitConsumer(ctx context.Context, topo topology.Topology, ch *child) error {
	for {
		if _, err := e.js.Consumer(ctx, topo.InputStream, durable); err == nil {
			return nil
		}
		select {
		case <-ch.exited:
			return fmt.Errorf("contestant exited before consuming: %v\n%s", ch.waitErr, ch.tail)
		case <-ctx.Done():
			return errors.New("contestant did not create its consumer in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitAcked waits until the durable consumer's ack floor reaches n.
func (e *env) waitAcked(ctx context.Context, topo topology.Topology, n int) error {
	deadline := time.Now().Add(15 * time.Second)
	var info *jetstream.ConsumerInfo
	for {
		cons, err := e.js.Consumer(ctx, topo.InputStream, durable)
		if err == nil {
			info, err = cons.Info(ctx)
		}
		if err == nil && info.AckFloor.Stream >= uint64(n) && info.NumAckPending == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if info == nil {
				return fmt.Errorf("reading consumer info: %v", err)
			}
			return fmt.Errorf("inputs not all acknowledged: ack floor %d of %d, %d pending ack, %d redelivered",
				info.AckFloor.Stream, n, info.NumAckPending, info.NumRedelivered)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verify checks the run's end state: every input answered exactly once,
// nothing redelivered, nothing dead-lettered, and (unless a soak) every
// stored output is the right event with PandaPon's data byte for byte.
func (e *env) verify(ctx context.Context, topo topology.Topology, col *collector, name string, soak bool) error {
	var errs []error
	if n := col.bad.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%d wrong outputs, first: %v", n, col.badMsg.Load()))
	}
	if d := col.dups.Load(); d > 0 {
		errs = append(errs, fmt.Errorf("%d outputs published twice (a redelivery or a repeated publish)", d))
	}
	cons, err := e.js.Consumer(ctx, topo.InputStream, durable)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if ci.Delivered.Consumer != uint64(col.n) || ci.NumRedelivered != 0 {
		errs = append(errs, fmt.Errorf("%d deliveries for %d inputs (%d redelivered): redeliveries happened",
			ci.Delivered.Consumer, col.n, ci.NumRedelivered))
	}
	if ci.NumPending != 0 || ci.NumAckPending != 0 {
		errs = append(errs, fmt.Errorf("consumer has %d pending and %d unacknowledged", ci.NumPending, ci.NumAckPending))
	}
	dlq, err := e.js.Stream(ctx, topo.DLQStream)
	if err == nil && dlq.CachedInfo().State.Msgs != 0 {
		errs = append(errs, fmt.Errorf("%d dead letters", dlq.CachedInfo().State.Msgs))
	}
	out, err := e.js.Stream(ctx, topo.OutputStream)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	stored := out.CachedInfo().State.Msgs
	if !soak && stored != uint64(col.n) {
		errs = append(errs, fmt.Errorf("output stream holds %d messages, want exactly %d", stored, col.n))
	}
	if soak || !e.o.VerifyData || len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Read every stored output back.
	oc, err := e.js.OrderedConsumer(ctx, topo.OutputStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	it, err := oc.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	seen := make([]bool, col.n)
	wantData := name != contRaw // raw publishes a canned payload
	deadline := time.AfterFunc(time.Minute, it.Stop)
	defer deadline.Stop()
	for range col.n {
		m, err := it.Next()
		if err != nil {
			return fmt.Errorf("reading outputs back: %w", err)
		}
		ev, err := events.DecodeNATS(m.Headers(), m.Data())
		if wantData && err != nil {
			return fmt.Errorf("stored output is not a CloudEvent: %w", err)
		}
		cause := hdr(m.Headers(), events.HeaderPrefix+events.ExtCausationID)
		i, ok := parseInputID(col.tag, cause)
		if !ok || i >= col.n || seen[i] {
			return fmt.Errorf("stored output with causationid %q: unknown or repeated", cause)
		}
		seen[i] = true
		if !wantData {
			continue
		}
		if want := events.OutputID(inputSource, inputID(col.tag, i)); ev.ID() != want {
			return fmt.Errorf("output for input %d has id %s, want %s", i, ev.ID(), want)
		}
		if want := e.expected[e.refundOf(i)]; !bytes.Equal(ev.Data(), want) {
			return fmt.Errorf("output for input %d: data differs from PandaPon's (%d vs %d bytes)", i, len(ev.Data()), len(want))
		}
	}
	return nil
}

// latencies returns publish→output percentiles over the steady part (the
// first 10% is warm-up) and how many outputs came more than 1 s late.
func latencies(col *collector, n int) (p50, p95, p99, maxd time.Duration, late int) {
	col.mu.Lock()
	defer col.mu.Unlock()
	from := n / 10
	ls := slices.Clone(col.lat[from:])
	if len(ls) == 0 {
		return
	}
	slices.Sort(ls)
	pick := func(q float64) time.Duration { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
	for _, l := range ls {
		if l > time.Second {
			late++
		}
	}
	return pick(0.50), pick(0.95), pick(0.99), ls[len(ls)-1], late
}

// scrapeMetrics reads the consumer's settled-input counters by outcome.
func scrapeMetrics(addr string) (map[string]float64, []byte) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, nil
	}
	text, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "pandabridge_events_consumed_total{") {
			continue
		}
		i := strings.Index(line, `outcome="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		outcome := line[i+len(`outcome="`):]
		outcome = outcome[:strings.IndexByte(outcome, '"')]
		v, _ := strconv.ParseFloat(line[j+1:], 64)
		out[outcome] += v
	}
	return out, text
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func mb(b int64) float64         { return float64(b) / (1 << 20) }

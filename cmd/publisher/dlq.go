package main

// publisher dlq: the dead-letter tooling.
//
// Dead letters live in the stream <PREFIX>_DLQ on <prefix>.dlq.<original
// subject without the prefix>: the original message, headers and payload
// byte for byte, plus Pandabridge-Dlq-Reason, -Deliveries and -Stream-Seq
// (and, for webhook dead letters, Pandabridge-Dlq-Stream and
// Pandabridge-Webhook-Target). The commands read the stream message by
// message (next message at or after a sequence, optionally on a subject
// filter), stopping at the last sequence the stream had when they started,
// so that they terminate while the consumer keeps dead-lettering.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/delivery"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/topology"
)

const dlqUsage = `Usage: publisher dlq <subcommand> [flags]

Inspect and act on dead letters: inputs the consumer gave up on (invalid, or
failing PANDABRIDGE_MAX_DELIVERIES times) and webhook events no target took.
They are stored in the stream <PREFIX>_DLQ (PANDAPON_DLQ by default).

Subcommands:
  list     one line per dead letter: sequence, age, original subject, type, id,
           refund, deliveries, reason
  show     every header and the payload of one dead letter
  replay   publish dead letters again to their original subject, then remove
           them from the DLQ (only once JetStream acknowledged the publish)
  purge    delete dead letters, after confirmation

Select dead letters by DLQ sequence (SEQ, as "list" prints it), with --all, or
with the filters --subject, --type and --reason.

Run "publisher dlq <subcommand> -h" for the flags of a subcommand.
`

// dlqPrefix starts every header the dead-lettering adds; replay drops them.
const dlqPrefix = topology.HeaderDLQPrefix

// reasonWidth is how much of a reason the list table shows.
const reasonWidth = 60

func (c *cli) dlq(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, dlqUsage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(c.stderr, dlqUsage)
		return 0
	case "list":
		return c.dlqList(ctx, args[1:])
	case "show":
		return c.dlqShow(ctx, args[1:])
	case "replay":
		return c.dlqReplay(ctx, args[1:])
	case "purge":
		return c.dlqPurge(ctx, args[1:])
	}
	fmt.Fprintf(c.stderr, "publisher dlq: unknown subcommand %q\n\n%s", args[0], dlqUsage)
	return 2
}

// dlqFilter selects dead letters by their original subject, their event
// type and their reason.
type dlqFilter struct {
	subject, typ, reason string
	// dlqSubject is subject turned into a subject filter on the DLQ stream.
	dlqSubject string
}

func addFilterFlags(fs *flag.FlagSet) *dlqFilter {
	f := &dlqFilter{}
	fs.StringVar(&f.subject, "subject", "", "only dead letters of this original subject, e.g. pandapon.return.shipped,\nreturn.shipped or webhook.erp (NATS wildcards * and > allowed)")
	fs.StringVar(&f.typ, "type", "", "only dead letters whose event type is exactly this, e.g. return.shipped")
	fs.StringVar(&f.reason, "reason", "", "only dead letters whose reason contains this text (case-insensitive)")
	return f
}

// set reports whether any filter flag was given.
func (f *dlqFilter) set(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == "subject" || fl.Name == "type" || fl.Name == "reason" })
	return set
}

// prepare validates the filter and computes the DLQ subject filter; the
// error names the flag.
func (f *dlqFilter) prepare(c *cli) error {
	s := c.topo.Subjects
	f.dlqSubject = s.DeadLetters()
	if f.subject == "" {
		return nil
	}
	if err := checkSubjectFilter(f.subject); err != nil {
		return fmt.Errorf("--subject %q: %v", f.subject, err)
	}
	// Already a dead-letter subject, or a wildcard covering all of them?
	// Otherwise it names the original subject, with or without the prefix.
	if _, ok := s.OriginalOfDeadLetter(f.subject); ok {
		f.dlqSubject = f.subject
	} else {
		f.dlqSubject = s.DeadLetter(f.subject)
	}
	return nil
}

// checkSubjectFilter checks that s is a valid NATS subject, wildcards
// allowed.
func checkSubjectFilter(s string) error {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("contains white space or a control character")
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return errors.New("has an empty token")
		case t == ">" && i != len(toks)-1:
			return errors.New("'>' must be the last token")
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return errors.New("a wildcard must be a whole token")
		}
	}
	return nil
}

func (f *dlqFilter) match(d deadLetter) bool {
	if f.typ != "" && d.typ != f.typ {
		return false
	}
	if f.reason != "" && !strings.Contains(strings.ToLower(d.reason), strings.ToLower(f.reason)) {
		return false
	}
	return true
}

// parseArgs parses flags interleaved with positional arguments
// ("replay 5 --dry-run 7"); the exit code and false when parsing ended the
// command (-h: 0, bad flags: 2).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if code, ok := parseFlags(fs, args); !ok {
			return nil, code, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// parseSeqs turns SEQ arguments into sequences, without repeats, in order.
func (c *cli) parseSeqs(fs *flag.FlagSet, args []string) ([]uint64, int, bool) {
	var seqs []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, c.usageError(fs, "SEQ %q: not a dead-letter sequence number (a positive integer, as \"publisher dlq list\" prints it)", a), false
		}
		if !slices.Contains(seqs, n) {
			seqs = append(seqs, n)
		}
	}
	return seqs, 0, true
}

// deadLetter is one stored dead letter with what the tooling shows of it.
type deadLetter struct {
	msg *jetstream.RawStreamMsg
	// original is the subject a replay publishes to ("" when the message
	// is not on a dead-letter subject of this prefix).
	original                     string
	typ, id, source, refund      string
	reason, deliveries, inputSeq string
	webhookTarget                string
}

// describe extracts the event attributes of a dead letter: from ce-*
// headers (binary mode) or from the payload (structured mode). A dead
// letter may be anything a producer sent, so nothing here fails.
func (c *cli) describe(m *jetstream.RawStreamMsg) deadLetter {
	d := deadLetter{msg: m}
	d.original, _ = c.topo.Subjects.OriginalOfDeadLetter(m.Subject)
	h := m.Header
	d.reason = headerValue(h, pipeline.HeaderDLQReason)
	d.deliveries = headerValue(h, pipeline.HeaderDLQDeliveries)
	d.inputSeq = headerValue(h, pipeline.HeaderDLQStreamSeq)
	d.webhookTarget = headerValue(h, delivery.HeaderWebhookTarget)
	id := events.Identify(h, m.Data)
	d.typ, d.id, d.source, d.refund = id.Type, id.ID, id.Source, id.RefundID
	return d
}

// headerValue is h.Get(key), but case-insensitive: a dead letter keeps the
// producer's header names as they were written.
func headerValue(h nats.Header, key string) string {
	if v := h.Get(key); v != "" {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// directGetHeaders are added by a direct get (a stream with AllowDirect);
// they are not part of the stored message.
var directGetHeaders = []string{jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer,
	jetstream.SubjectHeader, "Nats-Last-Sequence", "Nats-Num-Pending"}

// dlqStream is the opened DLQ stream and the last sequence it had then.
type dlqStream struct {
	s      jetstream.Stream
	last   uint64
	msgs   uint64
	direct bool
}

// openDLQ looks up the DLQ stream; nil, nil when it does not exist (the
// consumer never ran): no dead letters. The DLQ tooling never creates it.
func (c *cli) openDLQ(ctx context.Context) (*dlqStream, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	s, err := c.js.Stream(ctx, c.topo.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", c.topo.DLQStream, err)
	}
	info := s.CachedInfo()
	return &dlqStream{s: s, last: info.State.LastSeq, msgs: info.State.Msgs, direct: info.Config.AllowDirect}, nil
}

func (ds *dlqStream) clean(m *jetstream.RawStreamMsg) *jetstream.RawStreamMsg {
	if ds.direct {
		for _, k := range directGetHeaders {
			m.Header.Del(k)
		}
	}
	return m
}

// getDeadLetter returns the dead letter with sequence seq; jetstream.ErrMsgNotFound
// when there is none.
func (c *cli) getDeadLetter(ctx context.Context, ds *dlqStream, seq uint64) (deadLetter, error) {
	if ds == nil {
		return deadLetter{}, jetstream.ErrMsgNotFound
	}
	gctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	m, err := ds.s.GetMsg(gctx, seq)
	if err != nil {
		return deadLetter{}, err
	}
	return c.describe(ds.clean(m)), nil
}

// scan calls fn for each dead letter matching f, oldest first, up to the
// last sequence the stream had when it was opened, until fn returns false.
// The subject filter is applied by the server ("next message at or after
// sequence on subject"), so deleted gaps and other subjects cost nothing.
func (c *cli) scan(ctx context.Context, ds *dlqStream, f *dlqFilter, fn func(deadLetter) bool) error {
	if ds == nil || ds.msgs == 0 {
		return nil
	}
	for seq := uint64(1); seq <= ds.last; {
		if err := ctx.Err(); err != nil {
			return err
		}
		gctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
		m, err := ds.s.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(f.dlqSubject))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s at sequence %d: %w", c.topo.DLQStream, seq, err)
		}
		if m.Sequence > ds.last {
			return nil
		}
		seq = m.Sequence + 1
		if d := c.describe(ds.clean(m)); f.match(d) && !fn(d) {
			return nil
		}
	}
	return nil
}

func (c *cli) dlqList(ctx context.Context, args []string) int {
	fs := c.newFlagSet("dlq list", "[--subject SUBJ] [--type T] [--reason TEXT] [--limit N] [--json]",
		"Lists dead letters, oldest first: DLQ sequence (what show, replay and purge take), age (since\n"+
			"it was dead-lettered), original subject, event type, event id, refund id, deliveries and\n"+
			"reason (shortened; --json has it whole). With --json, one JSON object per line.")
	f := addFilterFlags(fs)
	limit := fs.Int("limit", 0, "at most N dead letters, the oldest (0: all)")
	asJSON := fs.Bool("json", false, "one JSON object per dead letter and line")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError(fs, "unexpected argument %q (list takes flags only; see \"publisher dlq show SEQ\")", pos[0])
	}
	if *limit < 0 {
		return c.usageError(fs, "--limit %d: must not be negative", *limit)
	}
	if err := f.prepare(c); err != nil {
		return c.usageError(fs, "%v", err)
	}
	if err := c.connect(); err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq list: %v\n", err)
		return 1
	}
	defer c.close()
	ds, err := c.openDLQ(ctx)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq list: %v\n", err)
		return 1
	}
	now := time.Now()
	var rows []deadLetter
	limited := false
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	err = c.scan(ctx, ds, f, func(d deadLetter) bool {
		if *limit > 0 && len(rows) == *limit {
			limited = true
			return false
		}
		rows = append(rows, d)
		if *asJSON {
			_ = enc.Encode(d.jsonView(now))
		}
		return true
	})
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq list: %v\n", err)
		return 1
	}
	if *asJSON {
		return 0
	}
	if len(rows) == 0 {
		what := "no dead letters in " + c.topo.DLQStream
		if ds == nil {
			what += " (the stream does not exist yet)"
		} else if f.subject != "" || f.typ != "" || f.reason != "" {
			what = "no dead letters match"
		}
		fmt.Fprintln(c.stdout, what)
		return 0
	}
	c.printTable(rows, now)
	more := ""
	if limited {
		more = fmt.Sprintf(" (--limit %d reached: there are more)", *limit)
	}
	fmt.Fprintf(c.stdout, "%d dead letter%s%s\n", len(rows), plural(len(rows)), more)
	return 0
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (c *cli) printTable(rows []deadLetter, now time.Time) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAGE\tSUBJECT\tTYPE\tID\tREFUND\tDELIVERIES\tREASON")
	for _, d := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.msg.Sequence, formatAge(now.Sub(d.msg.Time)),
			cell(d.subject()), cell(d.typ), cell(d.id), cell(d.refund), cell(d.deliveries), cell(shorten(d.reason, reasonWidth)))
	}
	_ = tw.Flush()
}

// subject is the original subject, or the dead-letter subject when it
// cannot be derived.
func (d deadLetter) subject() string {
	if d.original != "" {
		return d.original
	}
	return d.msg.Subject
}

// cell makes a value fit a table cell: one line, "-" when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// shorten cuts s to n runes, marking the cut with "…".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// formatAge prints a duration the way an operator reads it: 42s, 5m07s,
// 3h02m, 4d06h.
func formatAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// dlqJSON is one line of "dlq list --json".
type dlqJSON struct {
	Seq            uint64    `json:"seq"`
	Stored         time.Time `json:"stored"`
	AgeSeconds     int64     `json:"ageSeconds"`
	DLQSubject     string    `json:"dlqSubject"`
	Subject        string    `json:"subject"`
	Type           string    `json:"type"`
	ID             string    `json:"id"`
	Source         string    `json:"source"`
	RefundID       string    `json:"refundId"`
	Deliveries     *int      `json:"deliveries"`
	InputStreamSeq *uint64   `json:"inputStreamSeq"`
	Reason         string    `json:"reason"`
	WebhookTarget  string    `json:"webhookTarget,omitempty"`
}

func (d deadLetter) jsonView(now time.Time) dlqJSON {
	j := dlqJSON{
		Seq: d.msg.Sequence, Stored: d.msg.Time.UTC(), AgeSeconds: int64(max(now.Sub(d.msg.Time), 0) / time.Second),
		DLQSubject: d.msg.Subject, Subject: d.original, Type: d.typ, ID: d.id, Source: d.source, RefundID: d.refund,
		Reason: d.reason, WebhookTarget: d.webhookTarget,
	}
	if n, err := strconv.Atoi(d.deliveries); err == nil {
		j.Deliveries = &n
	}
	if n, err := strconv.ParseUint(d.inputSeq, 10, 64); err == nil {
		j.InputStreamSeq = &n
	}
	return j
}

func (c *cli) dlqShow(ctx context.Context, args []string) int {
	fs := c.newFlagSet("dlq show", "SEQ",
		"Prints one dead letter: where it came from and goes back to, every header (the original\n"+
			"message's and the Pandabridge-Dlq-* ones) and the payload as stored. A payload that is not\n"+
			"UTF-8 text is printed base64-encoded, and says so.")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageError(fs, "want exactly one SEQ, got %d arguments", len(pos))
	}
	seqs, code, ok := c.parseSeqs(fs, pos)
	if !ok {
		return code
	}
	if err := c.connect(); err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq show: %v\n", err)
		return 1
	}
	defer c.close()
	ds, err := c.openDLQ(ctx)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq show: %v\n", err)
		return 1
	}
	d, err := c.getDeadLetter(ctx, ds, seqs[0])
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq show: %v\n", c.seqError(seqs[0], err))
		return 1
	}
	m := d.msg
	w := c.stdout
	fmt.Fprintf(w, "Dead letter %d of %s\n", m.Sequence, c.topo.DLQStream)
	fmt.Fprintf(w, "Stored:     %s (%s ago)\n", m.Time.UTC().Format(time.RFC3339Nano), formatAge(time.Since(m.Time)))
	fmt.Fprintf(w, "Subject:    %s\n", m.Subject)
	if d.original != "" {
		fmt.Fprintf(w, "Replays to: %s\n", d.original)
	}
	fmt.Fprintln(w, "\nHeaders:")
	keys := make([]string, 0, len(m.Header))
	for k := range m.Header {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	for _, k := range keys {
		for _, v := range m.Header[k] {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	switch {
	case len(m.Data) == 0:
		fmt.Fprintln(w, "\nPayload: empty")
	case utf8.Valid(m.Data):
		fmt.Fprintf(w, "\nPayload (%d bytes):\n%s", len(m.Data), m.Data)
		if m.Data[len(m.Data)-1] != '\n' {
			fmt.Fprintln(w)
		}
	default:
		fmt.Fprintf(w, "\nPayload (%d bytes, not UTF-8 text; base64-encoded below):\n%s\n", len(m.Data), base64.StdEncoding.EncodeToString(m.Data))
	}
	return 0
}

// seqError words a failed lookup of one dead letter.
func (c *cli) seqError(seq uint64, err error) error {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("no dead letter with sequence %d", seq)
	}
	return fmt.Errorf("dead letter %d: %w", seq, err)
}

// selection is what replay and purge act on.
type selection struct {
	seqs []uint64
	all  bool
	f    *dlqFilter
}

// parseSelection reads SEQ... | --all | filters, which exclude one another.
func (c *cli) parseSelection(fs *flag.FlagSet, pos []string, all bool, f *dlqFilter, verb string) (selection, int, bool) {
	filtered := f.set(fs)
	switch {
	case len(pos) == 0 && !all && !filtered:
		return selection{}, c.usageError(fs, "say which dead letters to %s: SEQ..., --all, or --subject/--type/--reason", verb), false
	case len(pos) > 0 && (all || filtered):
		return selection{}, c.usageError(fs, "SEQ arguments cannot be combined with --all or --subject/--type/--reason"), false
	case all && filtered:
		return selection{}, c.usageError(fs, "--all cannot be combined with --subject/--type/--reason (the filters alone select what they match)"), false
	}
	if err := f.prepare(c); err != nil {
		return selection{}, c.usageError(fs, "%v", err), false
	}
	seqs, code, ok := c.parseSeqs(fs, pos)
	if !ok {
		return selection{}, code, false
	}
	return selection{seqs: seqs, all: all, f: f}, 0, true
}

// collect returns the selected dead letters, oldest first, and the errors
// of SEQs that name none.
func (c *cli) collect(ctx context.Context, ds *dlqStream, sel selection) ([]deadLetter, []error, error) {
	var out []deadLetter
	var missing []error
	if len(sel.seqs) > 0 {
		for _, seq := range sel.seqs {
			d, err := c.getDeadLetter(ctx, ds, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				missing = append(missing, c.seqError(seq, err))
				continue
			}
			if err != nil {
				return nil, nil, c.seqError(seq, err)
			}
			out = append(out, d)
		}
		slices.SortFunc(out, func(a, b deadLetter) int { return cmp.Compare(a.msg.Sequence, b.msg.Sequence) })
		return out, missing, nil
	}
	err := c.scan(ctx, ds, sel.f, func(d deadLetter) bool { out = append(out, d); return true })
	return out, missing, err
}

func (c *cli) dlqReplay(ctx context.Context, args []string) int {
	fs := c.newFlagSet("dlq replay", "(SEQ... | --all | --subject SUBJ --type T --reason TEXT) [--dry-run]",
		"Publishes each selected dead letter again to its original subject (pandapon.dlq.return.shipped\n"+
			"goes back to pandapon.return.shipped), oldest first: the original headers and payload byte for\n"+
			"byte, without the Pandabridge-Dlq-* headers. The event id (ce-id) is kept, so the consumer's\n"+
			"answer has the id it would have had. Nats-Msg-Id is replaced by one derived from the dead\n"+
			"letter: the original id would make the input stream drop the replay as a duplicate of the\n"+
			"original publish (within its duplicate window, 1 h by default). Each dead letter is removed\n"+
			"from the DLQ only after JetStream acknowledged its replay; one whose replay failed stays.\n"+
			"A replay that fails again is dead-lettered again. A dead letter stored without its payload\n"+
			"(Pandabridge-Dlq-Payload-Omitted: the input was too large) is not replayed. Exits 1 if any\n"+
			"was not replayed.")
	f := addFilterFlags(fs)
	all := fs.Bool("all", false, "replay every dead letter")
	dryRun := fs.Bool("dry-run", false, "print what would be replayed, publish and delete nothing")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	sel, code, ok := c.parseSelection(fs, pos, *all, f, "replay")
	if !ok {
		return code
	}
	if err := c.connect(); err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq replay: %v\n", err)
		return 1
	}
	defer c.close()
	ds, err := c.openDLQ(ctx)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq replay: %v\n", err)
		return 1
	}
	dls, missing, err := c.collect(ctx, ds, sel)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq replay: %v\n", err)
		return 1
	}
	failed := len(missing)
	for _, err := range missing {
		fmt.Fprintf(c.stderr, "publisher dlq replay: %v\n", err)
	}
	replayed := 0
	for i, d := range dls {
		if ctx.Err() != nil {
			fmt.Fprintf(c.stderr, "publisher dlq replay: interrupted: %d dead letter%s not replayed\n", len(dls)-i, plural(len(dls)-i))
			failed += len(dls) - i
			break
		}
		seq := d.msg.Sequence
		if d.original == "" {
			fmt.Fprintf(c.stderr, "publisher dlq replay: %d: not replayed: %s is not a dead-letter subject of prefix %q\n", seq, d.msg.Subject, c.topo.Subjects.Prefix)
			failed++
			continue
		}
		if why := d.msg.Header.Get(topology.HeaderDLQPayloadOmitted); why != "" {
			fmt.Fprintf(c.stderr, "publisher dlq replay: %d: not replayed: its payload was left out (%s: %s); publish the input again from there if it should be processed\n",
				seq, topology.HeaderDLQPayloadOmitted, why)
			failed++
			continue
		}
		if *dryRun {
			fmt.Fprintf(c.stdout, "would replay %d -> %s (type %s, id %s)\n", seq, d.original, cell(d.typ), cell(d.id))
			replayed++
			continue
		}
		if msg, err := c.replayOne(ctx, ds, d); err != nil {
			fmt.Fprintf(c.stderr, "publisher dlq replay: %d: %v\n", seq, err)
			failed++
		} else {
			fmt.Fprintln(c.stdout, msg)
			replayed++
		}
	}
	switch {
	case *dryRun:
		fmt.Fprintf(c.stdout, "%d would be replayed, %d failed (dry run: nothing published or deleted)\n", replayed, failed)
	case replayed == 0 && failed == 0:
		fmt.Fprintln(c.stdout, "no dead letters to replay")
	default:
		fmt.Fprintf(c.stdout, "%d replayed, %d failed\n", replayed, failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// replayMsg rebuilds the message the consumer once received from a dead
// letter, for its original subject.
//
//   - The Pandabridge-Dlq-* headers go: they describe the dead-lettering.
//   - Nats-Msg-Id is replaced. The dead letter carries the original
//     publish's id, and the input stream remembers ids for its duplicate
//     window (PANDABRIDGE_DUPLICATE_WINDOW, 1 h by default): replaying an
//     input published within the last hour with that id would be acked as
//     a duplicate and silently dropped. The new id is derived from the dead
//     letter itself (DLQ stream, sequence, time stored), so it is unique
//     per dead letter, yet the same for every replay of one dead letter:
//     should a replay be published but the dead letter not deleted (the
//     process died in between), replaying it again within the window is a
//     duplicate, not a second input.
//   - Nats-Expected-* headers go: they were preconditions of the original
//     publish, not of this one.
//   - Every other header, ce-id included, and the payload are kept byte for
//     byte: the consumer derives its answer's id from ce-source and ce-id,
//     so the answer to a replay has the id the original's would have had,
//     and subscribers de-duplicate it.
func (c *cli) replayMsg(d deadLetter) *nats.Msg {
	msg := nats.NewMsg(d.original)
	msg.Data = d.msg.Data
	for k, v := range d.msg.Header {
		if hasPrefixFold(k, dlqPrefix) || strings.EqualFold(k, events.HeaderMsgID) || topology.IsPublishInstruction(k) {
			continue
		}
		msg.Header[k] = slices.Clone(v)
	}
	msg.Header.Set(events.HeaderMsgID, replayMsgID(c.topo.DLQStream, d.msg))
	return msg
}

func replayMsgID(stream string, m *jetstream.RawStreamMsg) string {
	return fmt.Sprintf("pandabridge-dlq-replay:%s:%d:%d", stream, m.Sequence, m.Time.UnixNano())
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// replayOne publishes one dead letter to its original subject and, once
// JetStream acknowledged it, deletes the dead letter.
func (c *cli) replayOne(ctx context.Context, ds *dlqStream, d deadLetter) (string, error) {
	msg := c.replayMsg(d)
	ack, err := c.publish(ctx, msg)
	if err != nil {
		hint := ""
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			hint = "; no stream stores " + d.original
			if strings.HasPrefix(d.original, c.topo.Subjects.Of("webhook.")) {
				hint += fmt.Sprintf(" (%s is created by \"publisher serve\" with webhook targets)", delivery.ReplayStreamName(c.topo.Subjects))
			}
		}
		return "", fmt.Errorf("not replayed, kept in %s: %w%s", c.topo.DLQStream, err, hint)
	}
	note := ""
	if ack.Duplicate {
		// Replayed before, but its deletion did not happen.
		note = ", a duplicate of an earlier replay"
	}
	// The replay is stored: delete the dead letter even if interrupted now.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PublishTimeout)
	defer cancel()
	if err := ds.s.DeleteMsg(dctx, d.msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", fmt.Errorf("replayed to %s (stream %s seq %d%s) but not removed from %s: %w; replaying it again is harmless within the stream's duplicate window",
			d.original, ack.Stream, ack.Sequence, note, c.topo.DLQStream, err)
	}
	return fmt.Sprintf("replayed %d -> %s (stream %s seq %d%s)", d.msg.Sequence, d.original, ack.Stream, ack.Sequence, note), nil
}

func (c *cli) dlqPurge(ctx context.Context, args []string) int {
	fs := c.newFlagSet("dlq purge", "(SEQ... | --all | --subject SUBJ --type T --reason TEXT) [--yes]",
		"Deletes the selected dead letters for good. It first lists them and asks you to type\n"+
			"'purge' (on stdin) to confirm; anything else deletes nothing and exits 1. --yes skips the\n"+
			"question. --all deletes every dead letter stored when the command started, not those\n"+
			"arriving meanwhile. If a SEQ names no dead letter, nothing is deleted.")
	f := addFilterFlags(fs)
	all := fs.Bool("all", false, "delete every dead letter")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	sel, code, ok := c.parseSelection(fs, pos, *all, f, "purge")
	if !ok {
		return code
	}
	if err := c.connect(); err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq purge: %v\n", err)
		return 1
	}
	defer c.close()
	ds, err := c.openDLQ(ctx)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher dlq purge: %v\n", err)
		return 1
	}
	var dls []deadLetter
	count := 0
	if sel.all && *yes {
		// Nothing to show: no need to read them.
		if ds != nil {
			count = int(ds.msgs)
		}
	} else {
		var missing []error
		dls, missing, err = c.collect(ctx, ds, sel)
		if err != nil {
			fmt.Fprintf(c.stderr, "publisher dlq purge: %v\n", err)
			return 1
		}
		if len(missing) > 0 {
			for _, err := range missing {
				fmt.Fprintf(c.stderr, "publisher dlq purge: %v\n", err)
			}
			fmt.Fprintln(c.stderr, "publisher dlq purge: nothing deleted")
			return 1
		}
		count = len(dls)
	}
	if count == 0 {
		fmt.Fprintln(c.stdout, "no dead letters to purge")
		return 0
	}
	if !*yes {
		c.printTable(dls, time.Now())
		fmt.Fprintf(c.stderr, "This deletes %d dead letter%s from %s for good. Type 'purge' to confirm: ", count, plural(count), c.topo.DLQStream)
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		if strings.TrimSpace(line) != "purge" {
			if err != nil && !errors.Is(err, io.EOF) {
				fmt.Fprintf(c.stderr, "\npublisher dlq purge: reading the confirmation: %v\n", err)
			}
			fmt.Fprintln(c.stderr, "\npublisher dlq purge: not confirmed; nothing deleted")
			return 1
		}
	}
	if sel.all {
		// Up to the last sequence seen at start: what arrived since was
		// neither shown nor meant.
		pctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
		defer cancel()
		if err := ds.s.Purge(pctx, jetstream.WithPurgeSequence(ds.last+1)); err != nil {
			fmt.Fprintf(c.stderr, "publisher dlq purge: purging %s: %v\n", c.topo.DLQStream, err)
			return 1
		}
		fmt.Fprintf(c.stdout, "purged %d dead letter%s from %s\n", count, plural(count), c.topo.DLQStream)
		return 0
	}
	deleted, failed := 0, 0
	for _, d := range dls {
		dctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
		err := ds.s.DeleteMsg(dctx, d.msg.Sequence)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			fmt.Fprintf(c.stdout, "%d was already gone\n", d.msg.Sequence)
		case err != nil:
			fmt.Fprintf(c.stderr, "publisher dlq purge: %d: not deleted: %v\n", d.msg.Sequence, err)
			failed++
		default:
			deleted++
		}
	}
	fmt.Fprintf(c.stdout, "deleted %d dead letter%s from %s", deleted, plural(deleted), c.topo.DLQStream)
	if failed > 0 {
		fmt.Fprintf(c.stdout, ", %d failed\n", failed)
		return 1
	}
	fmt.Fprintln(c.stdout)
	return 0
}

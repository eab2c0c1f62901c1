package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
)

// newFlagSet returns a flag set that prints usage to the command's stderr.
func (c *cli) newFlagSet(name, args, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: publisher %s %s\n\n%s\n", name, args, about)
		if hasFlags(fs) {
			fmt.Fprintln(c.stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) (has bool) {
	fs.VisitAll(func(*flag.Flag) { has = true })
	return has
}

// parseFlags parses args; it returns the exit code to use when parsing
// ended the command (-h: 0, bad flags: 2).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

func (c *cli) lookup(ctx context.Context, args []string) int {
	fs := c.newFlagSet("lookup", "--refund-id ID",
		"Publishes refund.lookup.requested: the consumer queries PandaPon and publishes refund.updated\nwith the refund's current state (watch it with \"publisher watch\").")
	refundID := fs.String("refund-id", "", "PandaPon refund id (required), e.g. 110002687818")
	source := fs.String("source", c.cfg.Source, "source attribute of the event")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	if missing := unset(fs, "refund-id"); missing != "" {
		return c.usageError(fs, "%s is required", missing)
	}
	data, _ := json.Marshal(map[string]string{"refundId": *refundID})
	return c.publishNew(ctx, fs, *source, events.TypeRefundLookupRequested, data)
}

func (c *cli) returnShipped(ctx context.Context, args []string) int {
	fs := c.newFlagSet("return-shipped", "--refund-id ID --company CODE --tracking-no NO --buyer-phone PHONE [--desc TEXT]",
		"Publishes return.shipped: the consumer submits the return parcel to PandaPon (once, even if\nthe event is repeated) and publishes refund.updated with the refund's new state.")
	refundID := fs.String("refund-id", "", "PandaPon refund id (required)")
	company := fs.String("company", "", "logistics company code (required), e.g. SF")
	trackingNo := fs.String("tracking-no", "", "tracking number of the return parcel (required)")
	phone := fs.String("buyer-phone", "", "buyer's phone number (required)")
	desc := fs.String("desc", "", "return description (optional)")
	source := fs.String("source", c.cfg.Source, "source attribute of the event")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	if missing := unset(fs, "refund-id", "company", "tracking-no", "buyer-phone"); missing != "" {
		return c.usageError(fs, "%s is required", missing)
	}
	body := map[string]any{
		"refundId": *refundID, "logisticsCompanyCode": *company, "logisticsNo": *trackingNo,
		"buyerPhone": *phone, "returnGoodsDesc": nil,
	}
	descSet := false
	fs.Visit(func(f *flag.Flag) { descSet = descSet || f.Name == "desc" })
	if descSet {
		body["returnGoodsDesc"] = *desc
	}
	data, _ := json.Marshal(body)
	return c.publishNew(ctx, fs, *source, events.TypeReturnShipped, data)
}

// unset returns the first of the required flags names that was not given
// on the command line, as "--name"; "" when all were. (A flag given with an
// empty value is left to the event's validation, which names it too.)
func unset(fs *flag.FlagSet, names ...string) string {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, n := range names {
		if !given[n] {
			return "--" + n
		}
	}
	return ""
}

// flagForField maps a data field to the flag that sets it, for errors.
var flagForField = map[string]string{
	"data.refundId": "--refund-id", "data.logisticsCompanyCode": "--company", "data.logisticsNo": "--tracking-no",
	"data.buyerPhone": "--buyer-phone", "data.returnGoodsDesc": "--desc", "source": "--source",
}

// publishNew builds, validates and publishes a new input event.
func (c *cli) publishNew(ctx context.Context, fs *flag.FlagSet, source, eventType string, data []byte) int {
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetSource(source)
	e.SetType(eventType)
	e.SetTime(time.Now().UTC())
	e.SetDataContentType(events.ContentTypeJSON)
	e.DataEncoded = data
	in, err := events.ParseInput(e)
	if err != nil {
		var ve *events.ValidationError
		if errors.As(err, &ve) && flagForField[ve.Field] != "" {
			return c.usageError(fs, "%s: %v", flagForField[ve.Field], err)
		}
		return c.usageError(fs, "%v", err)
	}
	in.Event.SetSubject(in.RefundID())
	if err := c.connect(); err != nil {
		fmt.Fprintf(c.stderr, "publisher: %v\n", err)
		return 1
	}
	defer c.close()
	msg, err := events.EncodeNATS(c.topo.Subjects.Of(eventType), in.Event)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher: %v\n", err)
		return 1
	}
	ack, err := c.publish(ctx, msg)
	if err != nil {
		fmt.Fprintf(c.stderr, "publisher: %v\n", err)
		return 1
	}
	fmt.Fprintf(c.stdout, "published %s id=%s refundId=%s to %s (stream %s seq %d)\n",
		eventType, e.ID(), in.RefundID(), msg.Subject, ack.Stream, ack.Sequence)
	return 0
}

func (c *cli) usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(c.stderr, "publisher %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fmt.Fprintf(c.stderr, "Run \"publisher %s -h\" for usage.\n", fs.Name())
	return 2
}

// maxLine bounds one NDJSON line of send.
const maxLine = 1 << 20

func (c *cli) send(ctx context.Context, args []string) int {
	fs := c.newFlagSet("send", "[FILE|-]",
		"Publishes CloudEvents read from FILE, or stdin when FILE is - or absent: one structured-mode\n"+
			"CloudEvent JSON object per line (refund.lookup.requested or return.shipped). Every line is\n"+
			"validated; valid ones are published in order, each waiting for its JetStream ack; every\n"+
			"invalid or unpublished line is reported with its number. Blank lines are ignored. Exits 1 if\n"+
			"any line failed. The event id is kept, so sending a file twice is de-duplicated by JetStream\n"+
			"within the stream's duplicate window.")
	dryRun := fs.Bool("dry-run", false, "validate every line, publish nothing")
	files, code, ok := parseArgs(fs, args) // flags before or after FILE
	if !ok {
		return code
	}
	if len(files) > 1 {
		return c.usageError(fs, "one FILE at most, got %d: %q", len(files), files)
	}
	var r io.Reader = c.stdin
	name := "stdin"
	if len(files) == 1 && files[0] != "-" {
		f := files[0]
		file, err := os.Open(f)
		if err != nil {
			fmt.Fprintf(c.stderr, "publisher send: %v\n", err)
			return 1
		}
		defer file.Close()
		r, name = file, f
	}
	if !*dryRun {
		if err := c.connect(); err != nil {
			fmt.Fprintf(c.stderr, "publisher send: %v\n", err)
			return 1
		}
		defer c.close()
	}
	structured := nats.Header{events.HeaderContentType: {events.ContentTypeStructured}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var lineNo, published, duplicates, valid, failed int
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if ctx.Err() != nil {
			fmt.Fprintf(c.stderr, "%s:%d: not published: interrupted\n", name, lineNo)
			failed++
			break
		}
		e, err := events.DecodeNATS(structured, []byte(line))
		var in events.Input
		if err == nil {
			in, err = events.ParseInput(e)
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "%s:%d: invalid: %v\n", name, lineNo, err)
			failed++
			continue
		}
		valid++
		if *dryRun {
			continue
		}
		msg, err := events.EncodeNATS(c.topo.Subjects.Of(e.Type()), in.Event)
		var ack *jetstream.PubAck
		if err == nil {
			ack, err = c.publish(ctx, msg)
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "%s:%d: not published: %v\n", name, lineNo, err)
			failed++
			continue
		}
		published++
		if ack.Duplicate {
			duplicates++
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(c.stderr, "%s:%d: reading stopped: %v (the rest was not published)\n", name, lineNo+1, err)
		failed++
	}
	if *dryRun {
		fmt.Fprintf(c.stdout, "%d valid, %d invalid (dry run: nothing published)\n", valid, failed)
	} else {
		dup := ""
		if duplicates > 0 {
			dup = fmt.Sprintf(" (%d already stored: the stream kept the earlier copy)", duplicates)
		}
		fmt.Fprintf(c.stdout, "%d published%s, %d failed\n", published, dup, failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

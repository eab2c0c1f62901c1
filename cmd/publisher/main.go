// Command publisher gets events into pandabridge and shows what comes out.
//
//	publisher lookup --refund-id ID
//	publisher return-shipped --refund-id ID --company CODE --tracking-no NO --buyer-phone PHONE [--desc TEXT]
//	publisher send [FILE|-]              one structured-mode CloudEvent JSON per line
//	publisher watch [--refund-id ID] [--from-start]
//	publisher serve                      HTTP ingest, PandaPon callbacks, webhooks out
//	publisher dlq list|show|replay|purge  dead-letter tooling
//
// Environment: NATS_URL (default nats://127.0.0.1:4222), NATS_CREDS,
// PANDABRIDGE_SUBJECT_PREFIX (default pandapon), PANDABRIDGE_SOURCE (source
// of the events it publishes, default pandabridge-publisher).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/envconf"
	"github.com/pandabridge/pandabridge/internal/natsconn"
	"github.com/pandabridge/pandabridge/internal/redact"
	"github.com/pandabridge/pandabridge/topology"
)

// Config is the publisher's configuration, read from the environment.
type Config struct {
	NATSURL       string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	NATSCreds     string `envconfig:"NATS_CREDS"`
	SubjectPrefix string `envconfig:"PANDABRIDGE_SUBJECT_PREFIX" default:"pandapon"`
	Source        string `envconfig:"PANDABRIDGE_SOURCE" default:"pandabridge-publisher"`
	// PANDABRIDGE_PUBLISH_TIMEOUT bounds connecting and each publish.
	PublishTimeout time.Duration `envconfig:"PANDABRIDGE_PUBLISH_TIMEOUT" default:"10s"`
}

func (c Config) validate() error {
	var errs []error
	if err := natsconn.CheckURLs(c.NATSURL); err != nil {
		errs = append(errs, fmt.Errorf("NATS_URL %w (want nats://host:4222, comma-separated for a cluster)", err))
	}
	if c.NATSCreds != "" {
		if _, err := os.Stat(c.NATSCreds); err != nil {
			errs = append(errs, fmt.Errorf("NATS_CREDS=%q: %v", c.NATSCreds, errors.Unwrap(err)))
		}
	}
	if err := events.ValidatePrefix(c.SubjectPrefix); err != nil {
		errs = append(errs, fmt.Errorf("PANDABRIDGE_SUBJECT_PREFIX=%q: %v", c.SubjectPrefix, err))
	}
	if strings.TrimSpace(c.Source) == "" {
		errs = append(errs, errors.New("PANDABRIDGE_SOURCE is empty"))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("PANDABRIDGE_PUBLISH_TIMEOUT=%s: must be positive", c.PublishTimeout))
	}
	return errors.Join(errs...)
}

const usage = `Usage: publisher <command> [flags]

Commands:
  lookup          ask for the current state of a refund (refund.lookup.requested)
  return-shipped  report the return parcel of a refund (return.shipped)
  send            publish CloudEvents from a file or stdin, one JSON object per line
  watch           print refund.updated events as they are published, one JSON per line
  serve           HTTP ingest (POST /events), PandaPon callbacks, and refund webhooks out
  dlq             list, show, replay or purge dead letters

Run "publisher <command> -h" for the flags of a command.

Environment:
  NATS_URL                     NATS server URLs (default nats://127.0.0.1:4222)
  NATS_CREDS                   NATS credentials file (optional)
  PANDABRIDGE_SUBJECT_PREFIX   first subject token (default pandapon)
  PANDABRIDGE_SOURCE           source of published events (default pandabridge-publisher)
  PANDABRIDGE_PUBLISH_TIMEOUT  bound on connecting and on each publish (default 10s)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command and returns the exit code: 0 success, 1 failure
// (something was not published or could not be watched), 2 usage or
// configuration error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var cfg Config
	if err := envconf.Process(&cfg); err != nil {
		fmt.Fprintf(stderr, "publisher: configuration: %v\n", err)
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "publisher: configuration: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	cmd, rest := args[0], args[1:]
	c := &cli{cfg: cfg, stdin: stdin, stdout: stdout, stderr: stderr, topo: topology.New(cfg.SubjectPrefix)}
	switch cmd {
	case "lookup":
		return c.lookup(ctx, rest)
	case "return-shipped":
		return c.returnShipped(ctx, rest)
	case "send":
		return c.send(ctx, rest)
	case "watch":
		return c.watch(ctx, rest)
	case "serve":
		return c.serve(ctx, rest)
	case "dlq":
		return c.dlq(ctx, rest)
	}
	fmt.Fprintf(stderr, "publisher: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// cli holds what every command needs.
type cli struct {
	cfg                Config
	topo               topology.Topology
	stdin              io.Reader
	stdout, stderr     io.Writer
	nc                 *nats.Conn
	js                 jetstream.JetStream
	ensuredStreamsOnce bool
}

// connect dials NATS once per command.
func (c *cli) connect() error {
	opts := []nats.Option{nats.Name("pandabridge-publisher"), nats.Timeout(c.cfg.PublishTimeout)}
	if c.cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.cfg.NATSCreds))
	}
	nc, err := nats.Connect(c.cfg.NATSURL, opts...)
	if err != nil {
		return natsConnectError(c.cfg.NATSURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	c.nc, c.js = nc, js
	return nil
}

func (c *cli) close() {
	if c.nc != nil {
		_ = c.nc.Drain()
	}
}

// publish stores msg in JetStream and waits for its ack. When no stream
// holds the subject yet (the consumer never ran), it creates pandabridge's
// streams once and tries again.
func (c *cli) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	ack, err := c.js.PublishMsg(pctx, msg)
	if errors.Is(err, jetstream.ErrNoStreamResponse) && !c.ensuredStreamsOnce {
		c.ensuredStreamsOnce = true
		if eerr := c.topo.EnsureStreams(pctx, c.js); eerr != nil {
			return nil, fmt.Errorf("no stream stores %s and creating one failed: %w", msg.Subject, eerr)
		}
		ack, err = c.js.PublishMsg(pctx, msg)
	}
	if err != nil {
		return nil, fmt.Errorf("publishing to %s: %w", msg.Subject, err)
	}
	return ack, nil
}

// natsConnectError describes a failed connection without the password of
// NATS_URL (a *url.Error from nats.Connect quotes the whole URL).
func natsConnectError(urls string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("connecting to NATS at %s (NATS_URL): %w", redact.URLs(urls), err)
}

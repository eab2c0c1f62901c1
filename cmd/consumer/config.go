package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/gcfloor"
	"github.com/pandabridge/pandabridge/internal/envconf"
	"github.com/pandabridge/pandabridge/internal/natsconn"
	"github.com/pandabridge/pandabridge/internal/redact"
	"github.com/pandabridge/pandabridge/pandapon"
)

// Config is the consumer's whole configuration, read from the environment.
// Every variable is documented in README.md ("Configuration").
type Config struct {
	// NATS_URL: comma-separated server URLs (required unless -dev).
	NATSURL string `envconfig:"NATS_URL"`
	// NATS_CREDS: path to a credentials file.
	NATSCreds string `envconfig:"NATS_CREDS"`

	PandaPonBaseURL          string          `envconfig:"PANDAPON_BASE_URL" default:"https://api.pandapon.com"`
	PandaPonAccessKey        string          `envconfig:"PANDAPON_ACCESS_KEY"`
	PandaPonAccessSecret     pandapon.Secret `envconfig:"PANDAPON_ACCESS_SECRET"`
	PandaPonAccessSecretFile string          `envconfig:"PANDAPON_ACCESS_SECRET_FILE"`
	PandaPonUserID           string          `envconfig:"PANDAPON_USER_ID"`
	PandaPonTimestampUnit    string          `envconfig:"PANDAPON_TIMESTAMP_UNIT" default:"ms"`
	// PANDAPON_RATE_LIMIT: requests per second to PandaPon (every attempt
	// counts); PANDAPON_BURST: token bucket size (0: same as the rate).
	PandaPonRateLimit float64 `envconfig:"PANDAPON_RATE_LIMIT" default:"50"`
	PandaPonBurst     int     `envconfig:"PANDAPON_BURST" default:"0"`
	// PANDAPON_MAX_CONCURRENT: requests in flight to PandaPon (0: same as
	// PANDABRIDGE_CONCURRENCY).
	PandaPonMaxConcurrent int           `envconfig:"PANDAPON_MAX_CONCURRENT" default:"0"`
	PandaPonTimeout       time.Duration `envconfig:"PANDAPON_TIMEOUT" default:"10s"`
	PandaPonMaxRetries    int           `envconfig:"PANDAPON_MAX_RETRIES" default:"3"`
	PandaPonRetryAfterMax time.Duration `envconfig:"PANDAPON_RETRY_AFTER_MAX" default:"10s"`
	// PANDAPON_BREAKER_FAILURES: consecutive transient failures that open
	// the circuit breaker (0 disables it); it stays open for
	// PANDAPON_BREAKER_OPEN_TIMEOUT, then lets
	// PANDAPON_BREAKER_HALF_OPEN_REQUESTS probes through. While it is open
	// no input is pulled; each probe is one input pulled.
	PandaPonBreakerFailures         uint32        `envconfig:"PANDAPON_BREAKER_FAILURES" default:"20"`
	PandaPonBreakerOpenTimeout      time.Duration `envconfig:"PANDAPON_BREAKER_OPEN_TIMEOUT" default:"30s"`
	PandaPonBreakerHalfOpenRequests uint32        `envconfig:"PANDAPON_BREAKER_HALF_OPEN_REQUESTS" default:"1"`

	HTTPAddr      string `envconfig:"PANDABRIDGE_HTTP_ADDR" default:":8080"`
	Source        string `envconfig:"PANDABRIDGE_SOURCE" default:"pandabridge"`
	SubjectPrefix string `envconfig:"PANDABRIDGE_SUBJECT_PREFIX" default:"pandapon"`
	ConsumerName  string `envconfig:"PANDABRIDGE_CONSUMER_NAME" default:"pandabridge"`

	Concurrency     int           `envconfig:"PANDABRIDGE_CONCURRENCY" default:"32"`
	MaxInFlight     int           `envconfig:"PANDABRIDGE_MAX_IN_FLIGHT" default:"0"`
	MaxQueued       int           `envconfig:"PANDABRIDGE_MAX_QUEUED" default:"0"`
	MaxDeliveries   int           `envconfig:"PANDABRIDGE_MAX_DELIVERIES" default:"5"`
	AckWait         time.Duration `envconfig:"PANDABRIDGE_ACK_WAIT" default:"30s"`
	BackoffMin      time.Duration `envconfig:"PANDABRIDGE_BACKOFF_MIN" default:"1s"`
	BackoffMax      time.Duration `envconfig:"PANDABRIDGE_BACKOFF_MAX" default:"5m"`
	HandlerTimeout  time.Duration `envconfig:"PANDABRIDGE_HANDLER_TIMEOUT" default:"1m"`
	RecheckDelay    time.Duration `envconfig:"PANDABRIDGE_RECHECK_DELAY" default:"1m"`
	DrainTimeout    time.Duration `envconfig:"PANDABRIDGE_DRAIN_TIMEOUT" default:"20s"`
	StreamReplicas  int           `envconfig:"PANDABRIDGE_STREAM_REPLICAS" default:"1"`
	StreamMaxAge    time.Duration `envconfig:"PANDABRIDGE_STREAM_MAX_AGE" default:"168h"`
	DuplicateWindow time.Duration `envconfig:"PANDABRIDGE_DUPLICATE_WINDOW" default:"1h"`

	LogLevel  string `envconfig:"PANDABRIDGE_LOG_LEVEL" default:"info"`
	LogFormat string `envconfig:"PANDABRIDGE_LOG_FORMAT" default:"json"`

	// PANDABRIDGE_GC_HEAP_FLOOR: the heap goal GOGC is raised to while
	// Go's own goal is smaller (package gcfloor); 0, the default, leaves
	// Go's collector as it is. Not applied when GOGC is set: an explicit
	// GOGC wins.
	GCHeapFloor gcfloor.Size `envconfig:"PANDABRIDGE_GC_HEAP_FLOOR" default:"0"`
}

// loadConfig reads the environment. Errors name the variable and the value
// (never a secret's value).
func loadConfig() (Config, error) {
	var c Config
	err := envconf.Process(&c)
	return c, err
}

// Validate checks every value and, unless dev, that the required ones are
// set; it reads PANDAPON_ACCESS_SECRET_FILE. The error names the variable
// and says what to fix.
func (c *Config) Validate(dev bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !dev {
		if strings.TrimSpace(c.NATSURL) == "" {
			bad("NATS_URL is required (e.g. nats://nats:4222), or run with -dev")
		} else if err := natsconn.CheckURLs(c.NATSURL); err != nil {
			bad("NATS_URL %v (want nats://host:4222, comma-separated for a cluster)", err)
		}
		if c.PandaPonAccessKey == "" {
			bad("PANDAPON_ACCESS_KEY is required, or run with -dev")
		}
		switch {
		case c.PandaPonAccessSecret != "" && c.PandaPonAccessSecretFile != "":
			bad("set only one of PANDAPON_ACCESS_SECRET and PANDAPON_ACCESS_SECRET_FILE")
		case c.PandaPonAccessSecretFile != "":
			b, err := os.ReadFile(c.PandaPonAccessSecretFile)
			switch {
			case err != nil:
				bad("PANDAPON_ACCESS_SECRET_FILE=%q: %v", c.PandaPonAccessSecretFile, errors.Unwrap(err))
			case strings.TrimSpace(string(b)) == "":
				bad("PANDAPON_ACCESS_SECRET_FILE=%q: file is empty", c.PandaPonAccessSecretFile)
			default:
				c.PandaPonAccessSecret = pandapon.Secret(strings.TrimSpace(string(b)))
			}
		case c.PandaPonAccessSecret == "":
			bad("PANDAPON_ACCESS_SECRET or PANDAPON_ACCESS_SECRET_FILE is required, or run with -dev")
		}
		if u, err := url.Parse(c.PandaPonBaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			strings.ContainsAny(c.PandaPonBaseURL, "?#") {
			bad("PANDAPON_BASE_URL=%q: want https://host[:port][/prefix], without a query or fragment", redact.URLs(c.PandaPonBaseURL))
		}
	}
	if c.NATSCreds != "" {
		if _, err := os.Stat(c.NATSCreds); err != nil {
			bad("NATS_CREDS=%q: %v", c.NATSCreds, errors.Unwrap(err))
		}
	}
	if _, err := pandapon.ParseTimestampUnit(c.PandaPonTimestampUnit); err != nil {
		bad("PANDAPON_TIMESTAMP_UNIT=%q: want ms or s", c.PandaPonTimestampUnit)
	}
	if err := events.ValidatePrefix(c.SubjectPrefix); err != nil {
		bad("PANDABRIDGE_SUBJECT_PREFIX=%q: %v", c.SubjectPrefix, err)
	}
	if strings.TrimSpace(c.Source) == "" {
		bad("PANDABRIDGE_SOURCE is empty: it becomes the source attribute of every output event")
	}
	if c.ConsumerName == "" || strings.ContainsAny(c.ConsumerName, ".*> \t") {
		bad("PANDABRIDGE_CONSUMER_NAME=%q: want a name without '.', '*', '>' or spaces", c.ConsumerName)
	}
	positive := []struct {
		name string
		v    int
	}{
		{"PANDABRIDGE_CONCURRENCY", c.Concurrency},
		{"PANDABRIDGE_MAX_DELIVERIES", c.MaxDeliveries},
		{"PANDABRIDGE_STREAM_REPLICAS", c.StreamReplicas},
	}
	for _, p := range positive {
		if p.v < 1 {
			bad("%s=%d: must be at least 1", p.name, p.v)
		}
	}
	nonNegative := []struct {
		name string
		v    int
	}{
		{"PANDABRIDGE_MAX_IN_FLIGHT", c.MaxInFlight},
		{"PANDABRIDGE_MAX_QUEUED", c.MaxQueued},
		{"PANDAPON_BURST", c.PandaPonBurst},
		{"PANDAPON_MAX_CONCURRENT", c.PandaPonMaxConcurrent},
		{"PANDAPON_MAX_RETRIES", c.PandaPonMaxRetries},
	}
	for _, p := range nonNegative {
		if p.v < 0 {
			bad("%s=%d: must not be negative", p.name, p.v)
		}
	}
	if c.MaxInFlight != 0 && c.MaxInFlight < c.Concurrency {
		bad("PANDABRIDGE_MAX_IN_FLIGHT=%d: must be 0 (2 × concurrency) or at least PANDABRIDGE_CONCURRENCY=%d", c.MaxInFlight, c.Concurrency)
	}
	if c.PandaPonRateLimit <= 0 {
		bad("PANDAPON_RATE_LIMIT=%v: must be a positive number of requests per second", c.PandaPonRateLimit)
	}
	durations := []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"PANDAPON_TIMEOUT", c.PandaPonTimeout, time.Millisecond},
		{"PANDAPON_RETRY_AFTER_MAX", c.PandaPonRetryAfterMax, 0},
		{"PANDABRIDGE_ACK_WAIT", c.AckWait, time.Second},
		{"PANDABRIDGE_BACKOFF_MIN", c.BackoffMin, time.Millisecond},
		{"PANDABRIDGE_BACKOFF_MAX", c.BackoffMax, time.Millisecond},
		{"PANDABRIDGE_HANDLER_TIMEOUT", c.HandlerTimeout, time.Millisecond},
		{"PANDABRIDGE_RECHECK_DELAY", c.RecheckDelay, time.Millisecond},
		{"PANDABRIDGE_DRAIN_TIMEOUT", c.DrainTimeout, 0},
		{"PANDABRIDGE_STREAM_MAX_AGE", c.StreamMaxAge, time.Minute},
		{"PANDABRIDGE_DUPLICATE_WINDOW", c.DuplicateWindow, time.Second},
		{"PANDAPON_BREAKER_OPEN_TIMEOUT", c.PandaPonBreakerOpenTimeout, time.Millisecond},
	}
	for _, d := range durations {
		if d.v < d.min || d.v < 0 {
			bad("%s=%s: must be at least %s", d.name, d.v, d.min)
		}
	}
	if c.BackoffMax < c.BackoffMin {
		bad("PANDABRIDGE_BACKOFF_MAX=%s: must not be below PANDABRIDGE_BACKOFF_MIN=%s", c.BackoffMax, c.BackoffMin)
	}
	if c.DuplicateWindow > c.StreamMaxAge {
		bad("PANDABRIDGE_DUPLICATE_WINDOW=%s: must not exceed PANDABRIDGE_STREAM_MAX_AGE=%s", c.DuplicateWindow, c.StreamMaxAge)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("PANDABRIDGE_LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("PANDABRIDGE_LOG_FORMAT=%q: want json or text", c.LogFormat)
	}
	return errors.Join(errs...)
}

// Print writes the effective configuration as NAME=value lines in the
// order of the struct; secrets print as [REDACTED], and so does the
// password of a URL (nats://user:password@host).
func (c Config) Print(w io.Writer) {
	c.NATSURL = redact.URLs(c.NATSURL)
	c.PandaPonBaseURL = redact.URLs(c.PandaPonBaseURL)
	v := reflect.ValueOf(c)
	t := v.Type()
	for i := range t.NumField() {
		fmt.Fprintf(w, "%s=%v\n", t.Field(i).Tag.Get("envconfig"), v.Field(i).Interface())
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

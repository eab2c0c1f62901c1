package delivery

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pandabridge/pandabridge/webhooks"
)

// Defaults for Target fields left zero.
const (
	DefaultConcurrency = 4
	DefaultTimeout     = 10 * time.Second
	DefaultHorizon     = 24 * time.Hour
	DefaultBackoffMin  = 5 * time.Second
	DefaultBackoffMax  = time.Hour
	// maxNameLen keeps consumer and subject names readable.
	maxNameLen = 48
)

// Deliver policies of a target's consumer when it is first created.
const (
	DeliverNew = "new"
	DeliverAll = "all"
)

// Target is one subscriber URL, as written in the targets file (a JSON
// array of these objects).
type Target struct {
	// Name identifies the target in consumer names, subjects, metrics and
	// logs: letters, digits, '-' and '_' (required, unique).
	Name string `json:"name"`
	// URL receives the POSTs: absolute http or https (required).
	URL string `json:"url"`
	// SecretFile holds the signing secret, "whsec_<base64>" or raw
	// (required).
	SecretFile string `json:"secretFile"`
	// RefundIDs, when non-empty, delivers only events of these refunds.
	RefundIDs []string `json:"refundIds,omitempty"`
	// Statuses, when non-empty, delivers only events whose
	// refundOrderAggregate.refundOrder.refundStatus is one of these.
	Statuses []int64 `json:"statuses,omitempty"`
	// Concurrency is how many POSTs may be in flight to the target
	// (default 4). Events of one refund are always delivered one at a time,
	// in order.
	Concurrency int `json:"concurrency,omitempty"`
	// MaxInFlight caps events held (received, not yet settled), those
	// waiting behind another event of the same refund or for a retry
	// included (default 16 × Concurrency).
	MaxInFlight int `json:"maxInFlight,omitempty"`
	// RateLimit is the most POSTs per second, every attempt counted (0: no
	// limit); Burst the token bucket size (default: the rate, at least 1).
	RateLimit float64 `json:"rateLimit,omitempty"`
	Burst     int     `json:"burst,omitempty"`
	// Timeout bounds one POST (default 10s).
	Timeout Duration `json:"timeout,omitzero"`
	// Horizon is how long an event is retried, counted from when it was
	// stored in the output stream (default 24h); then it is dead-lettered.
	Horizon Duration `json:"horizon,omitzero"`
	// BackoffMin and BackoffMax bound the delay between attempts:
	// BackoffMin × 2^(attempt-1), jittered, capped (defaults 5s and 1h); a
	// Retry-After of the target is honoured up to BackoffMax.
	BackoffMin Duration `json:"backoffMin,omitzero"`
	BackoffMax Duration `json:"backoffMax,omitzero"`
	// DeliverPolicy is where the target's consumer starts when it is first
	// created: "new" (default: events stored from then on) or "all" (every
	// event the output stream still holds). It cannot change afterwards.
	DeliverPolicy string `json:"deliverPolicy,omitempty"`

	// Secret is read from SecretFile by LoadTargets (or set directly).
	Secret webhooks.Secret `json:"-"`
}

// Duration is a time.Duration written as a Go duration string ("10s",
// "24h") in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"10s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"10s\" or \"24h\"", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// IsZero reports a zero duration (for omitzero).
func (d Duration) IsZero() bool { return d.Duration == 0 }

func (t *Target) setDefaults() {
	if t.Concurrency <= 0 {
		t.Concurrency = DefaultConcurrency
	}
	if t.MaxInFlight <= 0 {
		t.MaxInFlight = 16 * t.Concurrency
	}
	if t.Burst <= 0 {
		t.Burst = max(1, int(t.RateLimit))
	}
	if t.Timeout.Duration <= 0 {
		t.Timeout.Duration = DefaultTimeout
	}
	if t.Horizon.Duration <= 0 {
		t.Horizon.Duration = DefaultHorizon
	}
	if t.BackoffMin.Duration <= 0 {
		t.BackoffMin.Duration = DefaultBackoffMin
	}
	if t.BackoffMax.Duration <= 0 {
		t.BackoffMax.Duration = max(DefaultBackoffMax, t.BackoffMin.Duration)
	}
	if t.DeliverPolicy == "" {
		t.DeliverPolicy = DeliverNew
	}
}

// Validate checks every field; errors name the field. It does not read the
// secret file.
func (t *Target) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	switch {
	case t.Name == "":
		bad("name", "is missing")
	case len(t.Name) > maxNameLen:
		bad("name", "%q is longer than %d characters", t.Name, maxNameLen)
	default:
		for _, r := range t.Name {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				bad("name", "%q may hold only letters, digits, '-' and '_' (it names a NATS consumer and subject)", t.Name)
				break
			}
		}
	}
	if t.URL == "" {
		bad("url", "is missing")
	} else if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL may hold credentials: never print it whole.
		bad("url", "is not an absolute http or https URL")
	}
	if t.SecretFile == "" && t.Secret.IsZero() {
		bad("secretFile", "is missing; every target needs a signing secret")
	}
	for i, id := range t.RefundIDs {
		if id == "" || strings.Trim(id, "0123456789") != "" {
			bad(fmt.Sprintf("refundIds[%d]", i), "%q is not a refund id (a string of digits)", id)
		}
	}
	if t.Concurrency < 0 {
		bad("concurrency", "%d must not be negative", t.Concurrency)
	}
	if t.MaxInFlight < 0 {
		bad("maxInFlight", "%d must not be negative", t.MaxInFlight)
	}
	if t.RateLimit < 0 {
		bad("rateLimit", "%g must not be negative", t.RateLimit)
	}
	if t.Burst < 0 {
		bad("burst", "%d must not be negative", t.Burst)
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"timeout", t.Timeout}, {"horizon", t.Horizon}, {"backoffMin", t.BackoffMin}, {"backoffMax", t.BackoffMax}} {
		if d.v.Duration < 0 {
			bad(d.name, "%s must not be negative", d.v)
		}
	}
	if t.BackoffMax.Duration > 0 && t.BackoffMin.Duration > t.BackoffMax.Duration {
		bad("backoffMax", "%s is below backoffMin %s", t.BackoffMax, t.BackoffMin)
	}
	if t.DeliverPolicy != "" && t.DeliverPolicy != DeliverNew && t.DeliverPolicy != DeliverAll {
		bad("deliverPolicy", "%q must be %q or %q", t.DeliverPolicy, DeliverNew, DeliverAll)
	}
	return errors.Join(errs...)
}

// LoadTargets reads the targets file (a JSON array of Target objects;
// unknown fields are refused so that a typo does not silently disable a
// filter), validates every target, reads each secret file, and applies the
// defaults. Errors name the file, the target (by name and position) and the
// field; they never contain a secret.
func LoadTargets(path string) ([]Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading webhook targets file %s: %w", path, errors.Unwrap(err))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var targets []Target
	if err := dec.Decode(&targets); err != nil {
		return nil, fmt.Errorf("webhook targets file %s: must be a JSON array of targets: %w", path, err)
	}
	if err := ValidateTargets(targets); err != nil {
		return nil, fmt.Errorf("webhook targets file %s: %w", path, err)
	}
	for i := range targets {
		t := &targets[i]
		if t.SecretFile != "" {
			s, err := webhooks.ReadSecretFile(t.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("webhook targets file %s: target %q (#%d): secretFile: %w", path, t.Name, i+1, err)
			}
			t.Secret = s
		}
		t.setDefaults()
	}
	return targets, nil
}

// ValidateTargets validates each target and that names are unique.
func ValidateTargets(targets []Target) error {
	var errs []error
	seen := map[string]int{}
	for i := range targets {
		t := &targets[i]
		if err := t.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("target %q (#%d): %s", t.Name, i+1, strings.ReplaceAll(err.Error(), "\n", "; ")))
		}
		if first, dup := seen[t.Name]; dup && t.Name != "" {
			errs = append(errs, fmt.Errorf("target %q (#%d): name: already used by target #%d", t.Name, i+1, first))
		} else {
			seen[t.Name] = i + 1
		}
	}
	return errors.Join(errs...)
}

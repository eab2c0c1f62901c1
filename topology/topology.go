// Package topology declares pandabridge's JetStream streams and its durable
// consumer, and creates them when they are missing.
//
// Three streams, named after the subject prefix in upper case:
//
//	<PREFIX>_INPUT   <prefix>.refund.lookup.requested, <prefix>.return.shipped
//	<PREFIX>_OUTPUT  <prefix>.refund.updated, <prefix>.refund.request.failed
//	<PREFIX>_DLQ     <prefix>.dlq.>
//
// and one key-value bucket, <PREFIX>_SUBMISSIONS (stream KV_<PREFIX>_SUBMISSIONS),
// holding the leases of return parcels being submitted (package
// submitlease); its entries expire after SubmissionsTTL.
//
// All use file storage and limits retention. The output stream's duplicate
// window is what makes outputs idempotent: an output published twice with
// the same Nats-Msg-Id within the window is stored once. The dead-letter
// stream's window is the minimum (100 ms): a dead letter keeps the original
// message's headers byte for byte, Nats-Msg-Id included, and a message that
// fails again after a replay must be dead-lettered again, not deduplicated
// away. Streams that already exist are left exactly as an operator
// configured them.
package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
)

// Defaults for Topology fields left zero.
const (
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultDuplicateWindow = time.Hour
	DefaultReplicas        = 1
	DefaultDurable         = "pandabridge"
	// SubmissionsTTL is how long the submissions bucket keeps a lease.
	SubmissionsTTL = 24 * time.Hour
	// DLQDuplicateWindow is the dead-letter stream's window, the smallest
	// JetStream allows.
	DLQDuplicateWindow = 100 * time.Millisecond
)

// Topology names pandabridge's streams and consumer for one subject prefix.
type Topology struct {
	Subjects events.Subjects
	// InputStream, OutputStream and DLQStream default to
	// <PREFIX>_INPUT, <PREFIX>_OUTPUT and <PREFIX>_DLQ.
	InputStream, OutputStream, DLQStream string
	// SubmissionsBucket is the key-value bucket of submission leases
	// (default <PREFIX>_SUBMISSIONS).
	SubmissionsBucket string
	// Durable is the input consumer's name, shared by every replica
	// (default "pandabridge").
	Durable string
	// Replicas of each stream created (default 1; 3 on a cluster).
	Replicas int
	// MaxAge bounds how long messages are kept (default 7 days).
	MaxAge time.Duration
	// DuplicateWindow is the Nats-Msg-Id deduplication window of the input
	// and output streams (default 1 hour).
	DuplicateWindow time.Duration
}

// New returns the topology of a subject prefix with every default applied.
func New(prefix string) Topology {
	t := Topology{Subjects: events.Subjects{Prefix: prefix}}
	t.setDefaults()
	return t
}

func (t *Topology) setDefaults() {
	p := t.Subjects.Prefix
	if p == "" {
		p = events.DefaultSubjectPrefix
	}
	name := strings.ToUpper(strings.NewReplacer("-", "_").Replace(p))
	if t.InputStream == "" {
		t.InputStream = name + "_INPUT"
	}
	if t.OutputStream == "" {
		t.OutputStream = name + "_OUTPUT"
	}
	if t.DLQStream == "" {
		t.DLQStream = name + "_DLQ"
	}
	if t.SubmissionsBucket == "" {
		t.SubmissionsBucket = name + "_SUBMISSIONS"
	}
	if t.Durable == "" {
		t.Durable = DefaultDurable
	}
	if t.Replicas == 0 {
		t.Replicas = DefaultReplicas
	}
	if t.MaxAge == 0 {
		t.MaxAge = DefaultMaxAge
	}
	if t.DuplicateWindow == 0 {
		t.DuplicateWindow = DefaultDuplicateWindow
	}
}

// StreamConfigs returns the configuration of each stream Ensure creates.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	t.setDefaults()
	mk := func(name, desc string, dedup time.Duration, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			MaxAge:      t.MaxAge,
			Duplicates:  dedup,
			Discard:     jetstream.DiscardOld,
		}
	}
	return []jetstream.StreamConfig{
		mk(t.InputStream, "pandabridge inputs: requests to PandaPon", t.DuplicateWindow, t.Subjects.Inputs()...),
		mk(t.OutputStream, "pandabridge outputs: refund.updated and refund.request.failed", t.DuplicateWindow, t.Subjects.Outputs()...),
		mk(t.DLQStream, "pandabridge dead letters, with Pandabridge-Dlq-* headers", DLQDuplicateWindow, t.Subjects.DeadLetters()),
	}
}

// EnsureStreams creates each stream, and the submissions bucket, that does
// not exist yet and leaves existing ones untouched. It is safe to call from
// many processes at once.
func (t Topology) EnsureStreams(ctx context.Context, js jetstream.JetStream) error {
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.Stream(ctx, cfg.Name); err == nil {
			continue
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("creating stream %s for %v: %w", cfg.Name, cfg.Subjects, err)
		}
	}
	kv := t.SubmissionsConfig()
	if _, err := js.KeyValue(ctx, kv.Bucket); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("looking up key-value bucket %s: %w", kv.Bucket, err)
	}
	if _, err := js.CreateKeyValue(ctx, kv); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return fmt.Errorf("creating key-value bucket %s: %w", kv.Bucket, err)
	}
	return nil
}

// SubmissionsConfig is the configuration of the submissions bucket
// EnsureStreams creates.
func (t Topology) SubmissionsConfig() jetstream.KeyValueConfig {
	t.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      t.SubmissionsBucket,
		Description: "pandabridge: leases of return parcels being submitted to PandaPon",
		History:     1,
		TTL:         SubmissionsTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
	}
}

// ConsumerSettings are the knobs of the durable input consumer.
type ConsumerSettings struct {
	// AckWait is how long the server waits for an ack (or an in-progress
	// signal) before redelivering.
	AckWait time.Duration
	// MaxDeliver bounds deliveries on the server; -1 is no limit, what the
	// pipeline uses: it dead-letters a message at its own limit, and a
	// server-side one would strand a message whose dead letter could not be
	// stored yet.
	MaxDeliver int
	// MaxAckPending caps the messages delivered but not yet acknowledged,
	// across all replicas.
	MaxAckPending int
	// StartSeq, when not 0, is the input stream sequence a consumer that
	// has to be created starts delivering from, instead of the first
	// stored message (used to recreate a lost consumer without replaying
	// what it had acknowledged). It does not change an existing consumer.
	StartSeq uint64
}

// EnsureConsumer creates or updates the durable pull consumer on the input
// stream: explicit acks, both input subjects, delivering from the first
// stored message (or StartSeq) when it is created. Where delivery starts is
// fixed at creation: an update keeps the existing consumer's.
func (t Topology) EnsureConsumer(ctx context.Context, js jetstream.JetStream, s ConsumerSettings) (jetstream.Consumer, error) {
	t.setDefaults()
	cfg := jetstream.ConsumerConfig{
		Durable:        t.Durable,
		Description:    "pandabridge consumer: calls PandaPon for each input event",
		FilterSubjects: t.Subjects.Inputs(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckWait:        s.AckWait,
		MaxDeliver:     s.MaxDeliver,
		MaxAckPending:  s.MaxAckPending,
	}
	if s.StartSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, s.StartSeq
	}
	if existing, err := js.Consumer(ctx, t.InputStream, t.Durable); err == nil {
		// The server refuses to change where delivery starts.
		old := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("looking up consumer %s on stream %s: %w", t.Durable, t.InputStream, err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, t.InputStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s on stream %s: %w", t.Durable, t.InputStream, err)
	}
	return c, nil
}

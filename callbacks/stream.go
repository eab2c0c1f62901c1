package callbacks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
)

// RawSubject is where raw callbacks are stored: "<prefix>.callback.raw".
func RawSubject(s events.Subjects) string { return s.Of("callback.raw") }

// StreamName is the stream of raw callbacks: "<PREFIX>_CALLBACKS" (the
// prefix in upper case, '-' as '_', as topology names its streams).
func StreamName(s events.Subjects) string {
	p := s.Prefix
	if p == "" {
		p = events.DefaultSubjectPrefix
	}
	return strings.ToUpper(strings.ReplaceAll(p, "-", "_")) + "_CALLBACKS"
}

// StreamSettings are the limits of the stream EnsureStream creates.
type StreamSettings struct {
	// Replicas (default 1), MaxAge (default 7 days) and DuplicateWindow
	// (default 1 hour: repeats of a callback within it are stored once).
	Replicas        int
	MaxAge          time.Duration
	DuplicateWindow time.Duration
}

// StreamConfig is the configuration EnsureStream creates the stream with:
// file storage, limits retention, de-duplicated by Nats-Msg-Id.
func StreamConfig(s events.Subjects, set StreamSettings) jetstream.StreamConfig {
	if set.Replicas <= 0 {
		set.Replicas = 1
	}
	if set.MaxAge <= 0 {
		set.MaxAge = 7 * 24 * time.Hour
	}
	if set.DuplicateWindow <= 0 {
		set.DuplicateWindow = time.Hour
	}
	return jetstream.StreamConfig{
		Name:        StreamName(s),
		Description: "pandabridge: PandaPon callbacks as received, for audit",
		Subjects:    []string{RawSubject(s)},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    set.Replicas,
		MaxAge:      set.MaxAge,
		Duplicates:  set.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
	}
}

// EnsureStream creates the callback stream when it does not exist and
// leaves an existing one as configured.
func EnsureStream(ctx context.Context, js jetstream.JetStream, s events.Subjects, set StreamSettings) error {
	cfg := StreamConfig(s, set)
	if _, err := js.Stream(ctx, cfg.Name); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("creating stream %s for %v: %w", cfg.Name, cfg.Subjects, err)
	}
	return nil
}

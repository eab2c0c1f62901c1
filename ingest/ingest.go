// Package ingest accepts CloudEvents over HTTP and publishes them to
// JetStream: the POST /events endpoint of "publisher serve", for producers
// that cannot speak NATS.
//
// # Modes
//
// A request is, in this order of precedence:
//   - binary mode when it has a ce-specversion header: ce-* headers are the
//     attributes, Content-Type the datacontenttype, the body the data;
//   - structured mode when Content-Type is application/cloudevents+json: the
//     body is one event in the CloudEvents JSON format;
//   - batch mode when Content-Type is application/cloudevents-batch+json: the
//     body is a JSON array of such events.
//
// Anything else is answered 415. Header values are taken verbatim, as
// sdk-go's HTTP binding and pandabridge's NATS mapping do (no
// percent-decoding). Every event is decoded and validated exactly as on NATS
// (events.DecodeNATS, events.ParseInput) and stored in binary mode on its
// type's subject with Nats-Msg-Id = its id (events.EncodeNATS), so that a
// retried request never stores an event twice within the input stream's
// duplicate window.
//
// # Answers
//
//   - 202 once every event is stored (JetStream acknowledged it), with the
//     stream sequence of each; an event already stored (same id) counts as
//     stored and is flagged "duplicate".
//   - 400 application/problem+json naming the field ("field", "value",
//     "detail"); for a batch, "errors" lists every invalid event by index and
//     nothing is published: a batch is validated whole before any event of it
//     is published.
//   - 401 without detail when authentication is configured and fails.
//   - 413 when the body is larger than the limit; 415 for another content
//     type.
//   - 503 with Retry-After when NATS is not connected or an event could not
//     be stored. For a batch, "results" says which events were stored; as
//     stored events are de-duplicated by id, retrying the whole batch is
//     always safe and stores each event once: a batch is all-or-nothing
//     from the caller's point of view once it gets its 202.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
)

// Media types of the three modes.
const (
	ContentTypeStructured = events.ContentTypeStructured
	ContentTypeBatch      = "application/cloudevents-batch+json"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxBytes       = 1 << 20
	DefaultPublishTimeout = 10 * time.Second
	// retryAfterSeconds is the Retry-After of a 503.
	retryAfterSeconds = 1
)

// Modes, the "mode" label of the metrics.
const (
	modeBinary     = "binary"
	modeStructured = "structured"
	modeBatch      = "batch"
	modeNone       = "none"
)

// Config configures a Handler.
type Config struct {
	// JetStream stores the events (required).
	JetStream jetstream.JetStream
	// Conn, when set, is checked before publishing: while it is not
	// connected the answer is 503 at once instead of after a timeout.
	Conn *nats.Conn
	// Subjects maps an event type to its subject.
	Subjects events.Subjects
	// MaxBytes bounds the request body (default 1 MiB); larger is 413.
	MaxBytes int64
	// PublishTimeout bounds waiting for JetStream's acks (default 10 s).
	PublishTimeout time.Duration
	// Auth authenticates requests; nil accepts every request.
	Auth    *Auth
	Metrics *Metrics
	Logger  *slog.Logger
}

// Handler serves POST /events. Create it with New.
type Handler struct {
	cfg Config
	log *slog.Logger
	m   *Metrics
}

// New returns the handler. It does no I/O.
func New(cfg Config) *Handler {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Handler{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
}

// statusRecorder remembers the status code for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	mode := h.serve(rec, r)
	h.m.Requests.WithLabelValues(mode, strconv.Itoa(rec.code)).Inc()
	h.m.Duration.WithLabelValues(mode).Observe(time.Since(start).Seconds())
}

// pending is one decoded, validated event ready to publish.
type pending struct {
	index int
	typ   string
	msg   *nats.Msg
	id    string
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) string {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeProblem(w, Problem{Type: ProblemMethodNotAllowed, Title: problemTitleMethodNotAllw, Status: http.StatusMethodNotAllowed,
			Detail: "send events with POST"})
		return modeNone
	}
	auth := h.cfg.Auth
	if auth != nil {
		if ok, _ := auth.bearer(r); !ok && !auth.wantsBody(r) {
			_, reason := auth.check(r, nil)
			h.refuse(w, r, reason)
			return modeNone
		}
	}
	if r.ContentLength > h.cfg.MaxBytes {
		h.tooLarge(w)
		return modeNone
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.tooLarge(w)
			return modeNone
		}
		writeProblem(w, Problem{Type: ProblemInvalidEvent, Title: problemTitleInvalidEvent, Status: http.StatusBadRequest,
			Field: "body", Detail: "reading the request body failed: " + err.Error()})
		return modeNone
	}
	webhookID, reason := auth.check(r, body)
	if reason != "" {
		h.refuse(w, r, reason)
		return modeNone
	}

	mode, ct := detectMode(r.Header)
	var batch []pending
	switch mode {
	case modeBinary:
		p, err := h.prepare(0, nats.Header(r.Header), body)
		if err != nil {
			h.m.Events.WithLabelValues(typeLabel(r.Header.Get("ce-type")), "invalid").Inc()
			writeProblem(w, invalidProblem(err))
			return mode
		}
		batch = []pending{p}
	case modeStructured:
		p, err := h.prepare(0, nats.Header{events.HeaderContentType: {ct}}, body)
		if err != nil {
			h.m.Events.WithLabelValues("unknown", "invalid").Inc()
			writeProblem(w, invalidProblem(err))
			return mode
		}
		batch = []pending{p}
	case modeBatch:
		var prob *Problem
		batch, prob = h.prepareBatch(body)
		if prob != nil {
			writeProblem(w, *prob)
			return mode
		}
	default:
		detail := "Content-Type " + strconv.Quote(ct) + " is not a CloudEvents mode: send binary mode (ce-* headers), " +
			ContentTypeStructured + " or " + ContentTypeBatch
		if ct == "" {
			detail = "no Content-Type and no ce-specversion header: send binary mode (ce-* headers), " +
				ContentTypeStructured + " or " + ContentTypeBatch
		}
		writeProblem(w, Problem{Type: ProblemUnsupportedMedia, Title: problemTitleUnsupported, Status: http.StatusUnsupportedMediaType,
			Field: events.HeaderContentType, Value: strconv.Quote(ct), Detail: detail})
		return modeNone
	}

	if c := h.cfg.Conn; c != nil && !c.IsConnected() {
		for _, p := range batch {
			h.m.Events.WithLabelValues(p.typ, "failed").Inc()
		}
		h.unavailable(w, "not connected to NATS", nil)
		return mode
	}
	results, stored := h.publish(r.Context(), batch)
	if stored < len(batch) {
		var detail string
		for _, res := range results {
			if res.Error != "" {
				detail = res.Error
				break
			}
		}
		if mode == modeBatch {
			h.unavailable(w, fmt.Sprintf("%d of %d events stored; %s", stored, len(batch), detail), results)
		} else {
			h.unavailable(w, detail, nil)
		}
		return mode
	}
	auth.remember(webhookID)
	writeJSON(w, http.StatusAccepted, "application/json", Accepted{Accepted: stored, Results: results})
	return mode
}

// detectMode applies the package's precedence: ce-specversion, then the
// media type.
func detectMode(h http.Header) (mode, contentType string) {
	ct := h.Get(events.HeaderContentType)
	if h.Get(events.HeaderPrefix+"specversion") != "" {
		return modeBinary, ct
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return modeNone, ct
	}
	switch mt {
	case ContentTypeStructured:
		return modeStructured, ct
	case ContentTypeBatch:
		return modeBatch, ct
	}
	return modeNone, ct
}

// prepare decodes, validates and encodes one event as on NATS.
func (h *Handler) prepare(index int, hdr nats.Header, body []byte) (pending, error) {
	e, err := events.DecodeNATS(hdr, body)
	if err != nil {
		return pending{}, err
	}
	return h.prepareEvent(index, e)
}

func (h *Handler) prepareEvent(index int, e event.Event) (pending, error) {
	in, err := events.ParseInput(e)
	if err != nil {
		return pending{}, err
	}
	msg, err := events.EncodeNATS(h.cfg.Subjects.Of(in.Event.Type()), in.Event)
	if err != nil {
		return pending{}, err
	}
	return pending{index: index, typ: in.Event.Type(), msg: msg, id: in.Event.ID()}, nil
}

// prepareBatch validates a whole batch; any invalid event refuses it all.
func (h *Handler) prepareBatch(body []byte) ([]pending, *Problem) {
	bad := func(field, detail string) *Problem {
		return &Problem{Type: ProblemInvalidEvent, Title: problemTitleInvalidBatch, Status: http.StatusBadRequest, Field: field, Detail: detail}
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, bad("body", "a batch must be a JSON array of structured-mode CloudEvents: "+err.Error())
	}
	if len(raws) == 0 {
		return nil, bad("body", "the batch is empty")
	}
	hdr := nats.Header{events.HeaderContentType: {ContentTypeStructured}}
	out := make([]pending, 0, len(raws))
	var errs []EventError
	ids := make(map[string]int, len(raws))
	for i, raw := range raws {
		p, err := h.prepare(i, hdr, raw)
		if err == nil {
			if first, dup := ids[p.id]; dup {
				err = &events.ValidationError{Field: "id", Value: strconv.Quote(p.id),
					Problem: fmt.Sprintf("is also the id of event %d of the batch; ids must be unique", first)}
			} else {
				ids[p.id] = i
			}
		}
		if err != nil {
			h.m.Events.WithLabelValues("unknown", "invalid").Inc()
			errs = append(errs, eventError(i, idOf(raw), err))
			continue
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		first := errs[0]
		return nil, &Problem{Type: ProblemInvalidEvent, Title: problemTitleInvalidBatch, Status: http.StatusBadRequest,
			Field: first.Field, Value: first.Value, Index: &first.Index,
			Detail: fmt.Sprintf("%d of %d events are invalid; the first, at index %d: %s", len(errs), len(raws), first.Index, first.Detail),
			Errors: errs}
	}
	return out, nil
}

// idOf extracts a batch element's id for error reports, if it has one.
func idOf(raw json.RawMessage) string {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(v.ID, &s) != nil {
		return ""
	}
	return s
}

// publish stores every event, concurrently, and waits for every ack (or the
// publish timeout). It returns one result per event and how many are
// stored.
func (h *Handler) publish(ctx context.Context, batch []pending) ([]Result, int) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	results := make([]Result, len(batch))
	if len(batch) == 1 {
		p := batch[0]
		ack, err := h.cfg.JetStream.PublishMsg(ctx, p.msg)
		results[0] = h.result(p, ack, err)
	} else {
		futures := make([]jetstream.PubAckFuture, len(batch))
		errs := make([]error, len(batch))
		for i, p := range batch {
			futures[i], errs[i] = h.cfg.JetStream.PublishMsgAsync(p.msg)
		}
		for i, p := range batch {
			if errs[i] != nil {
				results[i] = h.result(p, nil, errs[i])
				continue
			}
			results[i] = h.awaitAck(ctx, p, futures[i])
		}
	}
	stored := 0
	for _, r := range results {
		if r.Status == http.StatusAccepted {
			stored++
		}
	}
	return results, stored
}

// awaitAck waits for f until ctx ends. An answer already in is taken even
// when ctx has ended meanwhile (while waiting for an earlier event's): a
// select would pick at random, and report a stored event as not stored.
func (h *Handler) awaitAck(ctx context.Context, p pending, f jetstream.PubAckFuture) Result {
	select {
	case ack := <-f.Ok():
		return h.result(p, ack, nil)
	case err := <-f.Err():
		return h.result(p, nil, err)
	default:
	}
	select {
	case ack := <-f.Ok():
		return h.result(p, ack, nil)
	case err := <-f.Err():
		return h.result(p, nil, err)
	case <-ctx.Done():
		return h.result(p, nil, fmt.Errorf("no acknowledgement from JetStream: %w", ctx.Err()))
	}
}

func (h *Handler) result(p pending, ack *jetstream.PubAck, err error) Result {
	r := Result{Index: p.index, ID: p.id, Type: p.typ, Subject: p.msg.Subject}
	if err != nil {
		r.Status = http.StatusServiceUnavailable
		r.Error = "not stored: " + err.Error()
		h.m.Events.WithLabelValues(p.typ, "failed").Inc()
		h.log.Warn("ingest: event not stored", "event_id", p.id, "event_type", p.typ, "error", err)
		return r
	}
	r.Status, r.Stream, r.Sequence, r.Duplicate = http.StatusAccepted, ack.Stream, ack.Sequence, ack.Duplicate
	outcome := "accepted"
	if ack.Duplicate {
		outcome = "duplicate"
	}
	h.m.Events.WithLabelValues(p.typ, outcome).Inc()
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		h.log.Debug("ingest: event stored", "event_id", p.id, "event_type", p.typ, "stream_seq", ack.Sequence, "duplicate", ack.Duplicate)
	}
	return r
}

func (h *Handler) unavailable(w http.ResponseWriter, detail string, results []Result) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	p := Problem{Type: ProblemUnavailable, Title: problemTitleUnavailable, Status: http.StatusServiceUnavailable, Detail: detail, Results: results}
	if results != nil {
		p.Type, p.Title = ProblemBatchPartlyStored, problemTitlePartlyStored
	}
	writeProblem(w, p)
}

func (h *Handler) tooLarge(w http.ResponseWriter) {
	writeProblem(w, Problem{Type: ProblemTooLarge, Title: problemTitleTooLarge, Status: http.StatusRequestEntityTooLarge,
		Field: "body", Detail: fmt.Sprintf("the body must be at most %d bytes", h.cfg.MaxBytes)})
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, reason string) {
	h.m.AuthFailures.WithLabelValues(reason).Inc()
	h.log.Info("ingest: request refused", "reason", reason, "remote_addr", r.RemoteAddr)
	writeUnauthorized(w)
}

// typeLabel keeps metric labels to a fixed set.
func typeLabel(t string) string {
	switch strings.TrimSpace(t) {
	case events.TypeRefundLookupRequested, events.TypeReturnShipped:
		return t
	}
	return "unknown"
}

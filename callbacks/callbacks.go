// Package callbacks receives PandaPon's message-service callbacks: the
// POST /pandapon/callback/{token} endpoint of "publisher serve".
//
// PandaPon pushes each message as an HTTPS POST of JSON {messageType,
// messageBody, messagePlatform, timestamp} to one URL registered in its
// console, wants HTTP 200 within 1000 ms, re-pushes about every 30 minutes
// (at most 5 times) otherwise, sends messages out of order and repeats them,
// and documents no signature. So:
//
//   - The URL itself is the shared secret: the {token} path segment is
//     compared in constant time with the configured token; a wrong token is
//     answered 404, as if there were nothing there.
//   - A callback is a hint, never trusted data. Every non-empty callback is
//     stored as is (body byte for byte) on <prefix>.callback.raw in its own
//     stream, <PREFIX>_CALLBACKS, for audit; each refund it names becomes a
//     refund.lookup.requested input, so the refund's state is always fetched
//     again with the signed query. The answer is 200 only once both are
//     stored by JetStream; 503 otherwise (PandaPon pushes again later).
//   - Repeats are harmless and cheap: the raw message's Nats-Msg-Id is a
//     hash of the body, and the lookup's event id is a UUIDv5 of the refund
//     id and the body hash, so a repeated callback is stored once in each
//     stream within its duplicate window, whatever the number of repeats.
//     Out-of-order callbacks are harmless because the lookup reads the
//     current state.
//   - Unknown message types are stored and counted
//     (pandabridge_callbacks_received_total{message_type="other"}), and
//     answered 200.
//   - PandaPon's URL verification (a test request when the URL is
//     registered) gets 200: an empty POST, or a GET or HEAD, is answered 200
//     without storing anything; a non-empty one is stored like any callback.
//
// # Finding the refund
//
// PandaPon does not document messageBody. The refund ids are inferred: when
// messageBody is a JSON string holding JSON, that JSON is read; in the
// resulting object (or the body itself when it is an object), keys named
// refundId, refund_id, reverseOrderId or reverse_order_id (any letter case)
// are looked for at any depth up to 4 levels, through objects and arrays;
// their values count when they are a string of digits or a non-negative
// integer. A message is refund-related when its messageType is 9 or a
// refund id is found; every distinct refund id found (at most 16) gets its
// lookup. A messageType 9 without a refund id is stored and counted with
// outcome "no_refund_id".
package callbacks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
)

// Headers added to a stored raw callback.
const (
	// HeaderReceivedAt is when the callback was received (RFC 3339, UTC).
	HeaderReceivedAt = "Pandabridge-Callback-Received-At"
	// HeaderMessageType is messageType as read ("9", or "" when absent or
	// not an integer).
	HeaderMessageType = "Pandabridge-Callback-Message-Type"
	// HeaderRefundIDs lists the refund ids found, comma-separated.
	HeaderRefundIDs = "Pandabridge-Callback-Refund-Ids"
	// HeaderBodySHA256 is the hex SHA-256 of the body.
	HeaderBodySHA256 = "Pandabridge-Callback-Body-Sha256"
)

// MessageTypeRefund is the messageType of refund / reverse-order messages.
const MessageTypeRefund = 9

// Defaults for Config fields left zero.
const (
	// DefaultTimeout bounds storing a callback, well below PandaPon's
	// 1000 ms: after it the answer is 503 and PandaPon pushes again.
	DefaultTimeout  = 800 * time.Millisecond
	DefaultMaxBytes = 1 << 20
	DefaultSource   = "pandabridge-callbacks"
	// maxRefunds bounds the lookups one callback can cause.
	maxRefunds = 16
	// maxDepth bounds the search for refund ids.
	maxDepth = 4
	// minTokenLen is the shortest token accepted, so that the URL is a
	// secret worth the name.
	minTokenLen = 16
)

// lookupNamespace is the UUIDv5 namespace of lookup ids derived from
// callbacks (fixed forever: changing it would break de-duplication across
// an upgrade).
var lookupNamespace = uuid.MustParse("5d0f9a64-31a7-4c41-9f0c-3f6b7c1f2a90")

// Config configures a Handler.
type Config struct {
	// JetStream stores raw callbacks and lookups (required).
	JetStream jetstream.JetStream
	// Conn, when set, is checked first: while not connected the answer is
	// 503 at once.
	Conn     *nats.Conn
	Subjects events.Subjects
	// Token is the secret path segment (at least 16 characters).
	Token string
	// Source is the source of the lookups it publishes (default
	// "pandabridge-callbacks").
	Source string
	// Timeout bounds storing one callback (default 800 ms).
	Timeout time.Duration
	// MaxBytes bounds the body (default 1 MiB); larger is 413.
	MaxBytes int64
	Metrics  *Metrics
	Logger   *slog.Logger
}

// ValidateToken checks that a token can be used in the callback URL: at
// least 16 characters, only unreserved URL characters (letters, digits,
// '-', '.', '_', '~'). The error never contains the token.
func ValidateToken(token string) error {
	if len(token) < minTokenLen {
		return fmt.Errorf("the callback token has %d characters; use at least %d (for example: openssl rand -hex 24)", len(token), minTokenLen)
	}
	for _, r := range token {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~", r)) {
			return errors.New("the callback token may hold only letters, digits, '-', '.', '_' and '~' (it is a URL path segment)")
		}
	}
	return nil
}

// Handler serves /pandapon/callback/{token}. Register it on a pattern with a
// {token} wildcard: mux.Handle("/pandapon/callback/{token}", h).
type Handler struct {
	cfg   Config
	token [sha256.Size]byte
	log   *slog.Logger
	m     *Metrics
}

// New returns the handler; it does no I/O. An empty Token makes every
// request a 404.
func New(cfg Config) *Handler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Source == "" {
		cfg.Source = DefaultSource
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Handler{cfg: cfg, token: sha256.Sum256([]byte(cfg.Token)), log: cfg.Logger, m: cfg.Metrics}
}

// Outcomes, the "outcome" label of pandabridge_callbacks_received_total.
const (
	outcomeLookup       = "lookup_requested"
	outcomeStored       = "stored"
	outcomeNoRefundID   = "no_refund_id"
	outcomeDuplicate    = "duplicate"
	outcomeVerification = "verification"
	outcomeFailed       = "failed"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	got := sha256.Sum256([]byte(r.PathValue("token")))
	if h.cfg.Token == "" || subtle.ConstantTimeCompare(got[:], h.token[:]) != 1 {
		h.m.Rejected.WithLabelValues("wrong_token").Inc()
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.m.Received.WithLabelValues("none", outcomeVerification).Inc()
		ok(w)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	defer func() { h.m.Duration.Observe(time.Since(start).Seconds()) }()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.m.Rejected.WithLabelValues("too_large").Inc()
			http.Error(w, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading body failed", http.StatusBadRequest)
		return
	}
	if len(bytes.TrimSpace(body)) == 0 {
		h.m.Received.WithLabelValues("none", outcomeVerification).Inc()
		ok(w)
		return
	}
	cb := Parse(body)
	label := cb.typeLabel()
	if c := h.cfg.Conn; c != nil && !c.IsConnected() {
		h.m.Received.WithLabelValues(label, outcomeFailed).Inc()
		unavailable(w)
		return
	}
	outcome, err := h.store(r.Context(), r.Header.Get("Content-Type"), body, cb)
	if err != nil {
		h.m.Received.WithLabelValues(label, outcomeFailed).Inc()
		h.log.Warn("pandapon callback not stored; answering 503 so that PandaPon pushes it again",
			"message_type", cb.MessageTypeText, "refund_ids", strings.Join(cb.RefundIDs, ","), "error", err)
		unavailable(w)
		return
	}
	h.m.Received.WithLabelValues(label, outcome).Inc()
	h.log.Info("pandapon callback", "message_type", cb.MessageTypeText, "refund_ids", strings.Join(cb.RefundIDs, ","),
		"outcome", outcome, "duration", time.Since(start))
	ok(w)
}

func ok(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"success":true}`+"\n")
}

func unavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "not stored; push again later", http.StatusServiceUnavailable)
}

// store publishes the raw callback and one lookup per refund id, at once,
// and waits for every ack. It returns the outcome label.
func (h *Handler) store(ctx context.Context, contentType string, body []byte, cb Callback) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])

	raw := nats.NewMsg(RawSubject(h.cfg.Subjects))
	raw.Data = body
	raw.Header.Set(events.HeaderMsgID, "pandapon-callback-"+hash)
	if contentType != "" {
		raw.Header.Set("Content-Type", contentType)
	}
	raw.Header.Set(HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	raw.Header.Set(HeaderBodySHA256, hash)
	if cb.MessageTypeText != "" {
		raw.Header.Set(HeaderMessageType, cb.MessageTypeText)
	}
	if len(cb.RefundIDs) > 0 {
		raw.Header.Set(HeaderRefundIDs, strings.Join(cb.RefundIDs, ","))
	}
	msgs := []*nats.Msg{raw}
	for _, id := range cb.RefundIDs {
		m, err := events.EncodeNATS(h.cfg.Subjects.Of(events.TypeRefundLookupRequested), h.lookup(id, hash))
		if err != nil { // unreachable: ids are digits, source checked at start
			return "", err
		}
		msgs = append(msgs, m)
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		f, err := h.cfg.JetStream.PublishMsgAsync(m)
		if err != nil {
			return "", fmt.Errorf("publishing to %s: %w", m.Subject, err)
		}
		futures[i] = f
	}
	var acks []*jetstream.PubAck
	for i, f := range futures {
		select {
		case a := <-f.Ok():
			acks = append(acks, a)
		case err := <-f.Err():
			return "", fmt.Errorf("publishing to %s: %w", msgs[i].Subject, err)
		case <-ctx.Done():
			return "", fmt.Errorf("publishing to %s: no acknowledgement within %s", msgs[i].Subject, h.cfg.Timeout)
		}
	}
	newLookups := 0
	for _, a := range acks[1:] {
		if a.Duplicate {
			h.m.Lookups.WithLabelValues("duplicate").Inc()
		} else {
			h.m.Lookups.WithLabelValues("new").Inc()
			newLookups++
		}
	}
	switch {
	case acks[0].Duplicate && newLookups == 0:
		return outcomeDuplicate, nil
	case len(cb.RefundIDs) > 0:
		return outcomeLookup, nil
	case cb.MessageType == MessageTypeRefund:
		return outcomeNoRefundID, nil
	}
	return outcomeStored, nil
}

// lookup builds the refund.lookup.requested of a callback: its id depends
// only on the refund id and the callback body, so repeats collapse.
func (h *Handler) lookup(refundID, bodyHash string) event.Event {
	e := event.New()
	e.SetID(LookupID(refundID, bodyHash))
	e.SetSource(h.cfg.Source)
	e.SetType(events.TypeRefundLookupRequested)
	e.SetSubject(refundID)
	e.SetTime(time.Now().UTC())
	e.SetDataContentType(events.ContentTypeJSON)
	e.DataEncoded, _ = json.Marshal(events.RefundLookupRequested{RefundID: events.RefundID(refundID)})
	return e
}

// LookupID is the event id of the lookup a callback causes for a refund: a
// UUIDv5 of the refund id and the hex SHA-256 of the callback body.
func LookupID(refundID, bodyHash string) string {
	return uuid.NewSHA1(lookupNamespace, []byte("pandapon-callback\x00"+refundID+"\x00"+bodyHash)).String()
}

// Callback is what could be read from a callback body.
type Callback struct {
	// Valid is true when the body is a JSON object.
	Valid bool
	// MessageType is messageType when it is an integer (or a string of
	// one), else -1; MessageTypeText is its text ("" when not an integer).
	MessageType     int64
	MessageTypeText string
	// RefundIDs are the distinct refund ids found, in the order found.
	RefundIDs []string
}

// Parse reads a callback body; it never fails (an unreadable body yields a
// Callback that is not Valid).
func Parse(body []byte) Callback {
	cb := Callback{MessageType: -1}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return cb
	}
	cb.Valid = true
	if raw, ok := obj["messageType"]; ok {
		s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			cb.MessageType, cb.MessageTypeText = n, strconv.FormatInt(n, 10)
		}
	}
	if raw, ok := obj["messageBody"]; ok {
		var v any
		if s, isString := jsonString(raw); isString {
			dec := json.NewDecoder(strings.NewReader(s))
			dec.UseNumber()
			if dec.Decode(&v) != nil {
				v = nil
			}
		} else {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if dec.Decode(&v) != nil {
				v = nil
			}
		}
		seen := map[string]bool{}
		findRefundIDs(v, 0, func(id string) bool {
			if !seen[id] {
				seen[id] = true
				cb.RefundIDs = append(cb.RefundIDs, id)
			}
			return len(cb.RefundIDs) < maxRefunds
		})
	}
	return cb
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

var refundKeys = []string{"refundId", "refund_id", "reverseOrderId", "reverse_order_id"}

func isRefundKey(k string) bool {
	for _, rk := range refundKeys {
		if strings.EqualFold(k, rk) {
			return true
		}
	}
	return false
}

// findRefundIDs walks v breadth-first per level, calling found for each
// refund id until it returns false.
func findRefundIDs(v any, depth int, found func(string) bool) bool {
	if depth >= maxDepth {
		return true
	}
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if !isRefundKey(k) {
				continue
			}
			if id, ok := refundIDValue(val); ok && !found(id) {
				return false
			}
		}
		for k, val := range t {
			if isRefundKey(k) {
				continue
			}
			if !findRefundIDs(val, depth+1, found) {
				return false
			}
		}
	case []any:
		for _, val := range t {
			if !findRefundIDs(val, depth+1, found) {
				return false
			}
		}
	}
	return true
}

func refundIDValue(v any) (string, bool) {
	var s string
	switch t := v.(type) {
	case string:
		s = strings.TrimSpace(t)
	case json.Number:
		s = t.String()
	default:
		return "", false
	}
	if s == "" || len(s) > 64 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	return s, true
}

// typeLabel keeps the message_type label bounded: the documented types,
// "other", or "unparseable" for a body that is not a JSON object.
func (cb Callback) typeLabel() string {
	if !cb.Valid {
		return "unparseable"
	}
	switch cb.MessageType {
	case 3, 8, 9:
		return cb.MessageTypeText
	}
	return "other"
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/topology"
)

// envVars are every variable the publisher reads; each test starts with all
// of them unset, so nothing of the developer's environment leaks in.
var envVars = []string{
	"NATS_URL", "NATS_CREDS", "PANDABRIDGE_SUBJECT_PREFIX", "PANDABRIDGE_SOURCE", "PANDABRIDGE_PUBLISH_TIMEOUT",
}

// cleanEnv unsets every variable of envVars for the duration of t.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, k := range envVars {
		t.Setenv(k, "") // registers the restore of the original value
		os.Unsetenv(k)
	}
}

// setup starts an embedded NATS server, points NATS_URL at it and returns
// a JetStream context on it. No stream exists yet.
func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	cleanEnv(t)
	s := testkit.NATS(t)
	t.Setenv("NATS_URL", s.URL)
	_, js := testkit.Connect(t, s.URL)
	return js
}

// closedPortURL returns a NATS URL on 127.0.0.1 where nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

// result is what one run of the CLI produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCLI runs the publisher in-process with stdin and args, bounded by 30 s.
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("publisher %v did not finish in time\n%s", args, result{code, out.String(), errOut.String()})
	}
	return result{code, out.String(), errOut.String()}
}

// streamMsgs returns every message stored in stream, in order; a stream
// that does not exist fails the test.
func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s seq %d: %v", stream, seq, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// streamExists reports whether stream exists.
func streamExists(t *testing.T, js jetstream.JetStream, stream string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// decodeInput decodes a stored message as a valid input event.
func decodeInput(t *testing.T, m *jetstream.RawStreamMsg) events.Input {
	t.Helper()
	e, err := events.DecodeNATS(m.Header, m.Data)
	if err != nil {
		t.Fatalf("message seq %d on %s is not a CloudEvent: %v", m.Sequence, m.Subject, err)
	}
	in, err := events.ParseInput(e)
	if err != nil {
		t.Fatalf("message seq %d on %s is not a valid input: %v", m.Sequence, m.Subject, err)
	}
	return in
}

var publishedID = regexp.MustCompile(`\bid=(\S+)`)

// idFromStdout returns the event id named by "published ... id=ID ...".
func idFromStdout(t *testing.T, r result) string {
	t.Helper()
	m := publishedID.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("stdout does not name the event id\n%s", r)
	}
	return m[1]
}

// wantHeader checks that header name of m is exactly want.
func wantHeader(t *testing.T, m *jetstream.RawStreamMsg, name, want string) {
	t.Helper()
	if got := m.Header.Values(name); len(got) != 1 || got[0] != want {
		t.Errorf("header %s = %q, want [%q]", name, got, want)
	}
}

// dataObject decodes JSON object data, keeping every value raw.
func dataObject(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatalf("data %s is not a JSON object: %v", data, err)
	}
	return obj
}

func TestLookupPublishesBinaryModeEventAndCreatesStreams(t *testing.T) {
	js := setup(t)
	r := runCLI(t, "", "lookup", "--refund-id", "110002687818")
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	id := idFromStdout(t, r)
	for _, want := range []string{"refund.lookup.requested", "110002687818", "pandapon.refund.lookup.requested", "PANDAPON_INPUT"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout does not mention %q\n%s", want, r)
		}
	}
	// The consumer never ran: the publisher created every stream.
	for _, s := range []string{"PANDAPON_INPUT", "PANDAPON_OUTPUT", "PANDAPON_DLQ"} {
		if !streamExists(t, js, s) {
			t.Errorf("stream %s was not created", s)
		}
	}
	msgs := streamMsgs(t, js, "PANDAPON_INPUT")
	if len(msgs) != 1 {
		t.Fatalf("PANDAPON_INPUT holds %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "pandapon.refund.lookup.requested" {
		t.Errorf("subject %q", m.Subject)
	}
	wantHeader(t, m, "ce-specversion", "1.0")
	wantHeader(t, m, "ce-id", id)
	wantHeader(t, m, "ce-source", "pandabridge-publisher")
	wantHeader(t, m, "ce-type", "refund.lookup.requested")
	wantHeader(t, m, "ce-subject", "110002687818")
	wantHeader(t, m, "Content-Type", "application/json")
	wantHeader(t, m, "Nats-Msg-Id", id)
	if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("ce-time")); err != nil {
		t.Errorf("ce-time %q: %v", m.Header.Get("ce-time"), err)
	}
	in := decodeInput(t, m)
	if in.Lookup == nil || in.RefundID() != "110002687818" {
		t.Errorf("decoded input %+v, want a lookup of refund 110002687818", in)
	}
	if in.Event.ID() != id {
		t.Errorf("event id %q, stdout said %q", in.Event.ID(), id)
	}
	if got := dataObject(t, m.Data)["refundId"]; string(got) != `"110002687818"` {
		t.Errorf("data.refundId = %s, want \"110002687818\"", got)
	}

	// A second lookup is a new event: new id, stored as a second message.
	r2 := runCLI(t, "", "lookup", "--refund-id", "110002687818")
	if r2.code != 0 {
		t.Fatalf("second lookup: want exit 0\n%s", r2)
	}
	if id2 := idFromStdout(t, r2); id2 == id {
		t.Errorf("two lookups share the id %s", id)
	}
	if n := len(streamMsgs(t, js, "PANDAPON_INPUT")); n != 2 {
		t.Errorf("PANDAPON_INPUT holds %d messages after two lookups, want 2", n)
	}
}

func TestLookupSource(t *testing.T) {
	js := setup(t)
	t.Setenv("PANDABRIDGE_SOURCE", "erp://warehouse-7")
	if r := runCLI(t, "", "lookup", "--refund-id", "1"); r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	if r := runCLI(t, "", "lookup", "--refund-id", "2", "--source", "ops/cli"); r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	msgs := streamMsgs(t, js, "PANDAPON_INPUT")
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	wantHeader(t, msgs[0], "ce-source", "erp://warehouse-7")
	wantHeader(t, msgs[1], "ce-source", "ops/cli")

	// An empty --source is a usage error naming the flag.
	r := runCLI(t, "", "lookup", "--refund-id", "3", "--source", "")
	if r.code != 2 || !strings.Contains(r.stderr, "--source") {
		t.Errorf("empty --source: want exit 2 naming --source\n%s", r)
	}
	if n := len(streamMsgs(t, js, "PANDAPON_INPUT")); n != 2 {
		t.Errorf("%d messages after a refused lookup, want 2", n)
	}
}

func TestSubjectPrefix(t *testing.T) {
	js := setup(t)
	t.Setenv("PANDABRIDGE_SUBJECT_PREFIX", "acme-eu")
	r := runCLI(t, "", "lookup", "--refund-id", "42")
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	if streamExists(t, js, "PANDAPON_INPUT") {
		t.Error("PANDAPON_INPUT created although the prefix is acme-eu")
	}
	msgs := streamMsgs(t, js, "ACME_EU_INPUT")
	if len(msgs) != 1 || msgs[0].Subject != "acme-eu.refund.lookup.requested" {
		t.Fatalf("ACME_EU_INPUT holds %d messages (%v), want 1 on acme-eu.refund.lookup.requested", len(msgs), msgs)
	}
}

func TestExistingStreamsAreLeftAlone(t *testing.T) {
	js := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "PANDAPON_INPUT", Description: "configured by the operator",
		Subjects: events.Subjects{}.Inputs(), Storage: jetstream.MemoryStorage, Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, "", "lookup", "--refund-id", "7"); r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	s, err := js.Stream(ctx, "PANDAPON_INPUT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Description != "configured by the operator" || info.Config.Storage != jetstream.MemoryStorage || info.State.Msgs != 1 {
		t.Errorf("operator's stream changed or not used: %+v, %d messages", info.Config, info.State.Msgs)
	}
}

func TestReturnShipped(t *testing.T) {
	js := setup(t)
	base := []string{"return-shipped", "--refund-id", "110002687818", "--company", "SF",
		"--tracking-no", "SF1234567890", "--buyer-phone", "15068763422"}

	r := runCLI(t, "", base...)
	if r.code != 0 {
		t.Fatalf("without --desc: want exit 0\n%s", r)
	}
	id1 := idFromStdout(t, r)
	r = runCLI(t, "", append(base, "--desc", "箱子完好 \"original\" box")...)
	if r.code != 0 {
		t.Fatalf("with --desc: want exit 0\n%s", r)
	}
	id2 := idFromStdout(t, r)
	r = runCLI(t, "", append(base, "--desc", "")...)
	if r.code != 0 {
		t.Fatalf("with --desc \"\": want exit 0\n%s", r)
	}

	msgs := streamMsgs(t, js, "PANDAPON_INPUT")
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	for i, wantDesc := range []string{`null`, `"箱子完好 \"original\" box"`, `""`} {
		m := msgs[i]
		if m.Subject != "pandapon.return.shipped" {
			t.Errorf("message %d on %q", i, m.Subject)
		}
		wantHeader(t, m, "ce-type", "return.shipped")
		wantHeader(t, m, "ce-specversion", "1.0")
		wantHeader(t, m, "ce-source", "pandabridge-publisher")
		wantHeader(t, m, "Nats-Msg-Id", m.Header.Get("ce-id"))
		in := decodeInput(t, m)
		rs := in.ReturnShipped
		if rs == nil {
			t.Fatalf("message %d is not a return.shipped", i)
		}
		if rs.RefundID != "110002687818" || rs.LogisticsCompanyCode != "SF" || rs.LogisticsNo != "SF1234567890" || rs.BuyerPhone != "15068763422" {
			t.Errorf("message %d data %+v", i, rs)
		}
		obj := dataObject(t, m.Data)
		got, ok := obj["returnGoodsDesc"]
		if !ok {
			t.Errorf("message %d: data has no returnGoodsDesc: %s", i, m.Data)
		} else if string(got) != wantDesc {
			t.Errorf("message %d: returnGoodsDesc = %s, want %s", i, got, wantDesc)
		}
	}
	if msgs[0].Header.Get("ce-id") != id1 || msgs[1].Header.Get("ce-id") != id2 {
		t.Errorf("stored ids %s, %s; stdout said %s, %s", msgs[0].Header.Get("ce-id"), msgs[1].Header.Get("ce-id"), id1, id2)
	}
	if rs := decodeInput(t, msgs[1]).ReturnShipped; rs.ReturnGoodsDesc == nil || *rs.ReturnGoodsDesc != `箱子完好 "original" box` {
		t.Errorf("decoded description %v", rs.ReturnGoodsDesc)
	}
}

func TestUsageErrors(t *testing.T) {
	js := setup(t)
	rs := func(except string, kv ...string) []string {
		flags := map[string]string{"--refund-id": "110002687818", "--company": "SF", "--tracking-no": "SF1", "--buyer-phone": "150"}
		for i := 0; i+1 < len(kv); i += 2 {
			flags[kv[i]] = kv[i+1]
		}
		args := []string{"return-shipped"}
		for _, f := range []string{"--refund-id", "--company", "--tracking-no", "--buyer-phone"} {
			if f != except {
				args = append(args, f, flags[f])
			}
		}
		return args
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"lookup without refund id", []string{"lookup"}, []string{"--refund-id is required"}},
		{"lookup refund id abc", []string{"lookup", "--refund-id", "abc"}, []string{"--refund-id", `"abc"`}},
		{"lookup refund id negative", []string{"lookup", "--refund-id", "-5"}, []string{"--refund-id"}},
		{"lookup refund id fraction", []string{"lookup", "--refund-id", "1.5"}, []string{"--refund-id"}},
		{"lookup extra argument", []string{"lookup", "--refund-id", "1", "oops"}, []string{`"oops"`}},
		{"lookup unknown flag", []string{"lookup", "--refund", "1"}, []string{"-refund"}},
		{"return-shipped without refund id", rs("--refund-id"), []string{"--refund-id"}},
		{"return-shipped refund id abc", rs("", "--refund-id", "abc"), []string{"--refund-id"}},
		{"return-shipped without company", rs("--company"), []string{"--company is required"}},
		{"return-shipped empty company", rs("", "--company", ""), []string{"--company"}},
		{"return-shipped without tracking no", rs("--tracking-no"), []string{"--tracking-no"}},
		{"return-shipped without buyer phone", rs("--buyer-phone"), []string{"--buyer-phone"}},
		{"return-shipped extra argument", append(rs(""), "x"), []string{`"x"`}},
		{"send two files", []string{"send", "a", "b"}, []string{"one FILE"}},
		{"watch negative count", []string{"watch", "--count", "-1"}, []string{"--count"}},
		{"watch extra argument", []string{"watch", "x"}, []string{`"x"`}},
		{"unknown command", []string{"frobnicate"}, []string{`"frobnicate"`, "Usage:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, "", tc.args...)
			if r.code != 2 {
				t.Errorf("want exit 2\n%s", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not mention %s\n%s", w, r)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty\n%s", r)
			}
		})
	}
	// Nothing was published, no stream created.
	if streamExists(t, js, "PANDAPON_INPUT") {
		t.Errorf("a refused command created streams: %d messages", len(streamMsgs(t, js, "PANDAPON_INPUT")))
	}
}

func TestHelp(t *testing.T) {
	setup(t)
	r := runCLI(t, "")
	if r.code != 2 || !strings.Contains(r.stderr, "Usage: publisher") || r.stdout != "" {
		t.Errorf("no args: want exit 2 with usage on stderr\n%s", r)
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		r := runCLI(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stderr, "Usage: publisher") || !strings.Contains(r.stderr, "NATS_URL") || r.stdout != "" {
			t.Errorf("%v: want exit 0 with usage on stderr\n%s", args, r)
		}
	}
	for cmd, flags := range map[string][]string{
		"lookup":         {"-refund-id", "-source"},
		"return-shipped": {"-refund-id", "-company", "-tracking-no", "-buyer-phone", "-desc"},
		"send":           {"-dry-run"},
		"watch":          {"-refund-id", "-from-start", "-failed", "-count"},
	} {
		r := runCLI(t, "", cmd, "-h")
		if r.code != 0 || !strings.Contains(r.stderr, "Usage: publisher "+cmd) || r.stdout != "" {
			t.Errorf("%s -h: want exit 0 with usage on stderr\n%s", cmd, r)
		}
		for _, f := range flags {
			if !strings.Contains(r.stderr, f) {
				t.Errorf("%s -h does not document %s\n%s", cmd, f, r)
			}
		}
	}
}

// TestDurationErrorSaysWhatADurationIs: the publisher words a bad duration
// as the consumer does.
func TestDurationErrorSaysWhatADurationIs(t *testing.T) {
	cleanEnv(t)
	t.Setenv("PANDABRIDGE_PUBLISH_TIMEOUT", "30")
	r := runCLI(t, "", "send", "--dry-run")
	if want := `PANDABRIDGE_PUBLISH_TIMEOUT="30": not a valid duration (e.g. "30s", "5m")`; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("want exit 2 saying %s\n%s", want, r)
	}
}

func TestConfigurationErrors(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
	}{
		{"prefix with a dot", "PANDABRIDGE_SUBJECT_PREFIX", "a.b"},
		{"prefix with a wildcard", "PANDABRIDGE_SUBJECT_PREFIX", "a*"},
		{"timeout not a duration", "PANDABRIDGE_PUBLISH_TIMEOUT", "abc"},
		{"timeout negative", "PANDABRIDGE_PUBLISH_TIMEOUT", "-1s"},
		{"timeout zero", "PANDABRIDGE_PUBLISH_TIMEOUT", "0s"},
		{"blank NATS_URL", "NATS_URL", " "},
		{"NATS_URL token with an unencoded slash", "NATS_URL", "nats://tok/en@127.0.0.1:4222"},
		{"blank source", "PANDABRIDGE_SOURCE", " "},
		{"missing creds file", "NATS_CREDS", "/nonexistent/pandabridge.creds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv("NATS_URL", closedPortURL(t))
			t.Setenv(tc.key, tc.value)
			for _, cmd := range [][]string{{"lookup", "--refund-id", "1"}, {"send", "--dry-run"}, {"watch"}} {
				r := runCLI(t, "", cmd...)
				if r.code != 2 || !strings.Contains(r.stderr, tc.key) {
					t.Errorf("%v: want exit 2 naming %s\n%s", cmd, tc.key, r)
				}
				if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
					t.Errorf("%v: want one line\n%s", cmd, r)
				}
			}
		})
	}
}

func TestNATSUnreachable(t *testing.T) {
	cleanEnv(t)
	url := closedPortURL(t)
	t.Setenv("NATS_URL", strings.Replace(url, "nats://", "nats://operator:s3cr3t-pw@", 1))
	t.Setenv("PANDABRIDGE_PUBLISH_TIMEOUT", "300ms")
	dir := t.TempDir()
	file := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(file, []byte(structuredLine(t, "e1", events.TypeRefundLookupRequested, `{"refundId":"1"}`)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"lookup", "--refund-id", "110002687818"},
		{"return-shipped", "--refund-id", "1", "--company", "SF", "--tracking-no", "N", "--buyer-phone", "1"},
		{"send", file},
		{"watch"},
	} {
		start := time.Now()
		r := runCLI(t, "", args...)
		if r.code != 1 {
			t.Errorf("%v: want exit 1\n%s", args, r)
		}
		host := strings.TrimPrefix(url, "nats://")
		for _, want := range []string{"connecting to NATS", "NATS_URL", host} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%v: stderr does not mention %q\n%s", args, want, r)
			}
		}
		if strings.Contains(r.stderr, "s3cr3t") || strings.Contains(r.stdout, "s3cr3t") {
			t.Errorf("%v: the password in NATS_URL appears in the output\n%s", args, r)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v: took %s to give up", args, d)
		}
	}
}

// structuredLine renders a structured-mode input event as one JSON line;
// data is embedded as is.
func structuredLine(t *testing.T, id, eventType, data string) string {
	t.Helper()
	obj := map[string]any{
		"specversion": "1.0", "id": id, "source": "erp/test", "type": eventType,
		"datacontenttype": "application/json", "time": "2024-05-01T10:00:00Z", "data": json.RawMessage(data),
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mixedFile is a send input with valid and invalid lines; the comments
// give the line numbers the tests expect.
func mixedFile(t *testing.T, tag string) (content string, validIDs []string) {
	t.Helper()
	id := func(n int) string { return fmt.Sprintf("%s-%d", tag, n) }
	lookupWithTrace := strings.TrimSuffix(structuredLine(t, id(1), events.TypeRefundLookupRequested, `{"refundId":"110002687818"}`), "}") +
		`,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`
	lines := []string{
		/* 1 */ lookupWithTrace,
		/* 2 */ structuredLine(t, id(2), events.TypeReturnShipped, `{"refundId":110002687819,"logisticsCompanyCode":"SF","logisticsNo":"SF99","buyerPhone":"150","returnGoodsDesc":null}`),
		/* 3 */ "",
		/* 4 */ `{"specversion":"1.0","id":"broken",`,
		/* 5 */ structuredLine(t, id(5), events.TypeRefundUpdated, `{"refundId":"1"}`),
		/* 6 */ structuredLine(t, id(6), events.TypeReturnShipped, `{"refundId":"110002687818","logisticsCompanyCode":"SF","buyerPhone":"150"}`),
		/* 7 */ "   ",
		/* 8 */ structuredLine(t, id(8), events.TypeRefundLookupRequested, `{"refundId":1234567890123456789}`),
		/* 9 */ structuredLine(t, id(9), events.TypeReturnShipped, `{"refundId":"110002687818","logisticsCompanyCode":"YTO","logisticsNo":"YT1","buyerPhone":"150","returnGoodsDesc":"ok"}`),
	}
	return strings.Join(lines, "\n") + "\n", []string{id(1), id(2), id(8), id(9)}
}

// checkMixedErrors checks the report of mixedFile's bad lines under name.
func checkMixedErrors(t *testing.T, r result, name string) {
	t.Helper()
	errLines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(errLines) != 3 {
		t.Fatalf("want 3 lines on stderr, one per bad line\n%s", r)
	}
	for i, want := range []struct {
		prefix string
		field  string
	}{
		{name + ":4: ", "JSON"},
		{name + ":5: ", "type"},
		{name + ":6: ", "data.logisticsNo"},
	} {
		if !strings.HasPrefix(errLines[i], want.prefix) || !strings.Contains(errLines[i], want.field) {
			t.Errorf("stderr line %d = %q, want %q... naming %s", i+1, errLines[i], want.prefix, want.field)
		}
	}
}

// checkStored checks that the input stream holds exactly the events ids, in
// order, in binary mode.
func checkStored(t *testing.T, js jetstream.JetStream, ids []string) []*jetstream.RawStreamMsg {
	t.Helper()
	msgs := streamMsgs(t, js, "PANDAPON_INPUT")
	var got []string
	for _, m := range msgs {
		got = append(got, m.Header.Get("ce-id"))
		wantHeader(t, m, "Nats-Msg-Id", m.Header.Get("ce-id"))
		wantHeader(t, m, "ce-specversion", "1.0")
		wantHeader(t, m, "ce-source", "erp/test")
		decodeInput(t, m)
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("stored event ids %v, want %v", got, ids)
	}
	return msgs
}

func TestSendFileMixed(t *testing.T) {
	js := setup(t)
	content, ids := mixedFile(t, "mixed")
	file := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "", "send", file)
	if r.code != 1 {
		t.Errorf("want exit 1\n%s", r)
	}
	checkMixedErrors(t, r, file)
	if strings.TrimSpace(r.stdout) != "4 published, 3 failed" {
		t.Errorf("summary %q, want \"4 published, 3 failed\"", r.stdout)
	}
	msgs := checkStored(t, js, ids)
	wantSubjects := []string{"pandapon.refund.lookup.requested", "pandapon.return.shipped", "pandapon.refund.lookup.requested", "pandapon.return.shipped"}
	wantRefunds := []string{"110002687818", "110002687819", "1234567890123456789", "110002687818"}
	for i, m := range msgs {
		if m.Subject != wantSubjects[i] {
			t.Errorf("message %d on %s, want %s", i, m.Subject, wantSubjects[i])
		}
		if got := decodeInput(t, m).RefundID(); got != wantRefunds[i] {
			t.Errorf("message %d refundId %s, want %s", i, got, wantRefunds[i])
		}
	}
	// The data travels byte for byte: the integer refund id stays an integer.
	if got := string(dataObject(t, msgs[2].Data)["refundId"]); got != "1234567890123456789" {
		t.Errorf("refundId stored as %s", got)
	}
	// Extensions survive: traceparent becomes ce-traceparent.
	wantHeader(t, msgs[0], "ce-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	wantHeader(t, msgs[0], "ce-time", "2024-05-01T10:00:00Z")
}

func TestSendStdin(t *testing.T) {
	for _, args := range [][]string{{"send", "-"}, {"send"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			js := setup(t)
			content, ids := mixedFile(t, "stdin")
			r := runCLI(t, content, args...)
			if r.code != 1 {
				t.Errorf("want exit 1\n%s", r)
			}
			checkMixedErrors(t, r, "stdin")
			if strings.TrimSpace(r.stdout) != "4 published, 3 failed" {
				t.Errorf("summary %q", r.stdout)
			}
			checkStored(t, js, ids)
		})
	}
}

func TestSendAllValidTwiceIsDeduplicated(t *testing.T) {
	js := setup(t)
	// No trailing newline, CRLF line endings: still every line.
	content := strings.Join([]string{
		structuredLine(t, "v-1", events.TypeRefundLookupRequested, `{"refundId":"1"}`),
		structuredLine(t, "v-2", events.TypeReturnShipped, `{"refundId":2,"logisticsCompanyCode":"SF","logisticsNo":"N2","buyerPhone":"1"}`),
		structuredLine(t, "v-3", events.TypeRefundLookupRequested, `{"refundId":3}`),
	}, "\r\n")
	file := filepath.Join(t.TempDir(), "valid.ndjson")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		r := runCLI(t, "", "send", file)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("run %d: want exit 0 and nothing on stderr\n%s", i+1, r)
		}
		want := "3 published, 0 failed"
		if i == 1 {
			want = "3 published (3 already stored: the stream kept the earlier copy), 0 failed"
		}
		if strings.TrimSpace(r.stdout) != want {
			t.Errorf("run %d: summary %q, want %q", i+1, r.stdout, want)
		}
		checkStored(t, js, []string{"v-1", "v-2", "v-3"})
	}
	// The same events from stdin: still stored once.
	if r := runCLI(t, content, "send", "-"); r.code != 0 {
		t.Fatalf("stdin: want exit 0\n%s", r)
	}
	checkStored(t, js, []string{"v-1", "v-2", "v-3"})
}

func TestSendDryRun(t *testing.T) {
	js := setup(t)
	dir := t.TempDir()
	mixed, _ := mixedFile(t, "dry")
	mixedPath := filepath.Join(dir, "mixed.ndjson")
	validPath := filepath.Join(dir, "valid.ndjson")
	valid := structuredLine(t, "d-1", events.TypeRefundLookupRequested, `{"refundId":"1"}`) + "\n\n" +
		structuredLine(t, "d-2", events.TypeRefundLookupRequested, `{"refundId":2}`) + "\n"
	if err := os.WriteFile(mixedPath, []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(validPath, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, "", "send", "--dry-run", mixedPath)
	if r.code != 1 {
		t.Errorf("mixed: want exit 1\n%s", r)
	}
	checkMixedErrors(t, r, mixedPath)
	if !strings.HasPrefix(r.stdout, "4 valid, 3 invalid") {
		t.Errorf("mixed: summary %q", r.stdout)
	}
	r = runCLI(t, "", "send", "--dry-run", validPath)
	if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "2 valid, 0 invalid") {
		t.Errorf("valid: want exit 0, \"2 valid, 0 invalid\"\n%s", r)
	}
	r = runCLI(t, valid, "send", "--dry-run")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "2 valid, 0 invalid") {
		t.Errorf("valid on stdin: want exit 0\n%s", r)
	}
	// The flag may follow FILE, as the README writes "send [FILE|-] [--dry-run]".
	for _, args := range [][]string{{"send", validPath, "--dry-run"}, {"send", "-", "--dry-run"}} {
		stdin := ""
		if args[1] == "-" {
			stdin = valid
		}
		if r := runCLI(t, stdin, args...); r.code != 0 || !strings.HasPrefix(r.stdout, "2 valid, 0 invalid") {
			t.Errorf("%q: want exit 0, \"2 valid, 0 invalid\"\n%s", args, r)
		}
	}
	if streamExists(t, js, "PANDAPON_INPUT") {
		t.Errorf("a dry run published: %d messages", len(streamMsgs(t, js, "PANDAPON_INPUT")))
	}

	// A dry run does not need NATS at all.
	t.Setenv("NATS_URL", closedPortURL(t))
	if r := runCLI(t, "", "send", "--dry-run", validPath); r.code != 0 {
		t.Errorf("dry run without NATS: want exit 0\n%s", r)
	}
}

func TestSendMissingFile(t *testing.T) {
	setup(t)
	missing := filepath.Join(t.TempDir(), "nope.ndjson")
	r := runCLI(t, "", "send", missing)
	if r.code != 1 || !strings.Contains(r.stderr, missing) {
		t.Errorf("want exit 1 naming the file\n%s", r)
	}
}

func TestSendLineTooLong(t *testing.T) {
	js := setup(t)
	long := structuredLine(t, "big", events.TypeRefundLookupRequested, `{"refundId":"1","pad":"`+strings.Repeat("x", 2<<20)+`"}`)
	content := structuredLine(t, "small", events.TypeRefundLookupRequested, `{"refundId":"1"}`) + "\n" + long + "\n"
	r := runCLI(t, content, "send")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "stdin:2: ") {
		t.Errorf("want exit 1 reporting line 2\n%s", r)
	}
	checkStored(t, js, []string{"small"})
}

// Output events for the watch tests.

// outputs publishes refund.updated events (and one refund.request.failed)
// the way the consumer does.
type outputs struct {
	t  *testing.T
	js jetstream.JetStream
}

// updated publishes a refund.updated for refundID whose data is the given
// compact JSON, and returns the event.
func (o outputs) updated(refundID, data string) event.Event {
	o.t.Helper()
	in := testkit.Lookup(refundID)
	out := events.NewRefundUpdated(in, "pandabridge", refundID, []byte(data), time.Now())
	o.publish(out)
	return out
}

// failed publishes a refund.request.failed for refundID.
func (o outputs) failed(refundID string) event.Event {
	o.t.Helper()
	in := testkit.Lookup(refundID)
	reqID := "req-1"
	out, err := events.NewRefundRequestFailed(in, "pandabridge", events.RefundRequestFailed{
		RefundID: refundID, RequestType: events.TypeRefundLookupRequested, Code: 40001, Msg: "退款单不存在",
		RequestID: &reqID, Reason: "PandaPon refused the request",
	}, time.Now())
	if err != nil {
		o.t.Fatal(err)
	}
	o.publish(out)
	return out
}

func (o outputs) publish(e event.Event) {
	o.t.Helper()
	msg, err := events.EncodeNATS(events.Subjects{}.Of(e.Type()), e)
	if err != nil {
		o.t.Fatal(err)
	}
	testkit.PublishMsg(o.t, o.js, msg)
}

// updatedData returns a refund.updated data object for refundID with a
// 19-digit number and a decimal with a trailing zero, which a float64
// round trip would change.
func updatedData(refundID string) string {
	return `{"distributorId":1234567890123456789,"currency":"CNY","refundOrderAggregate":{"refundId":"` + refundID +
		`","refundAmount":12.50,"status":"WAIT_SELLER_CONFIRM"},"extra":[1,2.0,null]}`
}

// checkLine checks that line is the structured-mode rendering of want.
func checkLine(t *testing.T, line string, want event.Event) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	str := func(k string) string {
		var s string
		if raw, ok := obj[k]; !ok {
			t.Errorf("line has no %s: %s", k, line)
		} else if err := json.Unmarshal(raw, &s); err != nil {
			t.Errorf("%s is not a string: %s", k, raw)
		}
		return s
	}
	for k, v := range map[string]string{
		"specversion": "1.0", "type": want.Type(), "id": want.ID(), "source": want.Source(), "subject": want.Subject(),
		"datacontenttype": "application/json", "causationid": want.Extensions()[events.ExtCausationID].(string),
	} {
		if got := str(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if tm, err := time.Parse(time.RFC3339Nano, str("time")); err != nil || !tm.Equal(want.Time()) {
		t.Errorf("time %q, want %s (%v)", str("time"), want.Time(), err)
	}
	if got := string(obj["data"]); got != string(want.Data()) {
		t.Errorf("data not byte-equal:\n got %s\nwant %s", got, want.Data())
	}
	var keys []string
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if got, want := strings.Join(keys, ","), "causationid,data,datacontenttype,id,source,specversion,subject,time,type"; got != want {
		t.Errorf("members %s, want %s", got, want)
	}
	// And it decodes back to the same event.
	e, err := events.DecodeNATS(nats.Header{events.HeaderContentType: {events.ContentTypeStructured}}, []byte(line))
	if err != nil {
		t.Fatalf("line is not a structured CloudEvent: %v", err)
	}
	if e.ID() != want.ID() || !bytes.Equal(e.Data(), want.Data()) {
		t.Errorf("decoded %v, want %v", e, want)
	}
}

// watcher is a watch command running in a goroutine.
type watcher struct {
	out, errOut testkit.SyncBuffer
	done        chan struct{}
	code        int
	cancel      context.CancelFunc
	// before holds the consumers of the output stream before the watch
	// started.
	before map[string]bool
}

// outputConsumers returns the names of the output stream's consumers; none
// when the stream does not exist.
func outputConsumers(t *testing.T, js jetstream.JetStream) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	names := map[string]bool{}
	s, err := js.Stream(ctx, "PANDAPON_OUTPUT")
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return names
	}
	if err != nil {
		t.Fatal(err)
	}
	lister := s.ConsumerNames(ctx)
	for name := range lister.Name() {
		names[name] = true
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatal(err)
	}
	return names
}

func startWatch(t *testing.T, js jetstream.JetStream, args ...string) *watcher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	w := &watcher{done: make(chan struct{}), cancel: cancel, before: outputConsumers(t, js)}
	go func() {
		defer close(w.done)
		w.code = run(ctx, append([]string{"watch"}, args...), strings.NewReader(""), &w.out, &w.errOut)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(20 * time.Second):
			t.Errorf("watch did not stop within 20s of being interrupted")
		}
	})
	return w
}

// wait waits for the watch to exit and returns its result.
func (w *watcher) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("watch did not exit\n--- stdout:\n%s--- stderr:\n%s", w.out.String(), w.errOut.String())
	}
	return result{w.code, w.out.String(), w.errOut.String()}
}

func (w *watcher) lines() []string {
	s := strings.TrimSuffix(w.out.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitConsuming waits until the watch consumes the output stream: its
// ordered consumer (one that was not there before it started) exists and
// has a pull request waiting, so the watch got past creating it, and
// everything published from now on is delivered to it.
func waitConsuming(t *testing.T, js jetstream.JetStream, w *watcher) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-w.done:
			t.Fatalf("watch exited early\n%s", result{w.code, w.out.String(), w.errOut.String()})
		default:
		}
		for name := range outputConsumers(t, js) {
			if w.before[name] {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := js.Consumer(ctx, "PANDAPON_OUTPUT", name)
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = c.Info(ctx)
			}
			cancel()
			if err == nil && info.NumWaiting > 0 {
				return true
			}
		}
		return false
	}, "watch to consume PANDAPON_OUTPUT")
}

func TestWatchLive(t *testing.T) {
	js := setup(t)
	testkit.EnsureStreams(t, js)
	o := outputs{t, js}
	o.updated("110002687800", updatedData("110002687800")) // before the watch: not printed

	w := startWatch(t, js, "--count", "2")
	waitConsuming(t, js, w)
	u1 := o.updated("110002687818", updatedData("110002687818"))
	o.failed("110002687818") // not printed without --failed
	u2 := o.updated("110002687819", updatedData("110002687819"))

	r := w.wait(t)
	if r.code != 0 {
		t.Errorf("want exit 0\n%s", r)
	}
	lines := w.lines()
	if len(lines) != 2 {
		t.Fatalf("want exactly 2 lines\n%s", r)
	}
	checkLine(t, lines[0], u1)
	checkLine(t, lines[1], u2)
	if r.stderr != "" {
		t.Errorf("stderr not empty\n%s", r)
	}
}

func TestWatchCreatesStreams(t *testing.T) {
	js := setup(t)
	w := startWatch(t, js, "--count", "1")
	waitConsuming(t, js, w)
	u := outputs{t, js}.updated("5", updatedData("5"))
	r := w.wait(t)
	if r.code != 0 || len(w.lines()) != 1 {
		t.Fatalf("want exit 0 and one line\n%s", r)
	}
	checkLine(t, w.lines()[0], u)
}

func TestWatchFromStart(t *testing.T) {
	js := setup(t)
	testkit.EnsureStreams(t, js)
	o := outputs{t, js}
	u1 := o.updated("1", updatedData("1"))
	o.failed("1")
	u2 := o.updated("2", updatedData("2"))

	r := runCLI(t, "", "watch", "--from-start", "--count", "2")
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines\n%s", r)
	}
	checkLine(t, lines[0], u1)
	checkLine(t, lines[1], u2)
}

func TestWatchRefundID(t *testing.T) {
	js := setup(t)
	testkit.EnsureStreams(t, js)
	o := outputs{t, js}
	o.updated("111", updatedData("111"))
	a1 := o.updated("222", updatedData("222"))
	o.updated("2222", updatedData("2222")) // a prefix match is not a match
	o.failed("222")
	a2 := o.updated("222", `{"distributorId":9007199254740993,"currency":"CNY"}`)

	r := runCLI(t, "", "watch", "--from-start", "--refund-id", "222", "--count", "2")
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines\n%s", r)
	}
	checkLine(t, lines[0], a1)
	checkLine(t, lines[1], a2)

	// Live, too.
	w := startWatch(t, js, "--refund-id", "333", "--count", "1")
	waitConsuming(t, js, w)
	o.updated("444", updatedData("444"))
	b := o.updated("333", updatedData("333"))
	if r := w.wait(t); r.code != 0 || len(w.lines()) != 1 {
		t.Fatalf("live: want exit 0 and one line\n%s", r)
	}
	checkLine(t, w.lines()[0], b)
}

func TestWatchFailed(t *testing.T) {
	js := setup(t)
	testkit.EnsureStreams(t, js)
	o := outputs{t, js}
	u := o.updated("1", updatedData("1"))
	f := o.failed("1")
	u2 := o.updated("2", updatedData("2"))

	r := runCLI(t, "", "watch", "--from-start", "--failed", "--count", "3")
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines\n%s", r)
	}
	checkLine(t, lines[0], u)
	checkLine(t, lines[1], f)
	checkLine(t, lines[2], u2)
	var data map[string]any
	if err := json.Unmarshal(dataObject(t, []byte(lines[1]))["data"], &data); err != nil {
		t.Fatal(err)
	}
	if data["msg"] != "退款单不存在" || data["requestType"] != events.TypeRefundLookupRequested {
		t.Errorf("failed data %v", data)
	}
}

func TestWatchSkipsNonCloudEvents(t *testing.T) {
	js := setup(t)
	testkit.EnsureStreams(t, js)
	testkit.PublishMsg(t, js, &nats.Msg{Subject: "pandapon.refund.updated", Data: []byte(`{"not":"an event"}`)})
	u := outputs{t, js}.updated("1", updatedData("1"))
	r := runCLI(t, "", "watch", "--from-start", "--count", "1")
	if r.code != 0 || !strings.Contains(r.stderr, "not a CloudEvent") {
		t.Fatalf("want exit 0 and a warning on stderr\n%s", r)
	}
	checkLine(t, strings.TrimSuffix(r.stdout, "\n"), u)
}

func TestWatchUntilInterrupted(t *testing.T) {
	js := setup(t)
	w := startWatch(t, js)
	waitConsuming(t, js, w)
	o := outputs{t, js}
	u := o.updated("1", updatedData("1"))
	testkit.Eventually(t, 10*time.Second, func() bool { return len(w.lines()) == 1 }, "the event to be printed")
	select {
	case <-w.done:
		t.Fatal("watch without --count exited after one event")
	default:
	}
	w.cancel() // SIGINT/SIGTERM cancel the context in main
	r := w.wait(t)
	if r.code != 0 {
		t.Errorf("interrupted watch: want exit 0\n%s", r)
	}
	checkLine(t, w.lines()[0], u)
}

// The output stream created by watch is pandabridge's: same configuration
// as the consumer would create.
func TestWatchStreamConfig(t *testing.T) {
	js := setup(t)
	w := startWatch(t, js, "--count", "1")
	waitConsuming(t, js, w)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := topology.New("pandapon").StreamConfigs()
	for _, cfg := range want {
		s, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", cfg.Name, err)
		}
		got := s.CachedInfo().Config
		if strings.Join(got.Subjects, ",") != strings.Join(cfg.Subjects, ",") || got.Duplicates != cfg.Duplicates || got.Storage != cfg.Storage {
			t.Errorf("stream %s: subjects %v dup %s storage %v; want %v %s %v", cfg.Name, got.Subjects, got.Duplicates, got.Storage, cfg.Subjects, cfg.Duplicates, cfg.Storage)
		}
	}
}

// jsAPIErrors returns how many JetStream API requests of the account failed.
func jsAPIErrors(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.API.Errors
}

// Interrupting watch works even while its ordered consumer cannot be
// recreated (here: the output stream was deleted under it).
func TestWatchInterruptedWhileStreamMissing(t *testing.T) {
	js := setup(t)
	w := startWatch(t, js)
	waitConsuming(t, js, w)
	// Once an event is printed, the watch has a pull request pending, which
	// the server ends at once when the stream goes.
	outputs{t, js}.updated("1", updatedData("1"))
	testkit.Eventually(t, 10*time.Second, func() bool { return len(w.lines()) == 1 }, "the event to be printed")
	before := jsAPIErrors(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "PANDAPON_OUTPUT"); err != nil {
		t.Fatal(err)
	}
	// The watch notices and tries to recreate its consumer, which fails.
	// (Should the server not tell, nats.go notices missing heartbeats
	// within 30 s.)
	testkit.Eventually(t, 40*time.Second, func() bool { return jsAPIErrors(t, js) > before }, "watch to fail recreating its consumer")
	start := time.Now()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("watch still running %s after it was interrupted\n--- stderr:\n%s", time.Since(start), w.errOut.String())
	}
	if w.code != 0 {
		t.Errorf("interrupted watch: want exit 0\n%s", result{w.code, w.out.String(), w.errOut.String()})
	}
}

// An event published while the watch is reconnecting after a NATS restart
// (its in-memory ordered consumer is gone) is still printed: "from the
// moment it starts" does not move to the moment it reconnected.
func TestWatchAcrossServerRestart(t *testing.T) {
	cleanEnv(t)
	s := testkit.NATS(t)
	t.Setenv("NATS_URL", s.URL)
	nc, js := testkit.Connect(t, s.URL)
	w := startWatch(t, js, "--count", "1")
	waitConsuming(t, js, w)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, nc.IsConnected, "the test's connection to reconnect")
	in := testkit.Lookup("77")
	u := events.NewRefundUpdated(in, "pandabridge", "77", []byte(updatedData("77")), time.Now())
	msg, err := events.EncodeNATS("pandapon.refund.updated", u)
	if err != nil {
		t.Fatal(err)
	}
	// Publish until acknowledged; a repeat is de-duplicated by Nats-Msg-Id.
	testkit.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.PublishMsg(ctx, msg)
		return err == nil
	}, "the output stream to accept a message after the restart")
	r := w.wait(t)
	if r.code != 0 || len(w.lines()) != 1 {
		t.Fatalf("want exit 0 and one line\n%s", r)
	}
	checkLine(t, w.lines()[0], u)
}

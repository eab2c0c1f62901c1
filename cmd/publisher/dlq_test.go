package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/delivery"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/handlers"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/pipeline"
	"github.com/pandabridge/pandabridge/topology"
)

// dlqSetup starts NATS with pandabridge's streams, NATS_URL pointing at it.
func dlqSetup(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := setup(t)
	testkit.EnsureStreams(t, js)
	return js
}

func publishAck(t *testing.T, js jetstream.JetStream, msg *nats.Msg) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publishing to %s: %v", msg.Subject, err)
	}
	return ack
}

// storeInput publishes e in binary mode to its input subject, as a producer
// does, and returns the message and its input stream sequence.
func storeInput(t *testing.T, js jetstream.JetStream, e event.Event) (*nats.Msg, uint64) {
	t.Helper()
	msg, err := events.EncodeNATS(events.Subjects{}.Of(e.Type()), e)
	if err != nil {
		t.Fatal(err)
	}
	return msg, publishAck(t, js, msg).Sequence
}

// putDeadLetter stores the dead letter of orig exactly as the pipeline
// writes it (original headers and payload, plus the three headers) and
// returns its DLQ sequence.
func putDeadLetter(t *testing.T, js jetstream.JetStream, orig *nats.Msg, reason string, deliveries int, inputSeq uint64) uint64 {
	t.Helper()
	dl := nats.NewMsg(events.Subjects{}.DeadLetter(orig.Subject))
	dl.Data = orig.Data
	for k, v := range orig.Header {
		dl.Header[k] = slices.Clone(v)
	}
	dl.Header.Set(pipeline.HeaderDLQReason, reason)
	dl.Header.Set(pipeline.HeaderDLQDeliveries, strconv.Itoa(deliveries))
	dl.Header.Set(pipeline.HeaderDLQStreamSeq, strconv.FormatUint(inputSeq, 10))
	ack := publishAck(t, js, dl)
	if ack.Stream != "PANDAPON_DLQ" || ack.Duplicate {
		t.Fatalf("dead letter stored in %s (duplicate %v)", ack.Stream, ack.Duplicate)
	}
	return ack.Sequence
}

// dlqSeqs returns the sequences stored in PANDAPON_DLQ.
func dlqSeqs(t *testing.T, js jetstream.JetStream) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, m := range streamMsgs(t, js, "PANDAPON_DLQ") {
		seqs = append(seqs, m.Sequence)
	}
	return seqs
}

func mustContain(t *testing.T, r result, where, s string) {
	t.Helper()
	out := r.stdout
	if where == "stderr" {
		out = r.stderr
	}
	if !strings.Contains(out, s) {
		t.Errorf("%s does not contain %q\n%s", where, s, r)
	}
}

// tableRow returns the line of the list table for seq.
func tableRow(t *testing.T, r result, seq uint64) string {
	t.Helper()
	for _, l := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == strconv.FormatUint(seq, 10) {
			return l
		}
	}
	t.Fatalf("no row for %d\n%s", seq, r)
	return ""
}

// jsonLines decodes the output of "dlq list --json".
func jsonLines(t *testing.T, r result) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v\n%s", l, err, r)
		}
		out = append(out, m)
	}
	return out
}

// fixture is three dead letters of different shapes.
type fixture struct {
	lookup, shipped, garbage    uint64 // DLQ sequences
	lookupID, shippedID         string
	lookupReason, shippedReason string
	lookupInputSeq              uint64
	garbageData                 []byte
}

func threeDeadLetters(t *testing.T, js jetstream.JetStream) fixture {
	t.Helper()
	var f fixture
	// A lookup that kept failing: binary mode.
	in := testkit.Lookup("120000000004")
	in.SetSubject("120000000004")
	msg, seq := storeInput(t, js, in)
	f.lookupID, f.lookupInputSeq = in.ID(), seq
	f.lookupReason = "failed on delivery 5 of 5: query refund 120000000004: PandaPon answered HTTP 503 Service Unavailable (TIMEOUT of upstream)"
	f.lookup = putDeadLetter(t, js, msg, f.lookupReason, 5, seq)

	// An invalid return.shipped in structured mode: the refund id is a
	// JSON number in data, there is no ce-* header.
	f.shippedID = "structured-1"
	smsg := nats.NewMsg("pandapon.return.shipped")
	smsg.Header.Set(events.HeaderContentType, events.ContentTypeStructured)
	smsg.Header.Set(events.HeaderMsgID, f.shippedID)
	smsg.Data = []byte(`{"specversion":"1.0","id":"structured-1","source":"erp","type":"return.shipped","data":{"refundId":110000303674,"logisticsCompanyCode":"SF","logisticsNo":"","buyerPhone":"1"}}`)
	sseq := publishAck(t, js, smsg).Sequence
	f.shippedReason = `invalid input: data.logisticsNo: "" is empty`
	f.shipped = putDeadLetter(t, js, smsg, f.shippedReason, 1, sseq)

	// Not a CloudEvent, not UTF-8.
	f.garbageData = []byte{0xff, 0xfe, 0x00, 'x'}
	g := nats.NewMsg("pandapon.refund.lookup.requested")
	g.Data = f.garbageData
	f.garbage = putDeadLetter(t, js, g, "invalid input: not a CloudEvent", 1, 99)
	return f
}

func TestDLQListAndShow(t *testing.T) {
	js := setup(t)

	// No stream yet: nothing to list, and listing creates nothing.
	r := runCLI(t, "", "dlq", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "no dead letters") {
		t.Fatalf("list without a DLQ stream: want exit 0 and \"no dead letters\"\n%s", r)
	}
	if streamExists(t, js, "PANDAPON_DLQ") {
		t.Error("dlq list created the DLQ stream")
	}
	testkit.EnsureStreams(t, js)
	f := threeDeadLetters(t, js)

	r = runCLI(t, "", "dlq", "list")
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	for _, h := range []string{"SEQ", "AGE", "SUBJECT", "TYPE", "ID", "REFUND", "DELIVERIES", "REASON"} {
		mustContain(t, r, "stdout", h)
	}
	mustContain(t, r, "stdout", "3 dead letters")
	row := tableRow(t, r, f.lookup)
	for _, want := range []string{"pandapon.refund.lookup.requested", "refund.lookup.requested", f.lookupID, "120000000004", " 5 ", "failed on delivery 5 of 5"} {
		if !strings.Contains(row, want) {
			t.Errorf("row %q does not contain %q", row, want)
		}
	}
	if !regexp.MustCompile(`^\S+\s+\d+s\s`).MatchString(row) {
		t.Errorf("row %q: age is not a few seconds", row)
	}
	if strings.Contains(row, "upstream") || !strings.Contains(row, "…") {
		t.Errorf("row %q: a long reason is not shortened", row)
	}
	row = tableRow(t, r, f.shipped)
	for _, want := range []string{"pandapon.return.shipped", "return.shipped", f.shippedID, "110000303674", f.shippedReason} {
		if !strings.Contains(row, want) {
			t.Errorf("structured-mode row %q does not contain %q", row, want)
		}
	}
	if row := tableRow(t, r, f.garbage); !strings.Contains(row, "not a CloudEvent") {
		t.Errorf("garbage row %q", row)
	}

	r = runCLI(t, "", "dlq", "list", "--json")
	lines := jsonLines(t, r)
	if r.code != 0 || len(lines) != 3 {
		t.Fatalf("--json: want exit 0 and 3 lines\n%s", r)
	}
	l := lines[0]
	for k, want := range map[string]any{
		"seq": float64(f.lookup), "subject": "pandapon.refund.lookup.requested", "dlqSubject": "pandapon.dlq.refund.lookup.requested",
		"type": "refund.lookup.requested", "id": f.lookupID, "source": "testkit", "refundId": "120000000004",
		"deliveries": float64(5), "inputStreamSeq": float64(f.lookupInputSeq), "reason": f.lookupReason,
	} {
		if l[k] != want {
			t.Errorf("--json %s = %#v, want %#v", k, l[k], want)
		}
	}
	if age, ok := l["ageSeconds"].(float64); !ok || age < 0 || age > 60 {
		t.Errorf("--json ageSeconds = %v", l["ageSeconds"])
	}
	if stored, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["stored"])); time.Since(stored) > time.Minute {
		t.Errorf("--json stored = %v", l["stored"])
	}
	if lines[1]["refundId"] != "110000303674" || lines[1]["id"] != f.shippedID || lines[1]["type"] != "return.shipped" {
		t.Errorf("structured-mode line %v", lines[1])
	}

	// Filters.
	for _, tc := range []struct {
		args []string
		want []uint64
	}{
		{[]string{"--type", "return.shipped"}, []uint64{f.shipped}},
		{[]string{"--reason", "TIMEOUT of"}, []uint64{f.lookup}},
		{[]string{"--reason", "invalid input"}, []uint64{f.shipped, f.garbage}},
		{[]string{"--subject", "return.shipped"}, []uint64{f.shipped}},
		{[]string{"--subject", "pandapon.refund.lookup.requested"}, []uint64{f.lookup, f.garbage}},
		{[]string{"--subject", "pandapon.dlq.refund.lookup.requested"}, []uint64{f.lookup, f.garbage}},
		{[]string{"--subject", "pandapon.*.shipped"}, []uint64{f.shipped}},
		{[]string{"--subject", "pandapon.refund.>", "--reason", "not a cloudevent"}, []uint64{f.garbage}},
		{[]string{"--limit", "2"}, []uint64{f.lookup, f.shipped}},
		{[]string{"--type", "refund.updated"}, nil},
	} {
		r := runCLI(t, "", append([]string{"dlq", "list", "--json"}, tc.args...)...)
		var got []uint64
		for _, l := range jsonLines(t, r) {
			got = append(got, uint64(l["seq"].(float64)))
		}
		if r.code != 0 || !slices.Equal(got, tc.want) {
			t.Errorf("list %v: got %v, want %v\n%s", tc.args, got, tc.want, r)
		}
	}
	r = runCLI(t, "", "dlq", "list", "--limit", "1")
	mustContain(t, r, "stdout", "--limit 1 reached")
	r = runCLI(t, "", "dlq", "list", "--type", "nope")
	if r.code != 0 || !strings.Contains(r.stdout, "no dead letters match") {
		t.Errorf("empty filter result\n%s", r)
	}

	// show: every header and the payload as stored.
	r = runCLI(t, "", "dlq", "show", strconv.FormatUint(f.lookup, 10))
	if r.code != 0 {
		t.Fatalf("show: want exit 0\n%s", r)
	}
	stored := streamMsgs(t, js, "PANDAPON_DLQ")[0]
	for k, vs := range stored.Header {
		mustContain(t, r, "stdout", k+": "+vs[0])
	}
	mustContain(t, r, "stdout", "Replays to: pandapon.refund.lookup.requested")
	mustContain(t, r, "stdout", "Subject:    pandapon.dlq.refund.lookup.requested")
	mustContain(t, r, "stdout", string(stored.Data))
	mustContain(t, r, "stdout", "Pandabridge-Dlq-Reason: "+f.lookupReason)

	r = runCLI(t, "", "dlq", "show", strconv.FormatUint(f.garbage, 10))
	if r.code != 0 {
		t.Fatalf("show garbage: want exit 0\n%s", r)
	}
	mustContain(t, r, "stdout", "not UTF-8")
	mustContain(t, r, "stdout", base64.StdEncoding.EncodeToString(f.garbageData))
	if strings.Contains(r.stdout, string(f.garbageData)) {
		t.Error("show printed a non-UTF-8 payload raw")
	}

	r = runCLI(t, "", "dlq", "show", "999")
	if r.code != 1 || !strings.Contains(r.stderr, "no dead letter with sequence 999") {
		t.Errorf("show 999: want exit 1 and \"no dead letter with sequence 999\"\n%s", r)
	}
}

func TestDLQUsageAndHelp(t *testing.T) {
	js := dlqSetup(t)
	in, seq := storeInput(t, js, testkit.Lookup("1"))
	putDeadLetter(t, js, in, "r", 1, seq)
	for _, tc := range []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"dlq"}, []string{"Usage: publisher dlq", "replay"}},
		{[]string{"dlq", "frob"}, []string{`"frob"`, "Usage: publisher dlq"}},
		{[]string{"dlq", "list", "--limit", "-1"}, []string{"--limit"}},
		{[]string{"dlq", "list", "--limit", "x"}, []string{"-limit"}},
		{[]string{"dlq", "list", "--subject", "a b"}, []string{"--subject"}},
		{[]string{"dlq", "list", "--subject", "pandapon..x"}, []string{"--subject"}},
		{[]string{"dlq", "list", "--subject", "pandapon.>.x"}, []string{"--subject"}},
		{[]string{"dlq", "list", "7"}, []string{`"7"`}},
		{[]string{"dlq", "list", "--frob"}, []string{"-frob"}},
		{[]string{"dlq", "show"}, []string{"SEQ"}},
		{[]string{"dlq", "show", "1", "2"}, []string{"SEQ"}},
		{[]string{"dlq", "show", "abc"}, []string{`"abc"`}},
		{[]string{"dlq", "replay"}, []string{"SEQ", "--all"}},
		{[]string{"dlq", "replay", "0"}, []string{`"0"`}},
		{[]string{"dlq", "replay", "-5"}, []string{"-5"}},
		{[]string{"dlq", "replay", "1", "--all"}, []string{"--all"}},
		{[]string{"dlq", "replay", "1", "--type", "x"}, []string{"SEQ"}},
		{[]string{"dlq", "replay", "--all", "--reason", "x"}, []string{"--all"}},
		{[]string{"dlq", "replay", "--subject", "a..b"}, []string{"--subject"}},
		{[]string{"dlq", "purge"}, []string{"SEQ", "--all"}},
		{[]string{"dlq", "purge", "--all", "1"}, []string{"--all"}},
		{[]string{"dlq", "purge", "--yes=maybe", "--all"}, []string{"-yes"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, "purge\n", tc.args...)
			if r.code != 2 {
				t.Errorf("want exit 2\n%s", r)
			}
			for _, w := range tc.want {
				mustContain(t, r, "stderr", w)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty\n%s", r)
			}
		})
	}
	if n := len(streamMsgs(t, js, "PANDAPON_DLQ")); n != 1 {
		t.Errorf("a refused command changed the DLQ: %d dead letters, want 1", n)
	}
	if n := len(streamMsgs(t, js, "PANDAPON_INPUT")); n != 1 {
		t.Errorf("a refused command published: %d inputs, want 1", n)
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"dlq", "-h"}, []string{"list", "show", "replay", "purge", "PANDAPON_DLQ"}},
		{[]string{"dlq", "help"}, []string{"Subcommands:"}},
		{[]string{"dlq", "list", "-h"}, []string{"publisher dlq list", "-json", "-limit", "-subject", "-type", "-reason"}},
		{[]string{"dlq", "show", "-h"}, []string{"publisher dlq show SEQ", "base64"}},
		{[]string{"dlq", "replay", "-h"}, []string{"publisher dlq replay", "-dry-run", "-all", "Nats-Msg-Id", "duplicate window", "acknowledged"}},
		{[]string{"dlq", "purge", "-h"}, []string{"publisher dlq purge", "-yes", "'purge'"}},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != 0 || r.stdout != "" {
			t.Errorf("%v: want exit 0, help on stderr\n%s", tc.args, r)
		}
		for _, w := range tc.want {
			mustContain(t, r, "stderr", w)
		}
	}
	r := runCLI(t, "", "-h")
	mustContain(t, r, "stderr", "dlq")
}

// checkReplayed checks that the input stream message m is the replay of
// the dead letter of orig: same subject, payload and headers byte for
// byte, except for Nats-Msg-Id (replaced) and the Pandabridge-Dlq-*
// headers (gone).
func checkReplayed(t *testing.T, m *jetstream.RawStreamMsg, orig *nats.Msg) {
	t.Helper()
	if m.Subject != orig.Subject {
		t.Errorf("replayed to %s, want %s", m.Subject, orig.Subject)
	}
	if string(m.Data) != string(orig.Data) {
		t.Errorf("replayed payload %q, want %q", m.Data, orig.Data)
	}
	for k, v := range orig.Header {
		if k == events.HeaderMsgID {
			continue
		}
		if got := m.Header[k]; !slices.Equal(got, v) {
			t.Errorf("replayed header %s = %q, want %q", k, got, v)
		}
	}
	for k := range m.Header {
		if strings.HasPrefix(k, "Pandabridge-Dlq-") {
			t.Errorf("replay carries %s", k)
		}
		if _, ok := orig.Header[k]; !ok && k != events.HeaderMsgID {
			t.Errorf("replay carries the extra header %s", k)
		}
	}
	id := m.Header.Get(events.HeaderMsgID)
	if id == "" || id == orig.Header.Get(events.HeaderMsgID) {
		t.Errorf("replay's Nats-Msg-Id %q: want a new one", id)
	}
}

// A replay of an input published moments ago (well within the input
// stream's 1 h duplicate window) is stored, not dropped as a duplicate.
func TestDLQReplayOneWithinDuplicateWindow(t *testing.T) {
	js := dlqSetup(t)
	r := runCLI(t, "", "lookup", "--refund-id", "110002687818")
	if r.code != 0 {
		t.Fatalf("lookup\n%s", r)
	}
	stored := streamMsgs(t, js, "PANDAPON_INPUT")[0]
	orig := &nats.Msg{Subject: stored.Subject, Header: stored.Header, Data: stored.Data}
	seq := putDeadLetter(t, js, orig, "failed on delivery 5 of 5: 503", 5, stored.Sequence)
	other, oseq := storeInput(t, js, testkit.ReturnShipped("110000303674", "SF", "SF1"))
	keep := putDeadLetter(t, js, other, "failed", 5, oseq)

	// Had the original Nats-Msg-Id been kept, this is what would happen.
	if ack := publishAck(t, js, &nats.Msg{Subject: orig.Subject, Header: orig.Header, Data: orig.Data}); !ack.Duplicate {
		t.Fatal("the input stream did not de-duplicate the original id: the test proves nothing")
	}

	r = runCLI(t, "", "dlq", "replay", strconv.FormatUint(seq, 10))
	if r.code != 0 {
		t.Fatalf("replay: want exit 0\n%s", r)
	}
	want := fmt.Sprintf("replayed %d -> pandapon.refund.lookup.requested (stream PANDAPON_INPUT seq 3)", seq)
	mustContain(t, r, "stdout", want)
	mustContain(t, r, "stdout", "1 replayed, 0 failed")
	inputs := streamMsgs(t, js, "PANDAPON_INPUT")
	if len(inputs) != 3 {
		t.Fatalf("PANDAPON_INPUT holds %d messages, want 3 (original, other, replay)", len(inputs))
	}
	checkReplayed(t, inputs[2], orig)
	if got := decodeInput(t, inputs[2]).Event.ID(); got != stored.Header.Get("ce-id") {
		t.Errorf("replayed event id %s, want the original %s", got, stored.Header.Get("ce-id"))
	}
	if got := dlqSeqs(t, js); !slices.Equal(got, []uint64{keep}) {
		t.Errorf("DLQ holds %v, want only %d", got, keep)
	}

	// It is gone from the DLQ: replaying it again is an error.
	r = runCLI(t, "", "dlq", "replay", strconv.FormatUint(seq, 10))
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("no dead letter with sequence %d", seq)) {
		t.Errorf("second replay: want exit 1, no dead letter\n%s", r)
	}
	if n := len(streamMsgs(t, js, "PANDAPON_INPUT")); n != 3 {
		t.Errorf("PANDAPON_INPUT holds %d messages after a failed replay, want 3", n)
	}
}

func TestDLQReplayFilterDryRunAndAll(t *testing.T) {
	js := dlqSetup(t)
	type dl struct {
		orig *nats.Msg
		seq  uint64
	}
	var lookups, shipped []dl
	for i := range 3 {
		m, s := storeInput(t, js, testkit.Lookup(sandbox.GeneratedRefundID(i)))
		lookups = append(lookups, dl{m, putDeadLetter(t, js, m, fmt.Sprintf("lookup %d failed: HTTP 503", i), 5, s)})
		m, s = storeInput(t, js, testkit.ReturnShipped(sandbox.GeneratedRefundID(i), "SF", "SF"+strconv.Itoa(i)))
		shipped = append(shipped, dl{m, putDeadLetter(t, js, m, fmt.Sprintf("return %d failed: timeout", i), 5, s)})
	}
	inputsBefore := len(streamMsgs(t, js, "PANDAPON_INPUT"))

	// Dry run: says what, does nothing.
	r := runCLI(t, "", "dlq", "replay", "--type", "return.shipped", "--dry-run")
	if r.code != 0 {
		t.Fatalf("dry run\n%s", r)
	}
	for _, d := range shipped {
		mustContain(t, r, "stdout", fmt.Sprintf("would replay %d -> pandapon.return.shipped", d.seq))
	}
	mustContain(t, r, "stdout", "3 would be replayed")
	if n := len(streamMsgs(t, js, "PANDAPON_INPUT")); n != inputsBefore || len(dlqSeqs(t, js)) != 6 {
		t.Fatalf("dry run published or deleted: %d inputs (want %d), DLQ %v", n, inputsBefore, dlqSeqs(t, js))
	}

	// A filter: only the return.shipped ones, oldest first.
	r = runCLI(t, "", "dlq", "replay", "--type", "return.shipped")
	if r.code != 0 {
		t.Fatalf("replay --type\n%s", r)
	}
	mustContain(t, r, "stdout", "3 replayed, 0 failed")
	inputs := streamMsgs(t, js, "PANDAPON_INPUT")[inputsBefore:]
	if len(inputs) != 3 {
		t.Fatalf("%d replays stored, want 3", len(inputs))
	}
	for i, d := range shipped {
		checkReplayed(t, inputs[i], d.orig)
	}
	want := []uint64{lookups[0].seq, lookups[1].seq, lookups[2].seq}
	if got := dlqSeqs(t, js); !slices.Equal(got, want) {
		t.Errorf("DLQ holds %v, want the lookups %v", got, want)
	}

	// A reason filter, then everything that is left.
	r = runCLI(t, "", "dlq", "replay", "--reason", "LOOKUP 1 ")
	if r.code != 0 || !strings.Contains(r.stdout, "1 replayed") {
		t.Fatalf("replay --reason\n%s", r)
	}
	if got := dlqSeqs(t, js); !slices.Equal(got, []uint64{lookups[0].seq, lookups[2].seq}) {
		t.Errorf("DLQ holds %v after --reason", got)
	}
	r = runCLI(t, "", "dlq", "replay", "--all")
	if r.code != 0 || !strings.Contains(r.stdout, "2 replayed, 0 failed") {
		t.Fatalf("replay --all\n%s", r)
	}
	if got := dlqSeqs(t, js); len(got) != 0 {
		t.Errorf("DLQ holds %v after --all", got)
	}
	inputs = streamMsgs(t, js, "PANDAPON_INPUT")[inputsBefore:]
	if len(inputs) != 6 {
		t.Fatalf("%d replays stored, want 6", len(inputs))
	}
	checkReplayed(t, inputs[3], lookups[1].orig)
	checkReplayed(t, inputs[4], lookups[0].orig)
	checkReplayed(t, inputs[5], lookups[2].orig)

	r = runCLI(t, "", "dlq", "replay", "--all")
	if r.code != 0 || !strings.Contains(r.stdout, "no dead letters to replay") {
		t.Errorf("replay --all of an empty DLQ\n%s", r)
	}
}

// A dead letter whose replay is not acknowledged stays in the DLQ; the
// others are replayed; the exit code says something failed.
func TestDLQReplayKeepsDeadLetterWhenPublishFails(t *testing.T) {
	js := dlqSetup(t)
	// No stream stores pandapon.nowhere.x.
	lost := nats.NewMsg("pandapon.nowhere.x")
	lost.Header.Set("ce-id", "lost-1")
	lost.Data = []byte(`{"refundId":"1"}`)
	bad := putDeadLetter(t, js, lost, "whatever", 1, 1)
	good, gseq := storeInput(t, js, testkit.Lookup("2"))
	ok := putDeadLetter(t, js, good, "failed", 5, gseq)
	before := streamMsgs(t, js, "PANDAPON_DLQ")[0]

	r := runCLI(t, "", "dlq", "replay", "--all")
	if r.code != 1 {
		t.Fatalf("want exit 1\n%s", r)
	}
	mustContain(t, r, "stderr", fmt.Sprintf("%d: not replayed", bad))
	mustContain(t, r, "stderr", "no stream stores pandapon.nowhere.x")
	mustContain(t, r, "stdout", fmt.Sprintf("replayed %d -> pandapon.refund.lookup.requested", ok))
	mustContain(t, r, "stdout", "1 replayed, 1 failed")
	after := streamMsgs(t, js, "PANDAPON_DLQ")
	if len(after) != 1 || after[0].Sequence != bad || string(after[0].Data) != string(before.Data) ||
		after[0].Header.Get(pipeline.HeaderDLQReason) != "whatever" {
		t.Fatalf("DLQ after a failed replay: %v, want dead letter %d untouched", after, bad)
	}
	if streamExists(t, js, delivery.ReplayStreamName(events.Subjects{})) {
		t.Error("replay created a stream for the unknown subject")
	}

	// Asking for it by sequence: same, exit 1.
	r = runCLI(t, "", "dlq", "replay", strconv.FormatUint(bad, 10))
	if r.code != 1 || len(dlqSeqs(t, js)) != 1 {
		t.Errorf("replay SEQ of an unpublishable dead letter: want exit 1 and the dead letter kept\n%s", r)
	}
}

// Webhook dead letters go back to the target's replay subject, which the
// replay stream stores once "publisher serve" created it.
func TestDLQReplayWebhookDeadLetter(t *testing.T) {
	js := dlqSetup(t)
	out := events.NewRefundUpdated(testkit.Lookup("5"), "pandabridge", "5", []byte(updatedData("5")), time.Now())
	orig, err := events.EncodeNATS("pandapon.refund.updated", out)
	if err != nil {
		t.Fatal(err)
	}
	dl := nats.NewMsg(delivery.DeadLetterSubject(events.Subjects{}, "erp"))
	dl.Data = orig.Data
	for k, v := range orig.Header {
		dl.Header[k] = v
	}
	dl.Header.Set(delivery.HeaderDLQReason, "HTTP 410")
	dl.Header.Set(delivery.HeaderDLQDeliveries, "1")
	dl.Header.Set(delivery.HeaderDLQStreamSeq, "1")
	dl.Header.Set(delivery.HeaderDLQStream, "PANDAPON_OUTPUT")
	dl.Header.Set(delivery.HeaderWebhookTarget, "erp")
	dl.Header.Set(events.HeaderMsgID, out.ID()+"/webhook/erp")
	seq := publishAck(t, js, dl).Sequence

	r := runCLI(t, "", "dlq", "list", "--json", "--subject", "webhook.erp")
	if l := jsonLines(t, r); len(l) != 1 || l[0]["webhookTarget"] != "erp" || l[0]["subject"] != "pandapon.webhook.erp" {
		t.Errorf("list --subject webhook.erp: %v\n%s", l, r)
	}

	// No replay stream yet: kept, with a hint.
	r = runCLI(t, "", "dlq", "replay", strconv.FormatUint(seq, 10))
	if r.code != 1 || !strings.Contains(r.stderr, "PANDAPON_WEBHOOKS") || len(dlqSeqs(t, js)) != 1 {
		t.Fatalf("replay without the replay stream: want exit 1 naming PANDAPON_WEBHOOKS, dead letter kept\n%s", r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, delivery.ReplayStreamConfig(topology.New("pandapon"))); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "", "dlq", "replay", strconv.FormatUint(seq, 10))
	if r.code != 0 {
		t.Fatalf("replay: want exit 0\n%s", r)
	}
	mustContain(t, r, "stdout", fmt.Sprintf("replayed %d -> pandapon.webhook.erp (stream PANDAPON_WEBHOOKS seq 1)", seq))
	msgs := streamMsgs(t, js, "PANDAPON_WEBHOOKS")
	if len(msgs) != 1 {
		t.Fatalf("PANDAPON_WEBHOOKS holds %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if string(m.Data) != string(orig.Data) || m.Header.Get("ce-id") != out.ID() || m.Header.Get(delivery.HeaderWebhookTarget) != "erp" {
		t.Errorf("replayed webhook message: headers %v data %s", m.Header, m.Data)
	}
	for k := range m.Header {
		if strings.HasPrefix(k, "Pandabridge-Dlq-") {
			t.Errorf("replay carries %s", k)
		}
	}
	if len(dlqSeqs(t, js)) != 0 {
		t.Error("dead letter not removed after its replay was acknowledged")
	}
}

// A dead letter whose replay was stored but not deleted (the tool died in
// between) is not replayed a second time: the replay id is the same, the
// input stream de-duplicates it, and the dead letter is removed.
func TestDLQReplayAfterInterruptedReplayIsNotDoubled(t *testing.T) {
	js := dlqSetup(t)
	in, s := storeInput(t, js, testkit.Lookup("3"))
	seq := putDeadLetter(t, js, in, "failed", 5, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "PANDAPON_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	// What an earlier, interrupted replay stored.
	c := &cli{topo: topology.New("pandapon")}
	d := c.describe(raw)
	first := c.replayMsg(d)
	if again := c.replayMsg(c.describe(raw)); again.Header.Get(events.HeaderMsgID) != first.Header.Get(events.HeaderMsgID) {
		t.Fatalf("replay ids differ between two replays of one dead letter: %s, %s", first.Header.Get(events.HeaderMsgID), again.Header.Get(events.HeaderMsgID))
	}
	publishAck(t, js, first)
	n := len(streamMsgs(t, js, "PANDAPON_INPUT"))

	r := runCLI(t, "", "dlq", "replay", strconv.FormatUint(seq, 10))
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	mustContain(t, r, "stdout", "duplicate of an earlier replay")
	if got := len(streamMsgs(t, js, "PANDAPON_INPUT")); got != n {
		t.Errorf("PANDAPON_INPUT grew from %d to %d: the replay was stored twice", n, got)
	}
	if len(dlqSeqs(t, js)) != 0 {
		t.Error("dead letter not removed")
	}

	// Two different dead letters of the same input get different ids.
	// (Without its Nats-Msg-Id, so that the DLQ's 100 ms duplicate window
	// cannot drop it, however fast this test runs.)
	in2 := &nats.Msg{Subject: in.Subject, Header: nats.Header{}, Data: in.Data}
	for k, v := range in.Header {
		if k != events.HeaderMsgID {
			in2.Header[k] = v
		}
	}
	seq2 := putDeadLetter(t, js, in2, "failed again", 5, s)
	raw2, err := stream.GetMsg(ctx, seq2)
	if err != nil {
		t.Fatal(err)
	}
	if c.replayMsg(c.describe(raw2)).Header.Get(events.HeaderMsgID) == first.Header.Get(events.HeaderMsgID) {
		t.Error("two dead letters share a replay id")
	}
}

func TestDLQPurge(t *testing.T) {
	js := dlqSetup(t)
	f := threeDeadLetters(t, js)
	all := []uint64{f.lookup, f.shipped, f.garbage}

	// Not confirmed: nothing deleted, exit 1.
	for _, stdin := range []string{"", "no\n", "yes\n", "PURGE\n"} {
		r := runCLI(t, stdin, "dlq", "purge", strconv.FormatUint(f.lookup, 10))
		if r.code != 1 || !strings.Contains(r.stderr, "nothing deleted") {
			t.Errorf("stdin %q: want exit 1, nothing deleted\n%s", stdin, r)
		}
		mustContain(t, r, "stderr", "Type 'purge' to confirm")
		mustContain(t, r, "stdout", f.lookupID) // what it would delete
		if got := dlqSeqs(t, js); !slices.Equal(got, all) {
			t.Fatalf("stdin %q: DLQ holds %v, want %v", stdin, got, all)
		}
	}
	// An unknown SEQ among them: nothing deleted.
	r := runCLI(t, "purge\n", "dlq", "purge", strconv.FormatUint(f.lookup, 10), "999", "--yes")
	if r.code != 1 || !strings.Contains(r.stderr, "no dead letter with sequence 999") {
		t.Errorf("purge with an unknown SEQ\n%s", r)
	}
	if got := dlqSeqs(t, js); !slices.Equal(got, all) {
		t.Fatalf("DLQ holds %v, want %v", got, all)
	}

	// Confirmed.
	r = runCLI(t, "purge\n", "dlq", "purge", strconv.FormatUint(f.lookup, 10))
	if r.code != 0 || !strings.Contains(r.stdout, "deleted 1 dead letter from PANDAPON_DLQ") {
		t.Fatalf("confirmed purge: want exit 0\n%s", r)
	}
	if got := dlqSeqs(t, js); !slices.Equal(got, []uint64{f.shipped, f.garbage}) {
		t.Fatalf("DLQ holds %v", got)
	}

	// A filter with --yes: no question.
	r = runCLI(t, "", "dlq", "purge", "--type", "return.shipped", "--yes")
	if r.code != 0 || strings.Contains(r.stderr, "confirm") {
		t.Fatalf("purge --type --yes\n%s", r)
	}
	if got := dlqSeqs(t, js); !slices.Equal(got, []uint64{f.garbage}) {
		t.Fatalf("DLQ holds %v", got)
	}

	// --all, confirmed, then --all --yes.
	r = runCLI(t, "purge\n", "dlq", "purge", "--all")
	if r.code != 0 || !strings.Contains(r.stdout, "purged 1 dead letter") {
		t.Fatalf("purge --all\n%s", r)
	}
	if got := dlqSeqs(t, js); len(got) != 0 {
		t.Fatalf("DLQ holds %v after purge --all", got)
	}
	in, s := storeInput(t, js, testkit.Lookup("9"))
	putDeadLetter(t, js, in, "x", 1, s)
	in2, s2 := storeInput(t, js, testkit.Lookup("10"))
	putDeadLetter(t, js, in2, "x", 1, s2)
	r = runCLI(t, "", "dlq", "purge", "--all", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "purged 2 dead letters") {
		t.Fatalf("purge --all --yes\n%s", r)
	}
	if got := dlqSeqs(t, js); len(got) != 0 {
		t.Fatalf("DLQ holds %v after purge --all --yes", got)
	}
	if !streamExists(t, js, "PANDAPON_DLQ") {
		t.Error("purge deleted the stream")
	}
	r = runCLI(t, "", "dlq", "purge", "--all", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "no dead letters to purge") {
		t.Errorf("purge of an empty DLQ\n%s", r)
	}
}

// consumerEnv is the real consumer pipeline, in-process, against the
// PandaPon sandbox: it produces genuine dead letters.
type consumerEnv struct {
	sb      *sandbox.Server
	outputs *testkit.Collector
}

func startConsumer(t *testing.T, natsURL string, js jetstream.JetStream) consumerEnv {
	t.Helper()
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: 20})
	client, err := pandapon.New(pandapon.Config{
		BaseURL:     sb.URL,
		Credentials: pandapon.Credentials{AccessKey: sandbox.DefaultAccessKey, AccessSecret: sandbox.DefaultAccessSecret},
		RateLimit:   -1, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	topo := topology.New("pandapon")
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(nc, &handlers.Handler{PandaPon: client, Subjects: topo.Subjects}, pipeline.Config{
		Topology: topo, Concurrency: 4, MaxDeliveries: 2, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		DrainTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("pipeline: %v", err)
			}
			nc.Close()
		})
	})
	testkit.Eventually(t, 10*time.Second, p.Ready, "the pipeline to be ready")
	return consumerEnv{sb: sb, outputs: testkit.Collect(t, js, topo.OutputStream, topo.Subjects.Outputs()...)}
}

// The scenario: PandaPon fails for a refund until the lookup is
// dead-lettered; a replay while it still fails is dead-lettered again;
// once the cause is fixed, replaying yields the refund.updated the
// original would have produced, with the same id, and empties the DLQ.
func TestDLQReplayAfterTheCauseIsFixed(t *testing.T) {
	cleanEnv(t)
	s := testkit.NATS(t)
	t.Setenv("NATS_URL", s.URL)
	_, js := testkit.Connect(t, s.URL)
	env := startConsumer(t, s.URL, js)
	refund := sandbox.GeneratedRefundID(3)
	env.sb.SetRefundFaults(refund, sandbox.Faults{ServerErrorRate: 1})

	r := runCLI(t, "", "lookup", "--refund-id", refund)
	if r.code != 0 {
		t.Fatalf("lookup\n%s", r)
	}
	id := idFromStdout(t, r)
	testkit.Eventually(t, 20*time.Second, func() bool { return len(dlqSeqs(t, js)) == 1 }, "the lookup to be dead-lettered")
	first := dlqSeqs(t, js)[0]

	r = runCLI(t, "", "dlq", "list", "--json")
	l := jsonLines(t, r)
	if len(l) != 1 || l[0]["id"] != id || l[0]["refundId"] != refund || l[0]["deliveries"] != float64(2) ||
		!strings.Contains(fmt.Sprint(l[0]["reason"]), "503") {
		t.Fatalf("list of the genuine dead letter: %v\n%s", l, r)
	}

	// Replayed while PandaPon still fails: dead-lettered again (the DLQ's
	// short duplicate window lets the same message in twice).
	r = runCLI(t, "", "dlq", "replay", "--all")
	if r.code != 0 {
		t.Fatalf("first replay\n%s", r)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		seqs := dlqSeqs(t, js)
		return len(seqs) == 1 && seqs[0] != first
	}, "the replay to be dead-lettered again")
	if n := len(env.outputs.Msgs()); n != 0 {
		t.Fatalf("%d outputs while PandaPon fails", n)
	}

	// The cause is fixed: replay.
	env.sb.SetRefundFaults(refund, sandbox.Faults{})
	r = runCLI(t, "", "dlq", "replay", "--all")
	if r.code != 0 || !strings.Contains(r.stdout, "1 replayed, 0 failed") {
		t.Fatalf("replay after the fix\n%s", r)
	}
	if seqs := dlqSeqs(t, js); len(seqs) != 0 {
		t.Errorf("DLQ holds %v right after the replay", seqs)
	}
	msgs := env.outputs.WaitN(t, 1, 20*time.Second)
	out, err := events.DecodeNATS(msgs[0].Headers(), msgs[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if out.Type() != events.TypeRefundUpdated || out.Subject() != refund {
		t.Errorf("output %s for refund %s, want refund.updated for %s", out.Type(), out.Subject(), refund)
	}
	if want := events.OutputID("pandabridge-publisher", id); out.ID() != want {
		t.Errorf("output id %s, want %s (the id the original input's answer would have had)", out.ID(), want)
	}
	if out.Extensions()[events.ExtCausationID] != id {
		t.Errorf("causationid %v, want %s", out.Extensions()[events.ExtCausationID], id)
	}
	// Settled: acknowledged, nothing dead-lettered again, one output.
	testkit.Eventually(t, 10*time.Second, func() bool {
		info := testkit.ConsumerInfo(t, js, topology.New("pandapon"))
		return info.NumPending == 0 && info.NumAckPending == 0
	}, "every input acknowledged")
	if seqs := dlqSeqs(t, js); len(seqs) != 0 {
		t.Errorf("DLQ holds %v after the successful replay", seqs)
	}
	if n := len(env.outputs.Msgs()); n != 1 {
		t.Errorf("%d outputs, want 1", n)
	}
}

// A dead letter stored without its payload (the input was too large to be
// stored again with the reason headers) must not be replayed as an empty
// input.
func TestDLQReplayRefusesDeadLetterWithoutPayload(t *testing.T) {
	js := dlqSetup(t)
	orig, seq := storeInput(t, js, testkit.Lookup("3"))
	orig.Data = nil
	orig.Header.Set(topology.HeaderDLQPayloadOmitted, "1048376 bytes, too large for a dead letter")
	dl := putDeadLetter(t, js, orig, "invalid input: not a CloudEvent", 1, seq)

	for _, args := range [][]string{{"dlq", "replay", "--all", "--dry-run"}, {"dlq", "replay", strconv.FormatUint(dl, 10)}} {
		r := runCLI(t, "", args...)
		if r.code != 1 {
			t.Fatalf("%v: want exit 1\n%s", args, r)
		}
		mustContain(t, r, "stderr", fmt.Sprintf("%d: not replayed: its payload was left out (Pandabridge-Dlq-Payload-Omitted: 1048376 bytes", dl))
	}
	if seqs := dlqSeqs(t, js); len(seqs) != 1 || seqs[0] != dl {
		t.Errorf("DLQ holds %v, want dead letter %d kept", seqs, dl)
	}
}

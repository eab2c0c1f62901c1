package topology

import (
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Dead-letter headers added to the original message (contract).
const (
	HeaderDLQReason     = "Pandabridge-Dlq-Reason"
	HeaderDLQDeliveries = "Pandabridge-Dlq-Deliveries"
	HeaderDLQStreamSeq  = "Pandabridge-Dlq-Stream-Seq"
	// HeaderDLQPayloadOmitted is set, with the payload's size and why, on
	// the dead letter of an input too large to be stored whole with its
	// reason headers; the payload is then empty and the input is still in
	// its stream at Pandabridge-Dlq-Stream-Seq (until the stream's MaxAge).
	HeaderDLQPayloadOmitted = "Pandabridge-Dlq-Payload-Omitted"
	// HeaderDLQPrefix starts every header that describes the dead-lettering
	// (the three above and any a producer of dead letters adds).
	HeaderDLQPrefix = "Pandabridge-Dlq-"
)

// NewDeadLetter builds the dead letter of a message on subject: the
// original headers and payload byte for byte, minus JetStream publish
// instructions (IsPublishInstruction), plus the reason (control characters
// replaced by spaces, as a header must be one line), the deliveries and,
// when streamSeq is not 0, the message's sequence in its stream.
func NewDeadLetter(subject string, header nats.Header, data []byte, reason string, deliveries int, streamSeq uint64) *nats.Msg {
	dl := nats.NewMsg(subject)
	dl.Data = data
	for k, v := range header {
		if IsPublishInstruction(k) {
			continue
		}
		dl.Header[k] = slices.Clone(v)
	}
	dl.Header.Set(HeaderDLQReason, oneLine(reason))
	dl.Header.Set(HeaderDLQDeliveries, strconv.Itoa(deliveries))
	if streamSeq != 0 {
		dl.Header.Set(HeaderDLQStreamSeq, strconv.FormatUint(streamSeq, 10))
	}
	return dl
}

// IsPublishInstruction reports headers that instruct JetStream at publish
// time (Nats-Expected-Stream, -Last-Sequence, ..., Nats-Rollup, Nats-TTL)
// rather than carry data. Dead letters and replays drop them: the server
// would apply them to the other stream and refuse the message (an expected
// stream of PANDAPON_INPUT can never match PANDAPON_DLQ). Nats-Msg-Id is
// not one of them.
func IsPublishInstruction(header string) bool {
	h := strings.ToLower(header)
	return strings.HasPrefix(h, "nats-expected-") || h == "nats-rollup" || h == "nats-ttl"
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

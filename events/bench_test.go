package events

import (
	"testing"
	"time"
)

func BenchmarkEncodeNATS(b *testing.B) {
	in := inputEvent(b, TypeReturnShipped, goodReturn)
	in.SetExtension(ExtTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	e := NewRefundUpdated(in, "pandabridge", "110002687818", []byte(pandaPonQueryData), time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeNATS("pandapon.refund.updated", e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNATSBinary(b *testing.B) {
	in := inputEvent(b, TypeReturnShipped, goodReturn)
	in.SetExtension(ExtTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	msg, err := EncodeNATS("pandapon.return.shipped", in)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeNATS(msg.Header, msg.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseReturnShipped(b *testing.B) {
	data := []byte(goodReturn)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseReturnShipped(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseInput is the whole hot path of a consumer: decode and
// validate one binary-mode input.
func BenchmarkDecodeAndParseInput(b *testing.B) {
	msg, err := EncodeNATS("pandapon.return.shipped", inputEvent(b, TypeReturnShipped, goodReturn))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		e, err := DecodeNATS(msg.Header, msg.Data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseInput(e); err != nil {
			b.Fatal(err)
		}
	}
}

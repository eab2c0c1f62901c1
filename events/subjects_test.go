package events

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func TestSubjectsFollowTheContract(t *testing.T) {
	s := Subjects{}
	if got := s.Of(TypeRefundLookupRequested); got != "pandapon.refund.lookup.requested" {
		t.Errorf("zero Subjects gives %q; want the default prefix", got)
	}
	if got, want := s.Inputs(), []string{"pandapon.refund.lookup.requested", "pandapon.return.shipped"}; !slices.Equal(got, want) {
		t.Errorf("Inputs() = %v, want %v", got, want)
	}
	if got, want := s.Outputs(), []string{"pandapon.refund.updated", "pandapon.refund.request.failed"}; !slices.Equal(got, want) {
		t.Errorf("Outputs() = %v, want %v", got, want)
	}
	if got := s.DeadLetter("pandapon.return.shipped"); got != "pandapon.dlq.return.shipped" {
		t.Errorf("DeadLetter = %q", got)
	}
	if got := s.DeadLetter("other.thing"); got != "pandapon.dlq.other.thing" {
		t.Errorf("DeadLetter of a foreign subject = %q", got)
	}
	if got := s.DeadLetters(); got != "pandapon.dlq.>" {
		t.Errorf("DeadLetters = %q", got)
	}
	c := Subjects{Prefix: "acme"}
	if got := c.Of(TypeReturnShipped); got != "acme.return.shipped" {
		t.Errorf("custom prefix gives %q", got)
	}
	if got := c.DeadLetter("pandapon.return.shipped"); got != "acme.dlq.pandapon.return.shipped" {
		t.Errorf("another prefix's subject is kept whole: got %q", got)
	}
}

func TestOriginalOfDeadLetterInvertsDeadLetter(t *testing.T) {
	for _, s := range []Subjects{{}, {Prefix: "acme"}} {
		for _, in := range s.Inputs() {
			orig, ok := s.OriginalOfDeadLetter(s.DeadLetter(in))
			if !ok || orig != in {
				t.Errorf("OriginalOfDeadLetter(DeadLetter(%q)) = %q, %v", in, orig, ok)
			}
		}
	}
	for _, bad := range []string{"pandapon.return.shipped", "pandapon.dlq.", "pandapon.dlq", "acme.dlq.return.shipped", ""} {
		if orig, ok := (Subjects{}).OriginalOfDeadLetter(bad); ok {
			t.Errorf("OriginalOfDeadLetter(%q) = %q, true; want false", bad, orig)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	if err := ValidatePrefix("pandapon"); err != nil {
		t.Errorf("default prefix refused: %v", err)
	}
	if err := ValidatePrefix("acme-prod_2"); err != nil {
		t.Errorf("plain token refused: %v", err)
	}
	for _, bad := range []string{"", "a.b", "a*", ">", "a b", "a\tb", "a\x00"} {
		err := ValidatePrefix(bad)
		if err == nil {
			t.Errorf("ValidatePrefix(%q) accepted", bad)
			continue
		}
		if bad != "" && !strings.Contains(err.Error(), "prefix") {
			t.Errorf("error %q does not say what is wrong", err)
		}
	}
}

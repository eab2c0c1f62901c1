package events

import (
	"fmt"
	"strings"
	"unicode"
)

// DefaultSubjectPrefix is the first token of every subject unless
// PANDABRIDGE_SUBJECT_PREFIX says otherwise.
const DefaultSubjectPrefix = "pandapon"

// dlqToken is the token after the prefix that marks dead-letter subjects.
const dlqToken = "dlq"

// Subjects derives every NATS subject of the contract from one prefix:
// "<prefix>.<event type>" for events and "<prefix>.dlq.<input subject
// without the prefix>" for dead letters. The zero value uses
// DefaultSubjectPrefix. The prefix is not checked here: check it once with
// ValidatePrefix when reading the configuration.
type Subjects struct {
	// Prefix is the first subject token; empty means DefaultSubjectPrefix.
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultSubjectPrefix
	}
	return s.Prefix
}

// Of returns the subject of an event type: "pandapon.refund.lookup.requested".
func (s Subjects) Of(eventType string) string {
	return s.prefix() + "." + eventType
}

// Inputs returns the two input subjects, refund.lookup.requested first.
func (s Subjects) Inputs() []string {
	return []string{s.Of(TypeRefundLookupRequested), s.Of(TypeReturnShipped)}
}

// Outputs returns the two output subjects, refund.updated first.
func (s Subjects) Outputs() []string {
	return []string{s.Of(TypeRefundUpdated), s.Of(TypeRefundRequestFailed)}
}

// DeadLetter returns the dead-letter subject of an input subject:
// "pandapon.return.shipped" becomes "pandapon.dlq.return.shipped". A subject
// that does not start with the prefix is kept whole:
// "other.x" becomes "pandapon.dlq.other.x".
func (s Subjects) DeadLetter(inputSubject string) string {
	p := s.prefix()
	rest := inputSubject
	if strings.HasPrefix(inputSubject, p+".") {
		rest = inputSubject[len(p)+1:]
	}
	return p + "." + dlqToken + "." + rest
}

// DeadLetters returns the wildcard matching every dead-letter subject:
// "pandapon.dlq.>".
func (s Subjects) DeadLetters() string {
	return s.prefix() + "." + dlqToken + ".>"
}

// OriginalOfDeadLetter inverts DeadLetter for replay:
// "pandapon.dlq.return.shipped" gives "pandapon.return.shipped", true. It
// reports false for a subject that is not a dead-letter subject of this
// prefix. It assumes the original was under the prefix, as every input
// subject is; DeadLetter of a subject outside the prefix cannot be inverted.
func (s Subjects) OriginalOfDeadLetter(dlqSubject string) (string, bool) {
	head := s.prefix() + "." + dlqToken + "."
	if !strings.HasPrefix(dlqSubject, head) || len(dlqSubject) == len(head) {
		return "", false
	}
	return s.prefix() + "." + dlqSubject[len(head):], true
}

// ValidatePrefix checks that p can be the first token of a NATS subject:
// non-empty, without '.', '*', '>', white space or control characters. The
// error says what to fix.
func ValidatePrefix(p string) error {
	if p == "" {
		return fmt.Errorf("subject prefix is empty; it must be one NATS subject token such as %q", DefaultSubjectPrefix)
	}
	for _, r := range p {
		switch {
		case r == '.':
			return fmt.Errorf("subject prefix %q contains '.'; it must be a single NATS subject token", p)
		case r == '*' || r == '>':
			return fmt.Errorf("subject prefix %q contains the wildcard %q; it must be a literal token", p, r)
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("subject prefix %q contains white space or a control character", p)
		}
	}
	return nil
}

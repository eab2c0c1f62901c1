package redact

import "testing"

func TestURLs(t *testing.T) {
	for in, want := range map[string]string{
		"":                                  "",
		"nats://127.0.0.1:4222":             "nats://127.0.0.1:4222",
		"nats://s3cret-token@nats:4222":     "nats://[REDACTED]@nats:4222",
		"nats://alice:s3cret@nats:4222":     "nats://alice:[REDACTED]@nats:4222",
		"tls://a:p@n1:4222, nats://tok@n2":  "tls://a:[REDACTED]@n1:4222,nats://[REDACTED]@n2",
		"nats://tok%zz@n1":                  "[UNPARSABLE URL]",
		"nats://n1:4222,nats://s3cret@n2:1": "nats://n1:4222,nats://[REDACTED]@n2:1",
		// nats.go reads a URL without a scheme as nats://...
		"alice:s3cret@nats:4222":           "alice:[REDACTED]@nats:4222",
		"s3cret-token@nats":                "[REDACTED]@nats",
		"127.0.0.1:4222, tok@n2:4222":      "127.0.0.1:4222,[REDACTED]@n2:4222",
		"https://user:pw@api.pandapon.com": "https://user:[REDACTED]@api.pandapon.com",
		"nats://a:4222,,tok@b":             "nats://a:4222,,[REDACTED]@b",
		"nats://tok/en-secret@n1:4222":     "[REDACTED URL]",
		"nats://app:4711/abc@nats:4222":    "[REDACTED URL]",
		"nats://a:b@n1/x?y=@z":             "[REDACTED URL]",
	} {
		if got := URLs(in); got != want {
			t.Errorf("URLs(%q) = %q, want %q", in, got, want)
		}
	}
}

package natsconn

import (
	"strings"
	"testing"
)

func TestCheckURLs(t *testing.T) {
	// Everything nats.go connects with is accepted, as nats.go reads it.
	for _, ok := range []string{
		"nats://127.0.0.1:4222", "nats://a:4222, nats://b:4222", "localhost:4222", "nats", "tls://nats.example.com",
		"ws://127.0.0.1:8080", "wss://user:pw@nats.example.com:443", "tok@nats:4222", "nats://[::1]:4222", "[::1]:4222",
		"nats://a:4222,", "a,,b", "a, ,b", "tcp://nats:4222", "NATS://N1:4222", "nats://:4222", "foo://bar",
		"nats://user:p%2Fw@n1:4222",
	} {
		if err := CheckURLs(ok); err != nil {
			t.Errorf("CheckURLs(%q) = %v, want nil", ok, err)
		}
	}
	for _, c := range []struct{ in, want, secret string }{
		{"", "is empty", ""},
		{" , ,", "is empty", ""},
		{"nats://a:4222,nats://tok/en-secret@127.0.0.1:1", "entry 2 has an '@' after its host", "en-secret"},
		{"nats://app:4711/abc@nats:4222", "entry 1 has an '@' after its host", "abc"},
		{"nats://app:Zm9v/x@h", "entry 1 does not parse as a URL", "Zm9v"},
		{"nats://alice:secretpw@127.0.0.1:42x22", "entry 1 does not parse as a URL", "secretpw"},
		{"nats://pw%zz@host:4222", "entry 1 does not parse as a URL", "pw"},
	} {
		err := CheckURLs(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckURLs(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
		if err != nil && c.secret != "" && strings.Contains(err.Error(), c.secret) {
			t.Errorf("CheckURLs(%q) = %v: shows the credential", c.in, err)
		}
	}
}

func TestServersShowsNoCredential(t *testing.T) {
	for in, want := range map[string]string{
		"nats://alice:pw@n1:4222, tok@n2:4222,,tls://n3": "nats://n1:4222,nats://n2:4222,tls://n3",
		"nats://tok/en-secret@127.0.0.1:1":               "",
		"nats://pw%zz@host":                              "",
	} {
		if got := Servers(in); got != want {
			t.Errorf("Servers(%q) = %q, want %q", in, got, want)
		}
	}
}

package natsconn

import (
	"strings"
	"testing"
)

func TestCheckURLsURLs(t *testing.T) {
	for _, ok := range []string{
		"nats://127.0.0.1:4222", "nats://a:4222, nats://b:4222", "localhost:4222", "nats", "tls://nats.example.com",
		"ws://127.0.0.1:8080", "wss://user:pw@nats.example.com:443", "tok@nats:4222", "nats://[::1]:4222",
	} {
		if err := CheckURLs(ok); err != nil {
			t.Errorf("CheckURLs(%q) = %v, want nil", ok, err)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"", "is empty"},
		{"foo://bar", `"foo://bar": scheme "foo" is not nats, tls, ws or wss`},
		{"http://bob:secretpw@host:4222", `"http://bob:[REDACTED]@host:4222": scheme "http"`},
		{"nats://a:4222,", `the list has an empty entry`},
		{"nats://:4222", `"nats://:4222" has no host`},
		{"nats://pw@host:4222/%zz", `is not a URL: invalid URL escape "%zz"`},
		{"nats://alice:secretpw@127.0.0.1:42x22", `"[UNPARSABLE URL]" is not a URL: invalid port ":42x22" after host`},
	} {
		err := CheckURLs(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckURLs(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("CheckURLs(%q) = %v: prints the password", c.in, err)
		}
	}
}

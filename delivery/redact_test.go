package delivery

import (
	"net"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/pandabridge/pandabridge/webhooks"
)

// A failed POST's reason (logged, stored in the dead letter) never shows
// a secret the target URL holds, whatever form net/http quotes it in.
func TestFailedPostNeverShowsTheTargetURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	sec, err := webhooks.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{
		"http://" + addr + "/hook?token=S3CRET",
		"http://hook:pw-S3CRET@" + addr + "/hook?token=S3CRET",
		"HTTP://" + addr + "/hook?token=S3CRET",
	} {
		tg := Target{Name: "t", URL: u, Secret: sec}
		tg.setDefaults()
		w := newWorker(&Deliverer{m: NewMetrics(nil)}, tg)
		e := event.New()
		e.SetID("id-1")
		r := w.post(&job{e: e, header: map[string][]string{}, body: []byte("{}")})
		if r.err == nil {
			t.Fatalf("POST to a closed port succeeded")
		}
		if reason := r.String(); strings.Contains(reason, "S3CRET") {
			t.Errorf("URL %q: reason %q shows the secret", u, reason)
		}
	}
}

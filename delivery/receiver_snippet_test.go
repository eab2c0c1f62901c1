package delivery_test

// The Go receiver snippet of docs/webhooks.md, verbatim (a test checks the
// document holds exactly the text between the markers, and the delivery
// tests verify every delivery with it).

// BEGIN GO SNIPPET
import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// verifyWebhook checks the Standard Webhooks signature of a pandabridge
// delivery: secret is the target's secret ("whsec_..." or raw), h the
// request headers and body the raw request body, read before any parsing.
func verifyWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key := []byte(secret)
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(b64); err != nil {
			return err
		}
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return errors.New("missing or stale webhook-timestamp")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil // then de-duplicate on webhook-id
		}
	}
	return errors.New("no valid webhook-signature")
}

// END GO SNIPPET

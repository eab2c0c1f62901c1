package delivery_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/webhooks"
)

// docBlock returns the first fenced code block of language lang after the
// "### Verifying a delivery" heading of docs/webhooks.md.
func docBlock(t *testing.T, lang string) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "### Verifying a delivery")
	if !ok {
		t.Fatal(`docs/webhooks.md has no "### Verifying a delivery" section`)
	}
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	if !ok {
		t.Fatalf("docs/webhooks.md has no %s snippet", lang)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("unterminated %s snippet", lang)
	}
	return block
}

// signedSample is a delivery as pandabridge signs it.
func signedSample(t *testing.T) (http.Header, []byte) {
	body := []byte(`{"distributorId":1,"refundOrderAggregate":{"refundOrder":{"refundId":"110000303674","refundStatus":20}}}`)
	h := http.Header{}
	webhooks.SetHeaders(h, secret(t), "6f1c1f3e-6a53-5d0e-9a9b-0f3b4a3b8a11", time.Now(), body)
	return h, body
}

// runSnippet runs a documented snippet against a good and a tampered
// delivery: the first must pass, the second fail.
func runSnippet(t *testing.T, interpreter string, program func(headersJSON, body string) string) {
	t.Helper()
	path, err := exec.LookPath(interpreter)
	if err != nil {
		t.Skipf("%s is not installed", interpreter)
	}
	h, body := signedSample(t)
	hj, _ := json.Marshal(map[string]string{
		"webhook-id": h.Get("webhook-id"), "webhook-timestamp": h.Get("webhook-timestamp"), "webhook-signature": h.Get("webhook-signature"),
	})
	if out, err := exec.Command(path, "-e", "").CombinedOutput(); interpreter == "node" && err != nil {
		t.Skipf("node does not run: %s", out)
	}
	arg := "-c"
	if interpreter == "node" {
		arg = "-e"
	}
	if out, err := exec.Command(path, arg, program(string(hj), string(body))).CombinedOutput(); err != nil {
		t.Fatalf("the documented %s snippet refuses a delivery signed by pandabridge: %v\n%s", interpreter, err, out)
	}
	tampered := strings.Replace(string(body), "20", "30", 1)
	if out, err := exec.Command(path, arg, program(string(hj), tampered)).CombinedOutput(); err == nil {
		t.Fatalf("the documented %s snippet accepts a tampered body\n%s", interpreter, out)
	}
}

func TestDocumentedPythonSnippetVerifiesOurSignature(t *testing.T) {
	snippet := docBlock(t, "python")
	runSnippet(t, "python3", func(headers, body string) string {
		return snippet + "\nimport json\nverify_webhook(" + pyString(secretText) + ", json.loads(" + pyString(headers) + "), " +
			pyString(body) + ".encode())\n"
	})
}

func TestDocumentedNodeSnippetVerifiesOurSignature(t *testing.T) {
	snippet := docBlock(t, "js")
	runSnippet(t, "node", func(headers, body string) string {
		return snippet + "\nverifyWebhook(" + jsString(secretText) + ", JSON.parse(" + jsString(headers) + "), Buffer.from(" + jsString(body) + "));\n"
	})
}

// pyString and jsString quote s as a literal (JSON string syntax is valid
// in both languages for this ASCII content).
func pyString(s string) string { b, _ := json.Marshal(s); return string(b) }
func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

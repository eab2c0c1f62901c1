package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/pandabridge/pandabridge/webhooks"
)

// Auth decides whether a request to the ingest may publish. A request is
// allowed when it carries "Authorization: Bearer <token>" with one of the
// tokens, or a valid Standard Webhooks signature (webhook-id,
// webhook-timestamp, webhook-signature) by one of the secrets, whose
// webhook-id has not been accepted before. Tokens are compared in constant
// time (as SHA-256 digests, so that neither content nor length leaks); a
// nil *Auth allows everything.
type Auth struct {
	tokens   [][sha256.Size]byte
	verifier *webhooks.Verifier
}

// NewAuth returns the authenticator for tokens and a signature verifier
// (nil: signatures are not accepted). Empty tokens are ignored.
func NewAuth(tokens []string, verifier *webhooks.Verifier) *Auth {
	a := &Auth{verifier: verifier}
	for _, t := range tokens {
		if t = strings.TrimSpace(t); t != "" {
			a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
		}
	}
	return a
}

// Reasons for refusing a request, the label of
// pandabridge_ingest_auth_failures_total. Never sent to the client.
const (
	authMissing   = "missing_credentials"
	authToken     = "bad_token"
	authSignature = "bad_signature"
	authTimestamp = "bad_timestamp"
	authReplayed  = "replayed"
)

// bearer reports whether the request carries a known bearer token, and
// whether it carries a bearer token at all.
func (a *Auth) bearer(r *http.Request) (ok, present bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return false, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for i := range a.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], a.tokens[i][:])
	}
	return match == 1, true
}

// wantsBody reports whether checking the request needs its body: it has no
// valid bearer token but carries signature headers.
func (a *Auth) wantsBody(r *http.Request) bool {
	return a.verifier != nil && webhooks.HasSignature(r.Header)
}

// check authenticates the request whose body is body. It returns the
// webhook-id to remember once the request succeeded ("" for none) and, on
// refusal, the reason.
func (a *Auth) check(r *http.Request, body []byte) (webhookID string, reason string) {
	if a == nil {
		return "", ""
	}
	ok, present := a.bearer(r)
	if ok {
		return "", ""
	}
	if a.verifier != nil && webhooks.HasSignature(r.Header) {
		id, err := a.verifier.Verify(r.Header, body)
		switch {
		case err == nil:
			return id, ""
		case errors.Is(err, webhooks.ErrReplayed):
			return "", authReplayed
		case errors.Is(err, webhooks.ErrTimestamp):
			return "", authTimestamp
		default:
			return "", authSignature
		}
	}
	if present {
		return "", authToken
	}
	return "", authMissing
}

// remember marks a webhook-id accepted (after the events were stored).
func (a *Auth) remember(id string) {
	if a != nil && a.verifier != nil && id != "" {
		a.verifier.Remember(id)
	}
}

func writeUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="pandabridge"`)
	writeProblem(w, Problem{Type: ProblemUnauthorized, Title: problemTitleUnauthorized, Status: http.StatusUnauthorized})
}

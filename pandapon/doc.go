// Package pandapon is a client for PandaPon's after-sales (refund and
// return) API.
//
// Every request carries PandaPon's five system headers (access-key,
// timestamp, nonce-str, user-id, signature); each attempt is signed afresh
// with a new nonce and timestamp, so retries are never replays. The Access
// Secret is held as a Secret, which prints as "[REDACTED]", and appears in no
// error.
//
// Calls are retried with github.com/hashicorp/go-retryablehttp when they fail
// transiently (network error, attempt timeout, HTTP 429 or 5xx), with
// full-jitter exponential backoff capped by Config.RetryWaitMax and
// Retry-After honoured up to Config.RetryAfterMax. A Client limits itself:
// a token bucket (Config.RateLimit, Config.Burst) and a cap on concurrent
// requests (Config.MaxConcurrent), shared by every goroutine using it.
//
// Results and errors:
//   - success (envelope code 200): a *Response whose Data is the envelope's
//     data exactly as sent (every digit, unknown fields, byte for byte);
//     RefundView reads the few typed fields the product needs, accepting the
//     string-or-number mess of PandaPon's JSON;
//   - *APIError: a business error (code != 200), never retried;
//   - *TransientError: retries used up or the caller's context ended;
//     errors.Is(err, ErrTransient) is true;
//   - *ResponseError: an answer that is not an envelope (it includes the HTTP
//     status and the first bytes of the body); also ErrTransient.
//
// The package sandbox beside this one serves a faithful simulation of the
// API for tests and development.
package pandapon

// Package sandbox simulates PandaPon's after-sales HTTP API in memory, for
// tests and local development: PandaPon has no public sandbox.
//
// A Sandbox is an http.Handler; Start serves one on 127.0.0.1 for tests:
//
//	srv, err := sandbox.Start("", sandbox.Options{GeneratedRefunds: 10})
//	if err != nil { ... }
//	defer srv.Close()
//	// point the client at srv.URL with sandbox.DefaultAccessKey/DefaultAccessSecret
//
// # Endpoints
//
//	GET  /open/order/refund/query?refundId=ID        (PathQuery)
//	POST /open/order/refund/render/submit/logistics  (PathSubmitLogistics)
//	GET  /open/order/refund/cancel/{refundId}        (PathCancel)
//
// Every answer, errors included, is PandaPon's envelope
// {"requestId", "code", "developId", "msg", "data"} with Content-Type
// application/json; only injected faults (see Faults) answer otherwise. A
// successful query has requestId and developId null, like the query page;
// every other answer has a string requestId, and successful submissions and
// cancellations a string developId (DevelopID), like the submission page.
// Business errors arrive with HTTP 200 and a code other than CodeSuccess;
// an unknown path is HTTP 404 and a wrong method HTTP 405, both with an
// envelope.
//
// # Authentication
//
// Each request is checked as PandaPon does, in this order, and refused with
// HTTP 200 and CodeUnauthorized and a message that says what was wrong:
// headers access-key, timestamp, nonce-str and signature present and
// non-empty (user-id is optional); access-key known; timestamp an integer
// in Options.TimestampUnit within pandapon.MaxClockSkew of Options.Now;
// nonce-str exactly pandapon.NonceLength characters; signature equal,
// case-sensitively, to pandapon.Sign. Stricter than PandaPon is known to be,
// a nonce already used with a valid signature within the last
// pandapon.MaxClockSkew is refused as a replay: this proves a client signs
// every attempt afresh.
//
// # Refunds and state machine
//
// The seeds (SeedRefundIDs) reproduce the two published example pages,
// types included; Options.GeneratedRefunds adds return-and-refund refunds at
// status 20 whose JSON types rotate through every variant PandaPon is known
// to send (see GeneratedRefundID). A logistics submission on a
// return-and-refund refund at status 20 records the logistics and moves it
// to status 30, goods status 5. Re-submitting the recorded logisticsNo,
// submitting at another status or on a refund-only refund is
// CodeStateConflict; an unknown refund is CodeNotFound; a missing body field
// is CodeBadRequest. Cancelling a refund at status 10 or 20 closes it (-20).
// Each refund keeps the JSON kinds it started with: a refundStatus sent as
// "20" becomes "30", one sent as 20 becomes 30.
package sandbox

// Package chaos holds pandabridge's fault suite: Go tests that run the real
// consumer binary as separate processes against embedded NATS servers and
// the PandaPon sandbox, inject failures (SIGKILL, SIGTERM under load, a NATS
// restart, a cluster node lost, PandaPon 5xx/429/timeouts/latency, poison
// inputs) and then prove, input by input, that every input produced its
// output exactly once and that no return logistics reached PandaPon twice.
//
// Each test prints one line of figures, e.g.
//
//	chaos: kill: inputs=5000 outputs=5000 lost=0 duplicates=0 dlq=0 recover=2.1s
//
// The default sizes keep the package within a few minutes on two cores with
// the race detector; -chaos.soak multiplies them for a long run:
//
//	go test -race -count=1 ./chaos/                                  # CI
//	go test -count=1 -timeout 60m ./chaos/ -args -chaos.soak         # soak
//	go test -count=1 ./chaos/ -args -chaos.seed=42                   # replay kill moments
//
// The package has no non-test code; docs/reliability.md explains the
// guarantees and records the measured figures.
package chaos

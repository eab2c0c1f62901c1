//go:build nodev

package main

import (
	"errors"
	"log/slog"
)

// devModeBuilt says whether this binary has the -dev mode. Production
// images are built with -tags nodev (see the Dockerfile), which leaves the
// embedded NATS server and the PandaPon sandbox out: a binary a third the
// size, about 4 MB less resident memory, and no broker code in production.
const devModeBuilt = false

// errNoDevMode is what -dev answers in a nodev build (exit status 2).
var errNoDevMode = errors.New("-dev: this consumer was built with -tags nodev, which leaves the embedded NATS server and the PandaPon sandbox out; use `go run ./cmd/consumer -dev` in the repository, or a build without -tags nodev")

func startDev(*Config, devOptions, *slog.Logger) (func(), error) { return nil, errNoDevMode }

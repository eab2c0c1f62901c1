//go:build !nodev

package main

import (
	"fmt"
	"log/slog"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

// devModeBuilt says whether this binary has the -dev mode: true unless
// built with -tags nodev, as production images are (dev_nodev.go).
const devModeBuilt = true

// defaultPublisherNATSURL is the publisher's default NATS_URL: the dev mode's
// hints add NATS_URL when its embedded server listens elsewhere.
const defaultPublisherNATSURL = "nats://127.0.0.1:4222"

// errNoDevMode is returned only by nodev builds.
var errNoDevMode error

// startDev starts the embedded NATS server and the sandbox and points cfg at
// them. The returned function stops both.
func startDev(cfg *Config, dev devOptions, log *slog.Logger) (func(), error) {
	ns, err := embeddednats.Start(embeddednats.Options{Port: dev.natsPort, StoreDir: dev.store})
	if err != nil {
		return nil, fmt.Errorf("dev mode: starting embedded NATS on 127.0.0.1:%d: %w", dev.natsPort, err)
	}
	sb, err := sandbox.Start(dev.sandboxAddr, sandbox.Options{GeneratedRefunds: dev.generated})
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("dev mode: starting the PandaPon sandbox on %s: %w", dev.sandboxAddr, err)
	}
	cfg.NATSURL = ns.URL
	cfg.NATSCreds = ""
	cfg.PandaPonBaseURL = sb.URL
	cfg.PandaPonAccessKey = sandbox.DefaultAccessKey
	cfg.PandaPonAccessSecret = sandbox.DefaultAccessSecret
	cfg.PandaPonTimestampUnit = string(pandapon.Milliseconds)
	log.Info("DEV MODE: embedded NATS and PandaPon sandbox; nothing here talks to the real PandaPon",
		"nats_url", ns.URL, "jetstream_store", ns.StoreDir, "sandbox_url", sb.URL,
		"seed_refunds", "110002687818 110000303674 110000300003",
		"generated_refunds", fmt.Sprintf("%s..%s", sandbox.GeneratedRefundID(0), sandbox.GeneratedRefundID(max(dev.generated-1, 0))))
	publisher := "go run ./cmd/publisher"
	if ns.URL != defaultPublisherNATSURL { // the publisher's default NATS_URL
		publisher = "NATS_URL=" + ns.URL + " " + publisher
	}
	log.Info("DEV MODE: try it", "lookup", publisher+" lookup --refund-id 110002687818",
		"watch", publisher+" watch")
	return func() {
		_ = sb.Close()
		ns.Shutdown()
	}, nil
}

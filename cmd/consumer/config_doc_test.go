package main

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// DocumentedVariables reads README.md's configuration table: variable name
// to its "used by" and "default" cells.
func documentedVariables(t *testing.T) map[string][2]string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| ([^|]*) \\| ([^|]*) \\|").FindAllStringSubmatch(string(readme), -1)
	if len(rows) == 0 {
		t.Fatal("README.md has no configuration table")
	}
	doc := map[string][2]string{}
	for _, m := range rows {
		doc[m[1]] = [2]string{m[2], m[3]}
	}
	return doc
}

// TestEveryVariableIsDocumented keeps README.md's configuration table in
// step with Config: every variable the consumer reads is listed as used by
// the consumer with the code's default, and every row said to be used by the
// consumer is read by it (OpenTelemetry's standard variables are read by its
// SDK).
func TestEveryVariableIsDocumented(t *testing.T) {
	doc := documentedVariables(t)
	read := map[string]bool{}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		f := ct.Field(i)
		name := f.Tag.Get("envconfig")
		read[name] = true
		row, ok := doc[name]
		if !ok || !strings.Contains(row[0], "consumer") {
			t.Errorf("%s (Config.%s) is not in README.md's table as used by the consumer", name, f.Name)
			continue
		}
		if def := f.Tag.Get("default"); def != "" && !strings.Contains(row[1], "`"+def+"`") {
			t.Errorf("README.md gives %s the default %q; the code's default is %q", name, row[1], def)
		}
	}
	for name, row := range doc {
		if strings.Contains(row[0], "consumer") && !read[name] && !strings.HasPrefix(name, "OTEL_") {
			t.Errorf("README.md says the consumer reads %s; it does not", name)
		}
	}
}

func TestPrintConfigRedactsSecrets(t *testing.T) {
	var b strings.Builder
	Config{PandaPonAccessSecret: "hunter2-secret", PandaPonAccessKey: "key", Concurrency: 7,
		NATSURL: "nats://alice:natspw-secret@n1:4222,nats://natstoken-secret@n2:4222"}.Print(&b)
	out := b.String()
	if strings.Contains(out, "hunter2-secret") || strings.Contains(out, "natspw-secret") || strings.Contains(out, "natstoken-secret") {
		t.Errorf("-print-config shows the secret:\n%s", out)
	}
	for _, want := range []string{"PANDAPON_ACCESS_SECRET=[REDACTED]\n", "PANDAPON_ACCESS_KEY=key\n", "PANDABRIDGE_CONCURRENCY=7\n",
		"NATS_URL=nats://alice:[REDACTED]@n1:4222,nats://[REDACTED]@n2:4222\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("-print-config lacks %q:\n%s", want, out)
		}
	}
}

// TestDevPrintConfigSaysWhatDevReplaces: -dev -print-config prints the
// environment's values, and says which of them -dev replaces.
func TestDevPrintConfigSaysWhatDevReplaces(t *testing.T) {
	cmd := exec.Command(bin.consumer, "-dev", "-print-config")
	cmd.Env = baseEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("consumer -dev -print-config: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "# -dev replaces NATS_URL,") {
		t.Errorf("-dev -print-config does not say what -dev replaces:\n%s", out)
	}
}

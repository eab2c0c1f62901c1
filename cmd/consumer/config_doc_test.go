package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestEveryVariableIsDocumented keeps README.md's consumer configuration
// table in step with Config: every variable the program reads is listed
// with its default, and the table lists nothing the program does not read.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "### consumer")
	end := strings.Index(section, "### publisher")
	if start < 0 || end < start {
		t.Fatal(`README.md has no "### consumer" section followed by "### publisher"`)
	}
	section = section[start:end]
	documented := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| ([^|]*) \\|").FindAllStringSubmatch(section, -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}
	read := map[string]bool{}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		f := ct.Field(i)
		name := f.Tag.Get("envconfig")
		read[name] = true
		doc, ok := documented[name]
		if !ok {
			t.Errorf("%s (Config.%s) is not in README.md's consumer table", name, f.Name)
			continue
		}
		if def := f.Tag.Get("default"); def != "" && !strings.Contains(doc, "`"+def+"`") {
			t.Errorf("README.md gives %s the default %q; the code's default is %q", name, doc, def)
		}
	}
	for name := range documented {
		if !read[name] {
			t.Errorf("README.md documents %s, which the consumer does not read", name)
		}
	}
}

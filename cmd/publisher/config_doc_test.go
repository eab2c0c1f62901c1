package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestEveryVariableIsDocumented keeps README.md's configuration table in
// step with the publisher's Config and ServeConfig: every variable it reads
// is listed as used by the publisher, with the code's default.
func TestEveryVariableIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string][2]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| ([^|]*) \\| ([^|]*) \\|").FindAllStringSubmatch(string(readme), -1) {
		doc[m[1]] = [2]string{m[2], m[3]}
	}
	read := map[string]bool{}
	for _, ct := range []reflect.Type{reflect.TypeOf(Config{}), reflect.TypeOf(ServeConfig{})} {
		for i := range ct.NumField() {
			f := ct.Field(i)
			name := f.Tag.Get("envconfig")
			if name == "" {
				continue
			}
			read[name] = true
			row, ok := doc[name]
			if !ok || !strings.Contains(row[0], "publisher") {
				t.Errorf("%s (%s.%s) is not in README.md's table as used by the publisher", name, ct.Name(), f.Name)
				continue
			}
			if def := f.Tag.Get("default"); def != "" && !strings.Contains(row[1], "`"+def+"`") {
				t.Errorf("README.md gives %s the default %q; the code's default is %q", name, row[1], def)
			}
		}
	}
	for name, row := range doc {
		if strings.Contains(row[0], "publisher") && !read[name] {
			t.Errorf("README.md says the publisher reads %s; it does not", name)
		}
	}
}

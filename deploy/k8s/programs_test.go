package k8s_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envVar is one environment variable a program reads.
type envVar struct {
	Name    string
	Type    string // Go type of the field, e.g. "time.Duration"; "string" for os.Getenv
	Default string // the field's default:"…" tag
}

// goRuntimeEnv are variables read by the Go runtime of every program, not by
// its configuration.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true}

// programEnv returns the environment variables cmd/<program> reads, derived
// from its source so that it cannot drift: every `envconfig:"NAME"` struct
// tag and every os.Getenv/os.LookupEnv("NAME") in its non-test files.
func programEnv(t *testing.T, program string) map[string]envVar {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "cmd", program, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in cmd/%s: %v", program, err)
	}
	vars := map[string]envVar{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Field:
				if n.Tag == nil {
					return true
				}
				tag, err := strconv.Unquote(n.Tag.Value)
				if err != nil {
					return true
				}
				st := reflect.StructTag(tag)
				if name, ok := st.Lookup("envconfig"); ok {
					name, _, _ = strings.Cut(name, ",")
					vars[name] = envVar{Name: name, Type: types(n.Type), Default: st.Get("default")}
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || len(n.Args) != 1 {
					return true
				}
				if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "os" || (sel.Sel.Name != "Getenv" && sel.Sel.Name != "LookupEnv") {
					return true
				}
				if lit, ok := n.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					name, _ := strconv.Unquote(lit.Value)
					if _, seen := vars[name]; !seen {
						vars[name] = envVar{Name: name, Type: "string"}
					}
				}
			}
			return true
		})
	}
	return vars
}

func types(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return types(e.X) + "." + e.Sel.Name
	}
	return "?"
}

// checkValue says what is wrong with value as the variable's type, or "".
func (v envVar) checkValue(value string) string {
	var err error
	switch v.Type {
	case "int":
		_, err = strconv.Atoi(value)
	case "float64":
		_, err = strconv.ParseFloat(value, 64)
	case "bool":
		_, err = strconv.ParseBool(value)
	case "time.Duration":
		_, err = time.ParseDuration(value)
	}
	if err != nil {
		return "not a valid " + v.Type + ": " + err.Error()
	}
	return ""
}

func TestProgramEnvIsDerivedFromTheConfigStructs(t *testing.T) {
	// Guards the derivation itself: if these go missing, the key check below
	// would check nothing.
	consumer := programEnv(t, "consumer")
	for _, name := range []string{"NATS_URL", "PANDAPON_ACCESS_SECRET_FILE", "PANDABRIDGE_DRAIN_TIMEOUT", "PANDABRIDGE_HTTP_ADDR"} {
		if _, ok := consumer[name]; !ok {
			t.Errorf("cmd/consumer: %s not found among the variables it reads (%d found)", name, len(consumer))
		}
	}
	if d := consumer["PANDABRIDGE_DRAIN_TIMEOUT"]; d.Type != "time.Duration" || d.Default != "20s" {
		t.Errorf("PANDABRIDGE_DRAIN_TIMEOUT read as %+v, want a time.Duration defaulting to 20s", d)
	}
	publisher := programEnv(t, "publisher")
	if _, ok := publisher["NATS_URL"]; !ok {
		t.Errorf("cmd/publisher: NATS_URL not found among the variables it reads (%d found)", len(publisher))
	}
	// publisher serve's ServeConfig, which components/ingest configures.
	for _, name := range []string{"PANDABRIDGE_INGEST_ADDR", "PANDABRIDGE_INGEST_TOKENS_FILE", "PANDABRIDGE_CALLBACK_TOKEN_FILE", "PANDABRIDGE_WEBHOOK_TARGETS_FILE", "PANDABRIDGE_STREAM_REPLICAS"} {
		if _, ok := publisher[name]; !ok {
			t.Errorf("cmd/publisher: %s not found among the variables it reads (%d found)", name, len(publisher))
		}
	}
	if d := publisher["PANDABRIDGE_DRAIN_TIMEOUT"]; d.Type != "time.Duration" || d.Default != "20s" {
		t.Errorf("cmd/publisher: PANDABRIDGE_DRAIN_TIMEOUT read as %+v, want a time.Duration defaulting to 20s", d)
	}
	if _, ok := publisher["PANDAPON_ACCESS_KEY"]; ok {
		t.Errorf("cmd/publisher reads PANDAPON_ACCESS_KEY? The derivation mixed up the programs")
	}
}

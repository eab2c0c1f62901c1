package main

import (
	"context"
	"strings"
	"testing"
)

func TestBadFlagValuesExit2NamingTheFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-error-rate", "1.5"}, `invalid value "1.5" for flag -error-rate`},
		{[]string{"-malformed-rate", "-0.1"}, `invalid value "-0.1" for flag -malformed-rate`},
		{[]string{"-timestamp-unit", "ns"}, `invalid value "ns" for flag -timestamp-unit`},
		{[]string{"-generate", "-1"}, `invalid value "-1" for flag -generate`},
		{[]string{"-hang", "-1s"}, `invalid value "-1s" for flag -hang`},
		{[]string{"-timeout-rate", "0.6", "-error-rate", "0.6"}, "sum to 1.2"},
		{[]string{"-latency", "fast"}, `invalid value "fast" for flag -latency`},
	} {
		var out, errOut strings.Builder
		code := run(context.Background(), tt.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errOut.String(), tt.want)
		}
	}
}

func TestRunServesUntilCancelledThenExits0(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // shut down right after start
	var out, errOut strings.Builder
	if code := run(ctx, []string{"-addr", "127.0.0.1:0", "-generate", "3"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut.String())
	}
	for _, want := range []string{"http://127.0.0.1:", "sandbox-access-key", "sandbox-access-secret", "110000303674", "120000000000 … 120000000002"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner does not show %q:\n%s", want, out.String())
		}
	}
}

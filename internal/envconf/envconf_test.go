package envconf

import (
	"testing"
	"time"
)

func TestProcessWordsParseErrors(t *testing.T) {
	var spec struct {
		Wait  time.Duration `envconfig:"ENVCONF_TEST_WAIT" default:"1s"`
		Count int           `envconfig:"ENVCONF_TEST_COUNT" default:"1"`
	}
	t.Setenv("ENVCONF_TEST_WAIT", "30")
	if err := Process(&spec); err == nil || err.Error() != `ENVCONF_TEST_WAIT="30": not a valid duration (e.g. "30s", "5m")` {
		t.Errorf("Process = %v", err)
	}
	t.Setenv("ENVCONF_TEST_WAIT", "30s")
	t.Setenv("ENVCONF_TEST_COUNT", "lots")
	if err := Process(&spec); err == nil || err.Error() != `ENVCONF_TEST_COUNT="lots": not a valid integer` {
		t.Errorf("Process = %v", err)
	}
	t.Setenv("ENVCONF_TEST_COUNT", "7")
	if err := Process(&spec); err != nil || spec.Wait != 30*time.Second || spec.Count != 7 {
		t.Errorf("Process = %v, %+v", err, spec)
	}
}

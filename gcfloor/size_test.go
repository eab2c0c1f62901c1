package gcfloor

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"0": 0, "25165824": 24 << 20, "24MiB": 24 << 20, "1536KiB": 1536 << 10,
		"1GiB": 1 << 30, "512B": 512, " 8 MiB ": 8 << 20,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if got, err := ParseSize("1048576GiB"); err != nil || got != MaxSize {
		t.Errorf("ParseSize(1048576GiB) = %d, %v; want MaxSize", got, err)
	}
	for _, in := range []string{"", "-1", "24MB", "24 M", "1.5GiB", "MiB", "1048577GiB", "1125899906842625", "99999999999999999999"} {
		_, err := ParseSize(in)
		if err == nil || !strings.Contains(err.Error(), "\""+in+"\"") {
			t.Errorf("ParseSize(%q): error %v, want one quoting the input", in, err)
		}
	}
}

func TestSizeString(t *testing.T) {
	for s, want := range map[Size]string{0: "0", 24 << 20: "24MiB", 1536 << 10: "1536KiB", 1 << 30: "1GiB", 1000: "1000B"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", uint64(s), got, want)
		}
		back, err := ParseSize(want)
		if err != nil || back != s {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", want, back, err, uint64(s))
		}
	}
}

package gcfloor

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a number of bytes written like GOMEMLIMIT: a non-negative integer
// with an optional unit B, KiB, MiB or GiB ("64MiB", "0", "25165824"; spaces
// around the number and unit are ignored), at most MaxSize. It implements
// encoding.TextUnmarshaler, so configuration loaders such as envconfig read
// it directly.
type Size uint64

// MaxSize is the largest Size ParseSize accepts: 1 PiB, far beyond any heap
// and small enough that the Tuner's arithmetic cannot overflow.
const MaxSize Size = 1 << 50

var units = []struct {
	suffix string
	shift  uint
}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// ParseSize parses s as a Size. The error quotes s and names the accepted units.
func ParseSize(s string) (Size, error) {
	num, shift := strings.TrimSpace(s), uint(0)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, shift = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.shift
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: want a non-negative integer with an optional unit B, KiB, MiB or GiB (e.g. 64MiB)", s)
	}
	if n > uint64(MaxSize)>>shift {
		return 0, fmt.Errorf("%q is too large: at most %s", s, MaxSize)
	}
	return Size(n << shift), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseSize.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// String writes s in the largest unit that divides it exactly ("24MiB",
// "1536KiB", "0").
func (s Size) String() string {
	if s == 0 {
		return "0"
	}
	for _, u := range units {
		if u.shift > 0 && uint64(s)%(1<<u.shift) == 0 {
			return strconv.FormatUint(uint64(s)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(s), 10) + "B"
}

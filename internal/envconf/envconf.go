// Package envconf reads a binary's configuration struct from the
// environment with envconfig, and words its parse errors for the person
// who set the variable: the variable, the value, and what kind of value it
// wants.
package envconf

import (
	"errors"
	"fmt"

	"github.com/kelseyhightower/envconfig"
)

// Process fills spec (a pointer to a struct with envconfig tags, no
// prefix) from the environment. A value that does not parse gives an error
// such as `PANDABRIDGE_ACK_WAIT="30": not a valid duration (e.g. "30s",
// "5m")`; other errors are envconfig's.
func Process(spec any) error {
	err := envconfig.Process("", spec)
	var pe *envconfig.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s=%q: not a valid %s", pe.KeyName, pe.Value, describeType(pe.TypeName))
	}
	return err
}

// describeType names a Go type the way a configuration error should.
func describeType(t string) string {
	switch t {
	case "int", "int64":
		return "integer"
	case "uint32", "uint64":
		return "non-negative integer"
	case "float64":
		return "number"
	case "bool":
		return "boolean (true or false)"
	case "Duration", "time.Duration":
		return `duration (e.g. "30s", "5m")`
	case "gcfloor.Size":
		return `size (e.g. "64MiB", "0")`
	}
	return t
}

package events

import (
	"os"
	"testing"
)

// The contract users build on lives in the steering repository's
// shared/contract.md; docs/contract.md is its twin inside this repository.
// When shared/ is checked out beside the repository (as in CI), the two
// must be identical: a change to the contract is a change to both.
func TestContractTwinMatchesSharedContract(t *testing.T) {
	shared, err := os.ReadFile("../../shared/contract.md")
	if os.IsNotExist(err) {
		t.Skip("../../shared/contract.md not present beside the repository")
	}
	if err != nil {
		t.Fatal(err)
	}
	twin, err := os.ReadFile("../docs/contract.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(shared) != string(twin) {
		t.Error("docs/contract.md differs from shared/contract.md: copy the contract and update the code and README to match")
	}
}

package web_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestEveryErrorCodeIsDocumented: each wire error of protocol, rooms and
// calls has its row, code and reason, in the protocol documents, and no two
// share a code or a reason.
func TestEveryErrorCodeIsDocumented(t *testing.T) {
	var docs strings.Builder
	for _, f := range []string{"PROTOCOL.md", "ROOMS.md", "CALLS.md"} {
		b, err := os.ReadFile("../signaling/" + f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(b)
	}
	all := append(append(append([]*protocol.Error{}, protocol.AllErrors...), rooms.AllErrors...), calls.AllErrors...)
	codes, reasons := map[int]bool{}, map[string]bool{}
	for _, e := range all {
		if codes[e.Code] || reasons[e.Reason] {
			t.Errorf("code %d or reason %s is used twice", e.Code, e.Reason)
		}
		codes[e.Code], reasons[e.Reason] = true, true
		row := fmt.Sprintf("| %d | `%s` |", e.Code, e.Reason)
		if !strings.Contains(docs.String(), row) {
			t.Errorf("error %d %s has no row %q in signaling/*.md", e.Code, e.Reason, row)
		}
	}
}

package configs

import (
	"bytes"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestDefault(t *testing.T) {
	b := Default()
	if len(b) == 0 {
		t.Fatal("embedded switchboard.yaml is empty")
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("embedded switchboard.yaml: %v", err)
	}
	for _, section := range []string{"server", "store", "auth", "signaling", "limits", "log"} {
		if _, ok := doc[section].(map[string]any); !ok {
			t.Errorf("section %q missing", section)
		}
	}
	b[0] ^= 0xff
	if bytes.Equal(b, Default()) {
		t.Error("Default returned shared bytes")
	}
}

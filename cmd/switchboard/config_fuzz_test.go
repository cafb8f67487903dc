package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzConfigFile: any config file content either loads into a config that
// validates, or fails with an error; it never panics.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		"server:\n  addr: \"127.0.0.1:9000\"\n",
		"limits:\n  max_data_bytes: 100\n",
		"signaling:\n  default_timeout: 10s\n  max_timeout: 5s\n",
		"media:\n  nat1to1_ips: [\"1.2.3.4\"]\n",
		"server: [1, 2]\n", "log:\n", ": :\n", "\x00", "a: &x [*x]\n",
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig([]string{"--config", path})
		if err != nil {
			var help *HelpError
			if errors.As(err, &help) {
				t.Fatal("a config file produced --help")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("LoadConfig returned a config that does not validate: %v", err)
		}
	})
}

package main

// Configuration is read once, here, with a local viper, and handed down as
// plain structs: stack.Config, made of each package's own config struct
// (mapstructure tags are the keys). No package below cmd imports viper.
//
// The embedded configs/switchboard.yaml is the single source of defaults,
// of the key list and of the help text (the comment above each key); a test
// of web/stack checks that it and stack.Config agree. Adding a key is one
// commented YAML line plus one tagged field of the owning package (plus a
// rule in stack.Config.Validate when the value needs one); its flag and environment
// variable follow.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/switchboard-rtc/switchboard/configs"
	"github.com/switchboard-rtc/switchboard/web/stack"
)

const (
	programName = "switchboard"
	// configFlag names the flag giving the config file; it is not a key.
	configFlag = "config"
)

// Config is the whole server configuration.
type Config = stack.Config

// HelpError is returned by LoadConfig for -h or --help. It matches
// pflag.ErrHelp; main prints Usage to stdout and exits 0.
type HelpError struct{ Usage string }

func (e *HelpError) Error() string { return pflag.ErrHelp.Error() }
func (e *HelpError) Unwrap() error { return pflag.ErrHelp }

// LoadConfig builds the configuration from, lowest precedence first: the
// embedded configs/switchboard.yaml; the file named by --config (YAML, or
// JSON/TOML by extension), where an unknown key is an error; environment
// variables SWITCHBOARD_<KEY> (dots as underscores; lists comma-separated;
// variables naming no key are ignored); flags named like the keys. It then
// validates the result (stack.Config.Validate).
func LoadConfig(args []string) (Config, error) {
	cfg, err := loadConfig(args)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadConfig is LoadConfig without Validate.
func loadConfig(args []string) (Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(configs.Default())); err != nil {
		return Config{}, fmt.Errorf("embedded default config: %w", err)
	}
	known := v.AllKeys()
	keyFlags, all, err := flagSets(v)
	if err != nil {
		return Config{}, err
	}
	if err := all.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Config{}, &HelpError{Usage: usage(all)}
		}
		return Config{}, stack.KeyError(flagKey(err), "%v (see %s --help)", err, programName)
	}
	if all.NArg() > 0 {
		hint := ""
		if _, err := strconv.ParseBool(all.Arg(0)); err == nil {
			hint = "; boolean flags take their value after '=', as in --auth.dev=false"
		}
		return Config{}, stack.KeyError("", "unexpected argument %q: %s takes only flags%s (see %s --help)", all.Arg(0), programName, hint, programName)
	}
	if path, _ := all.GetString(configFlag); path != "" {
		if err := mergeFile(v, path, known); err != nil {
			return Config{}, err
		}
	}
	v.SetEnvPrefix(programName)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AllowEmptyEnv(true) // SWITCHBOARD_SERVER_ALLOWED_ORIGINS= clears the list
	v.AutomaticEnv()
	if err := v.BindPFlags(keyFlags); err != nil {
		return Config{}, err
	}
	var cfg Config
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(stack.DecodeHook()),
		func(dc *mapstructure.DecoderConfig) { dc.WeaklyTypedInput = false }); err != nil {
		return Config{}, decodeErrors(err)
	}
	return cfg, nil
}

// flagSets returns a flag for every key, typed and documented from the
// embedded YAML, and the command line's flags: those and --config.
func flagSets(v *viper.Viper) (keys, all *pflag.FlagSet, err error) {
	docs, err := keyComments(configs.Default())
	if err != nil {
		return nil, nil, fmt.Errorf("embedded default config: %w", err)
	}
	keys = pflag.NewFlagSet(programName, pflag.ContinueOnError)
	for _, key := range v.AllKeys() {
		switch def := v.Get(key).(type) {
		case bool:
			keys.Bool(key, def, docs[key])
		case int:
			keys.Int(key, def, docs[key])
		case float64:
			keys.Float64(key, def, docs[key])
		case []any:
			list := make([]string, len(def))
			for i, e := range def {
				list[i] = fmt.Sprint(e)
			}
			keys.StringSlice(key, list, docs[key])
		case string:
			if d, err := time.ParseDuration(def); err == nil {
				keys.Duration(key, d, docs[key])
			} else {
				keys.String(key, def, docs[key])
			}
		default:
			return nil, nil, fmt.Errorf("embedded default config: key %q has unsupported default %v", key, def)
		}
	}
	all = pflag.NewFlagSet(programName, pflag.ContinueOnError)
	all.SetOutput(io.Discard) // LoadConfig returns errors and usage instead
	all.Usage = func() {}
	all.String(configFlag, "", "config file (YAML; .json and .toml by extension) overriding the defaults; unknown keys are an error")
	all.AddFlagSet(keys)
	return keys, all, nil
}

// keyComments maps each leaf key of a YAML document to the last line of the
// comment above it.
func keyComments(doc []byte) (map[string]string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil || len(root.Content) == 0 {
		return nil, fmt.Errorf("no YAML document: %v", err)
	}
	out := map[string]string{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if val.Kind == yaml.MappingNode {
				walk(val, prefix+k.Value+".")
				continue
			}
			lines := strings.Split(k.HeadComment, "\n")
			out[prefix+k.Value] = strings.TrimSpace(strings.TrimPrefix(lines[len(lines)-1], "#"))
		}
	}
	walk(root.Content[0], "")
	return out, nil
}

func usage(fs *pflag.FlagSet) string {
	return fmt.Sprintf("Usage: %s [flags]\n\n", programName) +
		"Runs the Switchboard server. Settings come from, lowest precedence first:\n" +
		"built-in defaults (configs/switchboard.yaml), the --config file, environment\n" +
		"variables SWITCHBOARD_<KEY> (dots as underscores: SWITCHBOARD_SERVER_ADDR), flags.\n" +
		"Lists are comma-separated; durations look like 300ms, 30s, 5m, 24h.\n\nFlags:\n" + fs.FlagUsages()
}

// flagKey returns the key of the flag a parse error is about, if any.
func flagKey(err error) string {
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		return invalid.GetFlag().Name
	}
	if required := (*pflag.ValueRequiredError)(nil); errors.As(err, &required) {
		return required.GetFlag().Name
	}
	return ""
}

// mergeFile merges the --config file into v after checking that it names
// only known keys.
func mergeFile(v *viper.Viper, path string, known []string) error {
	typ := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	if !slices.Contains([]string{"json", "toml", "yaml", "yml"}, typ) {
		typ = "yaml"
	}
	fv := viper.New()
	fv.SetConfigFile(path)
	fv.SetConfigType(typ)
	if err := fv.ReadInConfig(); err != nil {
		return stack.KeyError(configFlag, "config file %s: %v", path, err)
	}
	var errs []error
	for _, key := range fv.AllKeys() {
		switch {
		case slices.Contains(known, key) && fv.Get(key) == nil:
			errs = append(errs, stack.KeyError(key, "config key %q in %s: want a value, got nothing", key, path))
			continue
		case slices.Contains(known, key), fv.Get(key) == nil && slices.ContainsFunc(known, func(k string) bool { return strings.HasPrefix(k, key+".") }):
			continue // a key, or a section with every key commented out
		}
		msg := fmt.Sprintf("unknown config key %q in %s", key, path)
		if near := suggest(key, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", near)
		}
		errs = append(errs, stack.KeyError(key, "%s", msg))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	v.SetConfigFile(path)
	v.SetConfigType(typ)
	if err := v.MergeInConfig(); err != nil {
		return stack.KeyError(configFlag, "config file %s: %v", path, err)
	}
	return nil
}

// suggest returns the known key an unknown one was probably meant to be: a
// key it nests under, one with the same name in another section, or the one
// of its section sharing the longest start (at least 2 characters).
func suggest(key string, known []string) string {
	section, leaf, _ := strings.Cut(key, ".")
	best, bestLen := "", 1
	for _, k := range known {
		ks, kl, _ := strings.Cut(k, ".")
		if strings.HasPrefix(key, k+".") || leaf != "" && kl == leaf {
			return k
		}
		n := 0
		for n < min(len(leaf), len(kl)) && leaf[n] == kl[n] {
			n++
		}
		if ks == section && n > bestLen {
			best, bestLen = k, n
		}
	}
	return best
}

// decodeErrors turns viper's decoding errors into ConfigErrors naming the
// key (and the environment variable, when one is set for it).
func decodeErrors(err error) error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case *mapstructure.DecodeError:
			key, _, _ := strings.Cut(u.Name(), "[")
			msg := fmt.Sprintf("%s: invalid value: %v", key, u.Unwrap())
			if env := envName(key); os.Getenv(env) != "" {
				msg += " (from environment variable " + env + ")"
			}
			out = append(out, stack.KeyError(key, "%s", msg))
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		default:
			out = append(out, stack.KeyError("", "%v", e))
		}
	}
	walk(err)
	return errors.Join(out...)
}

func envName(key string) string {
	return strings.ToUpper(programName + "_" + strings.ReplaceAll(key, ".", "_"))
}

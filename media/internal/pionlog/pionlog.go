// Package pionlog adapts log/slog to the pion/logging interfaces, so that
// Pion's internal messages go to the logger the application injected.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Factory returns a pion LoggerFactory writing to log. Pion's messages below
// minLevel are dropped before they are formatted; Pion is chatty at info and
// below, so callers usually pass slog.LevelWarn.
func Factory(log *slog.Logger, minLevel slog.Level) logging.LoggerFactory {
	return &factory{log: log, min: minLevel}
}

type factory struct {
	log *slog.Logger
	min slog.Level
}

func (f *factory) NewLogger(scope string) logging.LeveledLogger {
	return &logger{log: f.log.With("pion", scope), min: f.min}
}

type logger struct {
	log *slog.Logger
	min slog.Level
}

// levelTrace is below slog.LevelDebug; Pion's trace messages map to it.
const levelTrace = slog.LevelDebug - 4

func (l *logger) emit(level slog.Level, msg string) {
	if level < l.min {
		return
	}
	l.log.Log(context.Background(), level, msg)
}

func (l *logger) emitf(level slog.Level, format string, args ...any) {
	if level < l.min || !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (l *logger) Trace(msg string)                  { l.emit(levelTrace, msg) }
func (l *logger) Tracef(format string, args ...any) { l.emitf(levelTrace, format, args...) }
func (l *logger) Debug(msg string)                  { l.emit(slog.LevelDebug, msg) }
func (l *logger) Debugf(format string, args ...any) { l.emitf(slog.LevelDebug, format, args...) }
func (l *logger) Info(msg string)                   { l.emit(slog.LevelInfo, msg) }
func (l *logger) Infof(format string, args ...any)  { l.emitf(slog.LevelInfo, format, args...) }
func (l *logger) Warn(msg string)                   { l.emit(slog.LevelWarn, msg) }
func (l *logger) Warnf(format string, args ...any)  { l.emitf(slog.LevelWarn, format, args...) }
func (l *logger) Error(msg string)                  { l.emit(slog.LevelError, msg) }
func (l *logger) Errorf(format string, args ...any) { l.emitf(slog.LevelError, format, args...) }

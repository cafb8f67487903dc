package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// promSample is one sample line of Prometheus's text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape is the samples of one or more servers' /metrics.
type scrape []promSample

// parseMetrics reads the sample lines of Prometheus's text format
// (label values without escaped quotes or commas, as Switchboard's are).
func parseMetrics(text string) (scrape, error) {
	var out scrape
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s := promSample{name: line[:i], value: v}
		if name, rest, ok := strings.Cut(s.name, "{"); ok {
			s.name, s.labels = name, map[string]string{}
			for kv := range strings.SplitSeq(strings.TrimSuffix(rest, "}"), ",") {
				if k, val, ok := strings.Cut(kv, "="); ok {
					s.labels[k] = strings.Trim(val, `"`)
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// sum adds the samples of name whose labels include match.
func (sc scrape) sum(name string, match map[string]string) float64 {
	var t float64
	for _, s := range sc {
		if s.name == name && matches(s.labels, match) {
			t += s.value
		}
	}
	return t
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// has reports whether any sample is named name.
func (sc scrape) has(name string) bool {
	return slices.ContainsFunc(sc, func(s promSample) bool { return s.name == name })
}

// labelValues is the sorted distinct values of label among name's samples.
func (sc scrape) labelValues(name, label string) []string {
	var out []string
	for _, s := range sc {
		if v, ok := s.labels[label]; ok && s.name == name && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// scrapeAll reads every server's /metrics (a child serves it on its own
// port) and returns the samples together.
func scrapeAll(ctx context.Context, srvs []*server) (scrape, error) {
	var all scrape
	for _, s := range srvs {
		sc, err := s.metrics(ctx)
		if err != nil {
			return nil, err
		}
		all = append(all, sc...)
	}
	return all, nil
}

// settledScrape scrapes until the counters read (relayed messages and
// requests) stop changing between two scrapes settleTimeout/10 apart, or
// settleTimeout passes: the last messages of a call (exits, closes) are
// relayed after the bench saw its replies.
func settledScrape(ctx context.Context, srvs []*server) (scrape, error) {
	deadline := time.Now().Add(settleTimeout)
	prev, err := scrapeAll(ctx, srvs)
	for err == nil {
		if !sleepUntil(ctx, time.Now().Add(settleTimeout/10)) {
			return nil, ctx.Err()
		}
		var cur scrape
		if cur, err = scrapeAll(ctx, srvs); err != nil {
			break
		}
		same := cur.sum(metricRelay, nil) == prev.sum(metricRelay, nil) && cur.sum(metricRequests, nil) == prev.sum(metricRequests, nil)
		prev = cur
		if same || time.Now().After(deadline) {
			return cur, nil
		}
	}
	return nil, err
}

// metrics reads a child server's /metrics.
func (s *server) metrics(ctx context.Context) (scrape, error) {
	if s.pid == 0 {
		return nil, errors.New("metrics: the in-process server does not serve /metrics to the bench")
	}
	base := strings.TrimSuffix(strings.Replace(s.wsURL, "ws://", "http://", 1), "/ws")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", base, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics of %s: %s", base, res.Status)
	}
	var b strings.Builder
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", base, err)
	}
	return parseMetrics(b.String())
}

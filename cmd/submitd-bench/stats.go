package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"submitd/internal/delivery"
)

// recorder collects latencies and errors from many goroutines.
type recorder struct {
	// mu guards the fields below.
	mu sync.Mutex
	// lat holds one latency per successful operation.
	lat []time.Duration
	// errs counts failures by errorKey.
	errs map[string]int
}

func newRecorder() *recorder { return &recorder{errs: map[string]int{}} }

// ok records a success that took d.
func (r *recorder) ok(d time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
}

// fail records a failure under its key.
func (r *recorder) fail(err error) {
	k := errorKey(err)
	r.mu.Lock()
	r.errs[k]++
	r.mu.Unlock()
}

// count is the number of successes so far.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lat)
}

// summary is the distribution of the recorded latencies.
func (r *recorder) summary() latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	return summarize(r.lat)
}

// errors is a copy of the error counts.
func (r *recorder) errors() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.errs))
	for k, v := range r.errs {
		m[k] = v
	}
	return m
}

// errorKey classifies a failure for the error table: an unexpected reply by
// its code and enhanced code, a network failure by what happened, so that
// "421 4.7.0" (too many connections) and "reset" (the server dropped us)
// are told apart.
func errorKey(err error) string {
	var re *replyError
	var ne net.Error
	var oe *net.OpError
	var re2 tls.RecordHeaderError
	switch {
	case errors.As(err, &re):
		return replyKey(re.rep)
	case errors.Is(err, errSetup):
		return "no connection (see setup errors)"
	case errors.Is(err, delivery.ErrBadReply):
		return "malformed reply"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed by server"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset by server"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local address"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "out of file descriptors"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &re2), strings.HasPrefix(err.Error(), "tls handshake"):
		return "tls handshake failed"
	case errors.As(err, &oe):
		return "network: " + oe.Op
	}
	return "other: " + err.Error()
}

// latency describes a set of durations in milliseconds.
type latency struct {
	// N is how many there are.
	N int `json:"n"`
	// P50, P90 and P99 are nearest-rank percentiles.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	// Max is the largest.
	Max float64 `json:"max_ms"`
}

// summarize computes the percentiles of ds (which it sorts).
func summarize(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return latency{
		N:   len(ds),
		P50: ms(percentile(ds, 50)),
		P90: ms(percentile(ds, 90)),
		P99: ms(percentile(ds, 99)),
		Max: ms(ds[len(ds)-1]),
	}
}

// percentile is the nearest-rank p-th percentile of the sorted ds: the
// smallest value with at least p% of the values at or below it. Unlike
// interpolation it is always a latency that was measured.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// median is the middle value of xs (the mean of the middle two for an even
// count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

package faas

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryPolicy says how often and how fast a call is retried. Zero fields take
// the values of [DefaultRetryPolicy]; MaxAttempts 1 disables retries.
type RetryPolicy struct {
	// MaxAttempts is the most HTTP attempts of one call, the first included.
	MaxAttempts int
	// InitialBackoff is the delay before the first retry.
	InitialBackoff time.Duration
	// MaxBackoff caps the exponential delay.
	MaxBackoff time.Duration
	// Multiplier grows the delay after every retry.
	Multiplier float64
	// Jitter is the fraction of each delay that is randomized, in [0, 1]:
	// the delay is drawn uniformly from [d*(1-Jitter), d]. Negative means none.
	Jitter float64
	// MaxRetryAfter is the longest Retry-After the client waits for; a longer
	// one ends the call with the overload error instead of a retry.
	MaxRetryAfter time.Duration
	// FailoverCooldown is how long an endpoint that failed to connect is tried
	// only after the others.
	FailoverCooldown time.Duration
}

// DefaultRetryPolicy returns 4 attempts (as many as the platform's own client
// makes), 100 ms doubling up to 2 s with 50 % jitter, Retry-After honoured up
// to 30 s, and a 5 s failover cooldown.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:      4,
		InitialBackoff:   100 * time.Millisecond,
		MaxBackoff:       2 * time.Second,
		Multiplier:       2,
		Jitter:           0.5,
		MaxRetryAfter:    30 * time.Second,
		FailoverCooldown: 5 * time.Second,
	}
}

// withDefaults fills the zero fields.
func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.MaxBackoff < p.InitialBackoff {
		p.MaxBackoff = p.InitialBackoff
	}
	if p.Multiplier < 1 {
		p.Multiplier = d.Multiplier
	}
	if p.Jitter == 0 {
		p.Jitter = d.Jitter
	}
	if p.Jitter < 0 {
		p.Jitter = 0
	}
	if p.Jitter > 1 {
		p.Jitter = 1
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = d.MaxRetryAfter
	}
	if p.FailoverCooldown <= 0 {
		p.FailoverCooldown = d.FailoverCooldown
	}
	return p
}

// backoff returns the delay before retry number n (1-based), jittered with
// r drawn from [0, 1).
func (p RetryPolicy) backoff(n int, r float64) time.Duration {
	d := float64(p.InitialBackoff)
	for i := 1; i < n && d < float64(p.MaxBackoff); i++ {
		d *= p.Multiplier
	}
	if d > float64(p.MaxBackoff) {
		d = float64(p.MaxBackoff)
	}
	return time.Duration(d * (1 - p.Jitter*r))
}

// maxRetryAfterSeconds bounds a parsed Retry-After so the duration cannot overflow.
const maxRetryAfterSeconds = 24 * 60 * 60

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when the header is absent or unreadable.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > maxRetryAfterSeconds {
			secs = maxRetryAfterSeconds
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(value); err == nil {
		if d := at.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

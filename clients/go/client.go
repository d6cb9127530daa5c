package faas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Version is this client's version, sent in the User-Agent header.
const Version = "0.1.0"

// maxBodyBytes bounds how much of an answer is read.
const maxBodyBytes = 64 << 20

// Client calls the service. It is safe for concurrent use.
type Client struct {
	endpoints []*endpoint
	http      *http.Client
	apiKey    string
	userAgent string
	policy    RetryPolicy
	next      atomic.Uint64

	// Hooks replaced by tests so that retry timing is observed, not waited.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	rand  func() float64
}

// endpoint is one base URL and what recent calls learned about it.
type endpoint struct {
	base string

	mu        sync.Mutex
	downUntil time.Time // failed to connect: tried after the others until then
	notBefore time.Time // asked to wait (Retry-After) until then
}

// Option configures a [Client].
type Option func(*Client)

// WithAPIKey sends key with every request, as "Authorization: Bearer <key>"
// and as "X-API-Key: <key>".
func WithAPIKey(key string) Option {
	return func(c *Client) { c.apiKey = key }
}

// WithHTTPClient makes the client send its requests through hc (for its
// transport, TLS settings or per-attempt Timeout). The default is a client
// without a timeout: bound calls with the context's deadline.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithRetryPolicy replaces [DefaultRetryPolicy]; zero fields keep their defaults.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(c *Client) { c.policy = p.withDefaults() }
}

// WithUserAgent replaces the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// New returns a client of the instances at baseURL: one URL such as
// "http://faas:8000", or several separated by commas, which are used
// round-robin with failover.
func New(baseURL string, opts ...Option) (*Client, error) {
	var bases []string
	for _, part := range strings.Split(baseURL, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		base, err := normalizeBaseURL(part)
		if err != nil {
			return nil, err
		}
		bases = append(bases, base)
	}
	if len(bases) == 0 {
		return nil, &Error{Kind: KindBadInput, Message: "expected at least one base URL such as http://host:8000, got an empty string"}
	}
	c := &Client{
		http:      &http.Client{},
		userAgent: "faas-sandbox-go/" + Version,
		policy:    DefaultRetryPolicy(),
		now:       time.Now,
		sleep:     sleepContext,
		rand:      lockedRand(),
	}
	for _, base := range bases {
		c.endpoints = append(c.endpoints, &endpoint{base: base})
	}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

// normalizeBaseURL checks that raw is an absolute http(s) URL and drops a
// trailing slash, so that paths can be appended.
func normalizeBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", &Error{Kind: KindBadInput, Message: fmt.Sprintf("expected a base URL such as http://host:8000, got %q", raw)}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", &Error{Kind: KindBadInput, Message: fmt.Sprintf("expected a base URL without query or fragment, got %q", raw)}
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// BaseURLs returns the instances this client calls, in round-robin order.
func (c *Client) BaseURLs() []string {
	out := make([]string, len(c.endpoints))
	for i, ep := range c.endpoints {
		out[i] = ep.base
	}
	return out
}

// CloseIdleConnections closes the idle connections of the HTTP client.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// RunCode runs req.Code and returns the result of the run. A run that was
// started returns a [*Result] and a nil error whatever the code did; check
// [Result.Err] for timeouts, memory limits and crashes. Failures to get the
// code run are returned as an [*Error] and the result is nil.
func (c *Client) RunCode(ctx context.Context, req Request) (*Result, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, &Error{Kind: KindBadInput, Message: "request is not encodable as JSON", Err: err}
	}
	var wire struct {
		Output   *Output   `json:"output"`
		Metadata *Metadata `json:"metadata"`
		Error    string    `json:"error"`
	}
	if err := c.call(ctx, http.MethodPost, "/run_code", body, &wire); err != nil {
		return nil, err
	}
	if wire.Output == nil {
		return nil, &Error{Kind: KindProtocol, StatusCode: http.StatusOK, Message: "answer has no output object"}
	}
	return &Result{Output: *wire.Output, Metadata: wire.Metadata, Error: wire.Error}, nil
}

// ValidateCode checks the syntax of code without running it. An invalid
// program is a [*Validation] with Valid false and a nil error.
func (c *Client) ValidateCode(ctx context.Context, language, code string) (*Validation, error) {
	body, err := json.Marshal(struct {
		Language string `json:"language"`
		Code     string `json:"code"`
	}{language, code})
	if err != nil {
		return nil, &Error{Kind: KindBadInput, Message: "request is not encodable as JSON", Err: err}
	}
	var v Validation
	if err := c.call(ctx, http.MethodPost, "/validate_code", body, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Health asks the instances, in round-robin order, until one answers
// healthy, and returns its report. Health probes are not retried on the same
// instance. When none is healthy, the error is KindUnavailable (or the kind of
// the last answer) and the report of the last instance that sent one is
// returned with it.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	start := c.nextStart()
	var lastErr *Error
	var lastHealth *Health
	for k := range c.endpoints {
		ep := c.endpoints[(start+k)%len(c.endpoints)]
		code, _, body, err := c.once(ctx, ep, http.MethodGet, "/health", nil)
		if err != nil {
			if ctx.Err() != nil {
				return lastHealth, contextError(ctx, k+1, ep.base, lastErr)
			}
			ep.markDown(c.now().Add(c.policy.FailoverCooldown))
			lastErr = &Error{Kind: KindUnavailable, URL: ep.base, Attempts: k + 1, Message: "could not reach the service", Err: err}
			continue
		}
		var h Health
		decodeErr := json.Unmarshal(body, &h)
		if decodeErr == nil {
			h.Raw = append(json.RawMessage(nil), body...)
			lastHealth = &h
		}
		if code == http.StatusOK && decodeErr == nil && h.Healthy() {
			ep.markUp()
			return &h, nil
		}
		switch {
		case code == http.StatusOK && decodeErr != nil:
			lastErr = &Error{Kind: KindProtocol, StatusCode: code, URL: ep.base, Attempts: k + 1, Message: "health report is not the expected JSON", Err: decodeErr}
		case decodeErr == nil && h.Status != "":
			lastErr = &Error{Kind: KindUnavailable, StatusCode: code, URL: ep.base, Attempts: k + 1, Message: fmt.Sprintf("service reports status %q", h.Status)}
		default:
			lastErr = statusError(code, body, ep.base, k+1)
		}
	}
	return lastHealth, lastErr
}

// nextStart returns the endpoint where the next call starts its round.
func (c *Client) nextStart() int {
	return int((c.next.Add(1) - 1) % uint64(len(c.endpoints)))
}

// call sends one logical request with retries and failover and decodes a 200
// answer into out.
func (c *Client) call(ctx context.Context, method, path string, body []byte, out any) error {
	n := len(c.endpoints)
	start := c.nextStart()
	tried := make([]bool, n)
	backoffs := 0
	var last *Error
	for attempt := 1; ; attempt++ {
		i, wait := c.pick(start, tried)
		ep := c.endpoints[i]
		if attempt > 1 {
			delay := wait
			if tried[i] {
				// Same instance again: back off. A fresh instance is tried at once.
				backoffs++
				if b := c.policy.backoff(backoffs, c.rand()); b > delay {
					delay = b
				}
			}
			if wait > c.policy.MaxRetryAfter {
				last.Message += fmt.Sprintf(" (not retried: the service asked to wait %v, more than the policy's MaxRetryAfter)", wait.Round(time.Millisecond))
				return last
			}
			if deadline, ok := ctx.Deadline(); ok && !c.now().Add(delay).Before(deadline) {
				last.Message += fmt.Sprintf(" (not retried: the next attempt, in %v, would be past the context's deadline)", delay.Round(time.Millisecond))
				return last
			}
			if delay > 0 {
				if err := c.sleep(ctx, delay); err != nil {
					return contextError(ctx, attempt-1, last.URL, last)
				}
			}
		}
		tried[i] = true

		code, header, respBody, err := c.once(ctx, ep, method, path, body)
		if err != nil {
			if ctx.Err() != nil {
				return contextError(ctx, attempt, ep.base, last)
			}
			ep.markDown(c.now().Add(c.policy.FailoverCooldown))
			last = &Error{Kind: KindUnavailable, URL: ep.base, Attempts: attempt, Message: "could not reach the service", Err: err}
		} else if code == http.StatusOK {
			ep.markUp()
			if err := json.Unmarshal(respBody, out); err != nil {
				// The code may have run: never retried.
				return &Error{Kind: KindProtocol, StatusCode: code, URL: ep.base, Attempts: attempt, Message: "answer is not the contract's JSON", Err: err}
			}
			return nil
		} else {
			last = statusError(code, respBody, ep.base, attempt)
			if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
				last.RetryAfter = parseRetryAfter(header.Get("Retry-After"), c.now())
				ep.waitUntil(c.now().Add(last.RetryAfter))
			}
			if !retryableStatus(code) {
				return last
			}
		}
		if attempt >= c.policy.MaxAttempts {
			return last
		}
	}
}

// once makes one HTTP attempt and reads the whole answer.
func (c *Client) once(ctx context.Context, ep *endpoint, method, path string, body []byte) (int, http.Header, []byte, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, ep.base+path, reader)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
		req.Header.Set("X-API-Key", c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, respBody, nil
}

// pick chooses the endpoint of the next attempt, starting the round-robin at
// start: reachable before recently unreachable, ready before asked-to-wait,
// untried (in this call) before tried; it returns how long the endpoint asked
// to wait.
func (c *Client) pick(start int, tried []bool) (int, time.Duration) {
	now := c.now()
	n := len(c.endpoints)
	best := -1
	var bestKey [4]int64
	var bestWait time.Duration
	for k := 0; k < n; k++ {
		i := (start + k) % n
		down, wait := c.endpoints[i].state(now)
		key := [4]int64{boolInt(down), boolInt(wait > 0), boolInt(tried[i]), int64(wait)}
		if best < 0 || less(key, bestKey) {
			best, bestKey, bestWait = i, key, wait
		}
	}
	return best, bestWait
}

func less(a, b [4]int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func (ep *endpoint) state(now time.Time) (down bool, wait time.Duration) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	down = now.Before(ep.downUntil)
	if now.Before(ep.notBefore) {
		wait = ep.notBefore.Sub(now)
	}
	return down, wait
}

func (ep *endpoint) markDown(until time.Time) {
	ep.mu.Lock()
	ep.downUntil = until
	ep.mu.Unlock()
}

func (ep *endpoint) markUp() {
	ep.mu.Lock()
	ep.downUntil = time.Time{}
	ep.mu.Unlock()
}

func (ep *endpoint) waitUntil(t time.Time) {
	ep.mu.Lock()
	if t.After(ep.notBefore) {
		ep.notBefore = t
	}
	ep.mu.Unlock()
}

// statusError builds the error of an answer that is not 200 from its body.
func statusError(code int, body []byte, base string, attempt int) *Error {
	e := &Error{Kind: kindForStatus(code), StatusCode: code, URL: base, Attempts: attempt}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		e.Message = eb.Error
		if len(eb.Details) > 0 && string(eb.Details) != "null" {
			e.Details = eb.Details
		}
	} else {
		e.Message = http.StatusText(code)
	}
	return e
}

// contextError reports that ctx ended, keeping the last failure as context.
func contextError(ctx context.Context, attempts int, base string, last *Error) *Error {
	kind := KindCanceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		kind = KindTimeout
	}
	msg := "the context ended before the service answered"
	if last != nil {
		msg += " (last failure: " + last.Error() + ")"
	}
	return &Error{Kind: kind, URL: base, Attempts: attempts, Message: msg, Err: ctx.Err()}
}

// sleepContext waits d or until ctx ends.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lockedRand returns a goroutine-safe source of floats in [0, 1).
func lockedRand() func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

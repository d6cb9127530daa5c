package faas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// okBody is a 200 answer as the contract specifies it.
const okBody = `{"output":{"stdout":"Hello World\n","stderr":"","ret_val":"42"},
"metadata":{"task_id":"t1","instance_id":"js-1","language":"javascript","status":"success",
"exit_code":0,"duration":3,"queue_time":0,"truncated":false,
"pool_stats":{"totalInstances":10,"idleInstances":9,"activeInstances":1}},"error":""}`

// clock is a fake clock advanced only by the client's sleeps, which it records.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

func (c *clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// newTestClient returns a client whose waits are recorded by a fake clock and
// whose jitter draws r.
func newTestClient(t *testing.T, baseURL string, r float64, opts ...Option) (*Client, *clock) {
	t.Helper()
	c, err := New(baseURL, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", baseURL, err)
	}
	clk := &clock{now: time.Now()}
	c.now = clk.Now
	c.sleep = clk.Sleep
	c.rand = func() float64 { return r }
	return c, clk
}

// scripted serves the given answers in order, then the last one forever, and
// counts requests.
type scripted struct {
	answers []answer
	count   atomic.Int64
	mu      sync.Mutex
	bodies  []string
	headers []http.Header
}

type answer struct {
	code       int
	body       string
	retryAfter string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(s.count.Add(1)) - 1
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	s.headers = append(s.headers, r.Header.Clone())
	s.mu.Unlock()
	if n >= len(s.answers) {
		n = len(s.answers) - 1
	}
	a := s.answers[n]
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.code)
	_, _ = io.WriteString(w, a.body)
}

func serve(t *testing.T, answers ...answer) (*httptest.Server, *scripted) {
	t.Helper()
	s := &scripted{answers: answers}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, s
}

// deadURL returns a URL where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestRunCodeSendsTheContractRequestAndDecodesTheResult(t *testing.T) {
	srv, s := serve(t, answer{200, okBody, ""})
	c, _ := newTestClient(t, srv.URL, 0, WithAPIKey("k3y"))
	res, err := c.RunCode(context.Background(), Request{
		Language: "js", Code: "return 42;", TimeoutMS: 5000, Priority: PriorityHigh,
		Input: map[string]int{"a": 1}, Ext: map[string]string{"space_id": "123"},
	})
	if err != nil {
		t.Fatalf("RunCode: %v", err)
	}
	if res.Output.Stdout != "Hello World\n" || res.Output.RetVal != "42" || res.Output.Stderr != "" {
		t.Errorf("output = %+v", res.Output)
	}
	m := res.Metadata
	if m == nil || m.Status != StatusSuccess || m.TaskID != "t1" || m.InstanceID != "js-1" || m.Duration != 3 ||
		m.ExitCode != 0 || m.PoolStats == nil || m.PoolStats.TotalInstances != 10 {
		t.Errorf("metadata = %+v", m)
	}
	if res.Err() != nil {
		t.Errorf("Err() = %v, want nil", res.Err())
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(s.bodies[0]), &sent); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"language": "js", "code": "return 42;", "timeout": 5000.0, "priority": "high",
		"input": map[string]any{"a": 1.0}, "ext": map[string]any{"space_id": "123"}}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("sent %v, want %v", sent, want)
	}
	h := s.headers[0]
	if h.Get("Content-Type") != "application/json" || h.Get("Authorization") != "Bearer k3y" || h.Get("X-API-Key") != "k3y" {
		t.Errorf("headers = %v", h)
	}
}

func TestRunCodeOmitsOptionalFields(t *testing.T) {
	srv, s := serve(t, answer{200, okBody, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	if _, err := c.RunCode(context.Background(), Request{Language: "python", Code: "print(1)"}); err != nil {
		t.Fatal(err)
	}
	if s.bodies[0] != `{"language":"python","code":"print(1)"}` {
		t.Errorf("body = %s", s.bodies[0])
	}
	if s.headers[0].Get("Authorization") != "" || s.headers[0].Get("X-API-Key") != "" {
		t.Errorf("sent an API key without one configured: %v", s.headers[0])
	}
}

func TestRetriesTransientAnswersThenSucceeds(t *testing.T) {
	for _, code := range []int{502, 503, 504, 429} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			fail := answer{code, `{"error":"busy"}`, ""}
			srv, s := serve(t, fail, fail, answer{200, okBody, ""})
			c, clk := newTestClient(t, srv.URL, 0)
			res, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
			if err != nil {
				t.Fatalf("RunCode: %v", err)
			}
			if res.Output.RetVal != "42" {
				t.Errorf("ret_val = %q", res.Output.RetVal)
			}
			if got := s.count.Load(); got != 3 {
				t.Errorf("requests = %d, want 3", got)
			}
			if got := clk.Sleeps(); len(got) != 2 {
				t.Errorf("sleeps = %v, want 2 backoffs", got)
			}
		})
	}
}

func TestNeverRetriesClientErrorsOrServerBugs(t *testing.T) {
	cases := []struct {
		code int
		kind Kind
	}{
		{400, KindBadInput}, {413, KindBadInput}, {401, KindAuth}, {404, KindNotFound}, {500, KindServer},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			srv, s := serve(t, answer{tc.code, `{"error":"field code: expected a non-empty string","details":[{"path":["code"]}]}`, ""})
			c, clk := newTestClient(t, srv.URL, 0)
			res, err := c.RunCode(context.Background(), Request{Language: "js", Code: ""})
			if res != nil {
				t.Errorf("result = %+v, want nil", res)
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if fe.Kind != tc.kind || fe.StatusCode != tc.code || fe.Attempts != 1 {
				t.Errorf("err = %+v, want kind %s status %d after 1 attempt", fe, tc.kind, tc.code)
			}
			if !errors.Is(err, tc.kind) || KindOf(err) != tc.kind {
				t.Errorf("errors.Is(err, %s) is false", tc.kind)
			}
			if fe.Message != "field code: expected a non-empty string" || !strings.Contains(string(fe.Details), "code") {
				t.Errorf("message %q details %s", fe.Message, fe.Details)
			}
			if got := s.count.Load(); got != 1 {
				t.Errorf("requests = %d, want 1", got)
			}
			if len(clk.Sleeps()) != 0 {
				t.Errorf("slept %v", clk.Sleeps())
			}
		})
	}
}

func TestNeverRetriesA200(t *testing.T) {
	t.Run("undecodable body", func(t *testing.T) {
		// ret_val as a number breaks the contract: the code ran, so no retry.
		srv, s := serve(t, answer{200, `{"output":{"stdout":"","stderr":"","ret_val":42}}`, ""})
		c, _ := newTestClient(t, srv.URL, 0)
		_, err := c.RunCode(context.Background(), Request{Language: "js", Code: "return 42"})
		if !errors.Is(err, KindProtocol) {
			t.Errorf("err = %v, want protocol", err)
		}
		if got := s.count.Load(); got != 1 {
			t.Errorf("requests = %d, want 1", got)
		}
	})
	t.Run("no output object", func(t *testing.T) {
		srv, s := serve(t, answer{200, `{"metadata":{"status":"success"}}`, ""})
		c, _ := newTestClient(t, srv.URL, 0)
		_, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
		if !errors.Is(err, KindProtocol) || s.count.Load() != 1 {
			t.Errorf("err = %v after %d requests, want protocol after 1", err, s.count.Load())
		}
	})
	t.Run("failed status without an error message", func(t *testing.T) {
		srv, _ := serve(t, answer{200, `{"output":{"stdout":"","stderr":"","ret_val":""},"metadata":{"status":"crashed"}}`, ""})
		c, _ := newTestClient(t, srv.URL, 0)
		res, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
		if err != nil || !errors.Is(res.Err(), KindSandbox) {
			t.Errorf("err %v, Err() %v; want a sandbox failure", err, res.Err())
		}
	})
	t.Run("non-integer duration", func(t *testing.T) {
		srv, _ := serve(t, answer{200, `{"output":{"stdout":"","stderr":"","ret_val":""},"metadata":{"duration":1.5}}`, ""})
		c, _ := newTestClient(t, srv.URL, 0)
		_, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
		if !errors.Is(err, KindProtocol) {
			t.Errorf("err = %v, want protocol", err)
		}
	})
	for _, tc := range []struct {
		status Status
		kind   Kind
	}{{StatusTimeout, KindTimeout}, {StatusMemoryLimit, KindSandbox}, {StatusCrashed, KindSandbox}, {StatusOutputLimit, KindSandbox}} {
		t.Run(string(tc.status), func(t *testing.T) {
			body := fmt.Sprintf(`{"output":{"stdout":"partial","stderr":"","ret_val":""},
				"metadata":{"status":%q,"exit_code":1,"duration":500},"error":"run failed: %s"}`, tc.status, tc.status)
			srv, s := serve(t, answer{200, body, ""})
			c, _ := newTestClient(t, srv.URL, 0)
			res, err := c.RunCode(context.Background(), Request{Language: "js", Code: "while(true){}"})
			if err != nil {
				t.Fatalf("RunCode returned %v; a run that answered 200 is a result", err)
			}
			runErr := res.Err()
			var fe *Error
			if !errors.As(runErr, &fe) || fe.Kind != tc.kind || fe.RunStatus != tc.status || fe.Message != "run failed: "+string(tc.status) {
				t.Errorf("Err() = %#v, want kind %s", runErr, tc.kind)
			}
			if res.Output.Stdout != "partial" {
				t.Errorf("stdout = %q", res.Output.Stdout)
			}
			if got := s.count.Load(); got != 1 {
				t.Errorf("requests = %d, want 1", got)
			}
		})
	}
	t.Run("uncaught exception is not an error", func(t *testing.T) {
		body := `{"output":{"stdout":"","stderr":"Error: boom\n    at <anonymous>","ret_val":""},"metadata":{"status":"error","exit_code":1},"error":""}`
		srv, _ := serve(t, answer{200, body, ""})
		c, _ := newTestClient(t, srv.URL, 0)
		res, err := c.RunCode(context.Background(), Request{Language: "js", Code: "throw new Error('boom')"})
		if err != nil || res.Err() != nil || res.Status() != StatusError {
			t.Errorf("err %v, Err() %v, status %q", err, res.Err(), res.Status())
		}
	})
}

func TestBackoffIsExponentialCappedAndJittered(t *testing.T) {
	policy := RetryPolicy{MaxAttempts: 6, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, Multiplier: 2, Jitter: 0.5}
	for _, tc := range []struct {
		r    float64
		want []time.Duration
	}{
		{0, []time.Duration{100, 200, 400, 400, 400}},
		{1, []time.Duration{50, 100, 200, 200, 200}},
	} {
		srv, s := serve(t, answer{502, `{"error":"bad gateway"}`, ""})
		c, clk := newTestClient(t, srv.URL, tc.r, WithRetryPolicy(policy))
		_, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
		var fe *Error
		if !errors.As(err, &fe) || fe.Kind != KindUnavailable || fe.Attempts != 6 || fe.StatusCode != 502 {
			t.Errorf("err = %#v, want unavailable after 6 attempts", err)
		}
		if got := s.count.Load(); got != 6 {
			t.Errorf("requests = %d, want 6", got)
		}
		got := clk.Sleeps()
		if len(got) != len(tc.want) {
			t.Fatalf("sleeps = %v, want %v ms", got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i]*time.Millisecond {
				t.Errorf("jitter draw %v: sleep %d = %v, want %v", tc.r, i, got[i], tc.want[i]*time.Millisecond)
			}
		}
	}
}

func TestJitterStaysWithinItsBand(t *testing.T) {
	p := RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Second, Jitter: 0.3}.withDefaults()
	for _, r := range []float64{0, 0.25, 0.5, 0.999} {
		d := p.backoff(1, r)
		if d > time.Second || d < 700*time.Millisecond {
			t.Errorf("backoff with draw %v = %v, want within [700ms, 1s]", r, d)
		}
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	srv, s := serve(t, answer{503, `{"error":"queue full"}`, "2"}, answer{200, okBody, ""})
	c, clk := newTestClient(t, srv.URL, 0)
	if _, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"}); err != nil {
		t.Fatalf("RunCode: %v", err)
	}
	if got := clk.Sleeps(); len(got) != 1 || got[0] != 2*time.Second {
		t.Errorf("sleeps = %v, want [2s] (Retry-After beats the 100ms backoff)", got)
	}
	if s.count.Load() != 2 {
		t.Errorf("requests = %d, want 2", s.count.Load())
	}
}

func TestRetryAfterBeyondTheDeadlineEndsTheCallAtOnce(t *testing.T) {
	srv, s := serve(t, answer{503, `{"error":"queue full"}`, "5"})
	c, clk := newTestClient(t, srv.URL, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.RunCode(ctx, Request{Language: "js", Code: "1"})
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != KindOverload || fe.RetryAfter != 5*time.Second || !strings.HasPrefix(fe.Message, "queue full (not retried: ") {
		t.Errorf("err = %#v, want overload with Retry-After 5s", err)
	}
	if s.count.Load() != 1 || len(clk.Sleeps()) != 0 {
		t.Errorf("requests %d, sleeps %v: want 1 and none", s.count.Load(), clk.Sleeps())
	}
}

func TestRetryAfterBeyondMaxRetryAfterEndsTheCall(t *testing.T) {
	srv, s := serve(t, answer{429, `{"error":"slow down"}`, "120"})
	c, clk := newTestClient(t, srv.URL, 0, WithRetryPolicy(RetryPolicy{MaxRetryAfter: 10 * time.Second}))
	_, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
	if !errors.Is(err, KindOverload) {
		t.Errorf("err = %v, want overload", err)
	}
	if s.count.Load() != 1 || len(clk.Sleeps()) != 0 {
		t.Errorf("requests %d, sleeps %v: want 1 and none", s.count.Load(), clk.Sleeps())
	}
}

func TestBackoffStopsBeforeTheDeadline(t *testing.T) {
	srv, s := serve(t, answer{504, `{"error":"gateway timeout"}`, ""})
	policy := RetryPolicy{MaxAttempts: 100, InitialBackoff: 400 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, Jitter: -1}
	c, clk := newTestClient(t, srv.URL, 0, WithRetryPolicy(policy))
	ctx, cancel := context.WithDeadline(context.Background(), c.now().Add(time.Second))
	defer cancel()
	_, err := c.RunCode(ctx, Request{Language: "js", Code: "1"})
	if !errors.Is(err, KindUnavailable) {
		t.Errorf("err = %v, want the last failure (unavailable)", err)
	}
	// 0 ms, 400 ms, 800 ms fit; a fourth attempt at 1200 ms would not.
	if s.count.Load() != 3 || len(clk.Sleeps()) != 2 {
		t.Errorf("requests %d, sleeps %v: want 3 and 2", s.count.Load(), clk.Sleeps())
	}
}

func TestContextDeadlineDuringAnAttemptIsATimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.RunCode(ctx, Request{Language: "js", Code: "1"})
	if !errors.Is(err, KindTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want timeout wrapping context.DeadlineExceeded", err)
	}
}

func TestCanceledContextIsCanceled(t *testing.T) {
	srv, _ := serve(t, answer{503, `{"error":"queue full"}`, "1"})
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.sleep = func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}
	_, err = c.RunCode(ctx, Request{Language: "js", Code: "1"})
	if !errors.Is(err, KindCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want canceled", err)
	}
	if !strings.Contains(err.Error(), "queue full") {
		t.Errorf("err = %v, want the last failure named", err)
	}
}

func TestTransportErrorIsRetried(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close() // drop the connection without an answer
			}
			return
		}
		_, _ = io.WriteString(w, okBody)
	}))
	defer srv.Close()
	c, clk := newTestClient(t, srv.URL, 0)
	res, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
	if err != nil || res.Output.RetVal != "42" {
		t.Fatalf("RunCode = %v, %v", res, err)
	}
	if n.Load() != 2 || len(clk.Sleeps()) != 1 {
		t.Errorf("requests %d, sleeps %v: want 2 and 1", n.Load(), clk.Sleeps())
	}
}

func TestUnreachableServiceIsUnavailable(t *testing.T) {
	c, clk := newTestClient(t, deadURL(t), 0, WithRetryPolicy(RetryPolicy{MaxAttempts: 3}))
	_, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != KindUnavailable || fe.Attempts != 3 || fe.Err == nil {
		t.Errorf("err = %#v, want unavailable after 3 attempts with the cause", err)
	}
	if len(clk.Sleeps()) != 2 {
		t.Errorf("sleeps = %v, want 2 backoffs on the only instance", clk.Sleeps())
	}
}

// countingTransport counts round trips per host.
type countingTransport struct {
	mu     sync.Mutex
	byHost map[string]int
}

func (ct *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ct.mu.Lock()
	if ct.byHost == nil {
		ct.byHost = map[string]int{}
	}
	ct.byHost[r.URL.Host]++
	ct.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (ct *countingTransport) count(rawURL string) int {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.byHost[strings.TrimPrefix(rawURL, "http://")]
}

func TestFailsOverToTheLiveInstanceAtOnceAndThenAvoidsTheDeadOne(t *testing.T) {
	live, s := serve(t, answer{200, okBody, ""})
	dead := deadURL(t)
	ct := &countingTransport{}
	c, clk := newTestClient(t, dead+","+live.URL, 0, WithHTTPClient(&http.Client{Transport: ct}))
	for i := 0; i < 4; i++ {
		res, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"})
		if err != nil || res.Output.RetVal != "42" {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if got := ct.count(dead); got != 1 {
		t.Errorf("dead instance tried %d times, want 1 (then skipped during its cooldown)", got)
	}
	if s.count.Load() != 4 {
		t.Errorf("live instance served %d, want 4", s.count.Load())
	}
	if len(clk.Sleeps()) != 0 {
		t.Errorf("sleeps = %v, want none: failover to an untried instance is immediate", clk.Sleeps())
	}
}

func TestDeadInstanceIsTriedAgainAfterItsCooldown(t *testing.T) {
	live, _ := serve(t, answer{200, okBody, ""})
	dead := deadURL(t)
	ct := &countingTransport{}
	c, clk := newTestClient(t, dead+","+live.URL, 0, WithHTTPClient(&http.Client{Transport: ct}))
	for i := 0; i < 2; i++ {
		if _, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	clk.mu.Lock()
	clk.now = clk.now.Add(DefaultRetryPolicy().FailoverCooldown + time.Second)
	clk.mu.Unlock()
	for i := 0; i < 2; i++ {
		if _, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := ct.count(dead); got != 2 {
		t.Errorf("dead instance tried %d times, want 2 (once per cooldown)", got)
	}
}

func TestFailsOverOn503WithoutWaiting(t *testing.T) {
	busy, sb := serve(t, answer{503, `{"error":"queue full"}`, "1"})
	idle, si := serve(t, answer{200, okBody, ""})
	c, clk := newTestClient(t, busy.URL+","+idle.URL, 0)
	if _, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"}); err != nil {
		t.Fatal(err)
	}
	if sb.count.Load() != 1 || si.count.Load() != 1 || len(clk.Sleeps()) != 0 {
		t.Errorf("busy %d, idle %d, sleeps %v", sb.count.Load(), si.count.Load(), clk.Sleeps())
	}
	// The busy instance asked for 1 s: until then, calls go to the idle one.
	for i := 0; i < 2; i++ {
		if _, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if sb.count.Load() != 1 || si.count.Load() != 3 {
		t.Errorf("busy %d, idle %d: want the busy one left alone during Retry-After", sb.count.Load(), si.count.Load())
	}
}

func TestRoundRobinSpreadsCalls(t *testing.T) {
	a, sa := serve(t, answer{200, okBody, ""})
	b, sb := serve(t, answer{200, okBody, ""})
	c, _ := newTestClient(t, a.URL+", "+b.URL+"/", 0)
	for i := 0; i < 6; i++ {
		if _, err := c.RunCode(context.Background(), Request{Language: "js", Code: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if sa.count.Load() != 3 || sb.count.Load() != 3 {
		t.Errorf("a %d, b %d: want 3 each", sa.count.Load(), sb.count.Load())
	}
	if got := c.BaseURLs(); len(got) != 2 || got[1] != b.URL {
		t.Errorf("BaseURLs = %v", got)
	}
}

func TestNewRejectsBadBaseURLs(t *testing.T) {
	for _, raw := range []string{"", " , ", "faas:8000", "ftp://faas", "http://", "http://h:8000/?q=1"} {
		if _, err := New(raw); !errors.Is(err, KindBadInput) {
			t.Errorf("New(%q) = %v, want bad input", raw, err)
		}
	}
}

func TestValidateCode(t *testing.T) {
	srv, s := serve(t,
		answer{200, `{"valid":true,"error":null}`, ""},
		answer{200, `{"valid":false,"error":{"message":"Unexpected token","line":3,"column":7}}`, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	v, err := c.ValidateCode(context.Background(), "python", "x = 1")
	if err != nil || !v.Valid || v.Error != nil {
		t.Errorf("valid code: %+v, %v", v, err)
	}
	v, err = c.ValidateCode(context.Background(), "js", "if (")
	if err != nil || v.Valid || v.Error == nil || v.Error.Line != 3 || v.Error.Column != 7 || v.Error.Message != "Unexpected token" {
		t.Errorf("invalid code: %+v, %v", v, err)
	}
	if s.bodies[1] != `{"language":"js","code":"if ("}` {
		t.Errorf("body = %s", s.bodies[1])
	}
}

const healthyBody = `{"status":"healthy","timestamp":"2026-01-01T00:00:00Z","version":"0.1.0","uptime_s":12.5,
"pool":{"totalInstances":4,"idleInstances":3,"activeInstances":1},
"scheduler":{"totalTasks":9,"completedTasks":8,"failedTasks":1,"queuedTasks":0,"averageExecutionTime":3.2},
"languages":{"python":{"available":true,"version":"3.11"}}}`

func TestHealth(t *testing.T) {
	srv, _ := serve(t, answer{200, healthyBody, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	h, err := c.Health(context.Background())
	if err != nil || !h.Healthy() || h.Pool.TotalInstances != 4 || h.Scheduler.CompletedTasks != 8 ||
		!h.Languages["python"].Available || len(h.Raw) == 0 {
		t.Errorf("Health = %+v, %v", h, err)
	}
}

func TestHealthReportsUnhealthyAndFailsOver(t *testing.T) {
	sick, _ := serve(t, answer{503, `{"status":"unhealthy","pool":{"totalInstances":0}}`, ""})
	c, _ := newTestClient(t, sick.URL, 0)
	h, err := c.Health(context.Background())
	if !errors.Is(err, KindUnavailable) || h == nil || h.Healthy() || h.Status != "unhealthy" {
		t.Errorf("Health = %+v, %v; want the unhealthy report and an unavailable error", h, err)
	}

	good, _ := serve(t, answer{200, healthyBody, ""})
	c, _ = newTestClient(t, deadURL(t)+","+sick.URL+","+good.URL, 0)
	h, err = c.Health(context.Background())
	if err != nil || !h.Healthy() {
		t.Errorf("Health over three instances = %+v, %v; want the healthy one", h, err)
	}
}

func TestErrorMessagesNameTheProblem(t *testing.T) {
	e := &Error{Kind: KindOverload, StatusCode: 503, Message: "queue full", Attempts: 4}
	if got := e.Error(); got != "faas: overload (HTTP 503): queue full (after 4 attempts)" {
		t.Errorf("Error() = %q", got)
	}
	if KindOf(fmt.Errorf("wrapped: %w", e)) != KindOverload {
		t.Error("KindOf does not see through wrapping")
	}
	if KindOf(errors.New("other")) != "" {
		t.Error("KindOf of a foreign error is not empty")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-3", 0}, {"soon", 0}, {"3", 3 * time.Second}, {" 1 ", time.Second},
		{"Thu, 01 Jan 2026 00:00:05 GMT", 5 * time.Second}, {"Wed, 31 Dec 2025 23:59:00 GMT", 0},
		{"99999999999999", 24 * time.Hour},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

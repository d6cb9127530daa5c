//go:build unix

package faas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file starts the real service (deno run main.ts at the repository root,
// or at $FAAS_SANDBOX_ROOT) on a free port and stops it with SIGTERM. Tests
// that need it skip only when deno or main.ts is missing.

// service is one running instance of the service.
type service struct {
	URL    string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

// syncBuffer collects the service's output from two pipes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// repoRoot is where main.ts lives.
func repoRoot(t *testing.T) string {
	if root := os.Getenv("FAAS_SANDBOX_ROOT"); root != "" {
		return root
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// freePort returns a port nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// startService starts the service with the FAAS_* settings in env (on top of
// small defaults and without any FAAS_* variable of the test's environment),
// waits until /health says healthy, and stops it when the test ends.
func startService(t *testing.T, env map[string]string) *service {
	t.Helper()
	deno, err := exec.LookPath("deno")
	if err != nil {
		t.Skip("service tests skipped: deno is not on PATH (install Deno 2.9 to run them)")
	}
	root := repoRoot(t)
	mainTS := filepath.Join(root, "main.ts")
	if _, err := os.Stat(mainTS); err != nil {
		t.Skipf("service tests skipped: %s does not exist (the service's entry point is needed)", mainTS)
	}
	port := freePort(t)
	settings := map[string]string{
		"FAAS_PORT":          port,
		"FAAS_HOST":          "127.0.0.1",
		"FAAS_POOL_SIZE":     "2",
		"FAAS_MAX_INSTANCES": "4",
	}
	for k, v := range env {
		settings[k] = v
	}
	cmd := exec.Command(deno, "run", "--allow-all", "--no-prompt", mainTS)
	cmd.Dir = root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FAAS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &syncBuffer{}
	cmd.Stdout = logs
	cmd.Stderr = logs
	// Own process group, so that whatever is left can be killed at the end.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", mainTS, err)
	}
	s := &service{URL: "http://127.0.0.1:" + port, cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.stop(t) })
	s.waitHealthy(t, 60*time.Second)
	return s
}

// waitHealthy polls /health: the service announces readiness only there.
func (s *service) waitHealthy(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := hc.Get(s.URL + "/health")
		if err == nil {
			var h Health
			decodeErr := json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && decodeErr == nil && h.Healthy() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service at %s not healthy within %v; output:\n%s", s.URL, within, s.logs.tail(4000))
		}
		select {
		case <-s.exited:
			t.Fatalf("service exited before it was healthy (%v); output:\n%s", s.cmd.ProcessState, s.logs.tail(4000))
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM, waits for the service to drain, then kills whatever is
// left of its process group.
func (s *service) stop(t *testing.T) {
	pid := s.cmd.Process.Pid
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("service did not exit within 15 s of SIGTERM; killing it")
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-s.exited
	if t.Failed() {
		t.Logf("service output:\n%s", s.logs.tail(4000))
	}
}

// statusRecorder records the status and Retry-After of every answer.
type statusRecorder struct {
	mu      sync.Mutex
	byHost  map[string]int
	answers []recordedAnswer
}

type recordedAnswer struct {
	host       string
	status     int // 0: transport error
	retryAfter string
}

func (r *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	a := recordedAnswer{host: req.URL.Host}
	if err == nil {
		a.status = resp.StatusCode
		a.retryAfter = resp.Header.Get("Retry-After")
	}
	r.mu.Lock()
	if r.byHost == nil {
		r.byHost = map[string]int{}
	}
	r.byHost[req.URL.Host]++
	r.answers = append(r.answers, a)
	r.mu.Unlock()
	return resp, err
}

func (r *statusRecorder) snapshot() []recordedAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedAnswer(nil), r.answers...)
}

func (r *statusRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.answers)
}

// budget returns a context for one call of an integration case.
func budget(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func TestServiceRunsTheContract(t *testing.T) {
	svc := startService(t, nil)
	rec := &statusRecorder{}
	client, err := New(svc.URL, WithHTTPClient(&http.Client{Transport: rec}))
	if err != nil {
		t.Fatal(err)
	}
	rt := NewRuntime(client)

	t.Run("health", func(t *testing.T) {
		h, err := client.Health(budget(t, 5*time.Second))
		if err != nil || !h.Healthy() {
			t.Fatalf("Health = %+v, %v", h, err)
		}
		if h.Version == "" || h.Timestamp == "" {
			t.Errorf("health lacks version or timestamp: %s", h.Raw)
		}
	})

	t.Run("seed examples", func(t *testing.T) {
		cases := []struct {
			name, language, code, stdout, retVal string
			input                                any
		}{
			{"js hello and return", "javascript", "console.log('Hello World'); return 42;", "Hello World\n", "42", nil},
			{"python print", "python", "print('Hello World')", "Hello World\n", "", nil},
			{"python last expression", "python", "x = 6 * 7\nx", "", "42", nil},
			{"js returns a string as JSON", "js", `return "hi";`, "", `"hi"`, nil},
			{"typescript is type-stripped", "typescript", "const n: number = 41;\nreturn n + 1;", "", "42", nil},
			{"js return_val wins over return", "js", "return_val('done'); return 1;", "", "done", nil},
			{"python return_val", "py", "return_val('done')", "", "done", nil},
			{"js sees input", "js", "return input.a + 1;", "", "42", map[string]int{"a": 41}},
			{"python sees input", "python3", "input['a'] + 1", "", "42", map[string]int{"a": 41}},
		}
		for _, tc := range cases {
			tc := tc
			t.Run(tc.name, func(t *testing.T) {
				res, err := client.RunCode(budget(t, 20*time.Second), Request{
					Language: tc.language, Code: tc.code, TimeoutMS: 5000, Input: tc.input,
					Ext: map[string]string{"space_id": "go-client-test"},
				})
				if err != nil {
					t.Fatalf("RunCode: %v", err)
				}
				if res.Metadata == nil {
					t.Fatalf("no metadata in %+v", res)
				}
				if res.Output.Stdout != tc.stdout || res.Output.RetVal != tc.retVal {
					t.Errorf("stdout %q ret_val %q; want %q and %q (stderr %q)", res.Output.Stdout, res.Output.RetVal, tc.stdout, tc.retVal, res.Output.Stderr)
				}
				if res.Status() != StatusSuccess || res.Error != "" || res.Metadata.ExitCode != 0 {
					t.Errorf("status %q, exit %d, error %q; want success", res.Status(), res.Metadata.ExitCode, res.Error)
				}
				if res.Metadata.TaskID == "" || res.Metadata.InstanceID == "" {
					t.Errorf("metadata lacks ids: %+v", res.Metadata)
				}
			})
		}
	})

	t.Run("platform names through the adapter", func(t *testing.T) {
		for lang, code := range map[string]string{"JS": "console.log('Hello World'); return 42;", "Python": "print('Hello World')\n42"} {
			res, err := rt.RunCode(budget(t, 20*time.Second), code, lang, 5000, map[string]string{"space_id": "123"})
			if err != nil {
				t.Fatalf("%s: %v", lang, err)
			}
			if res.WorkloadInfo == nil || res.Output.Stdout != "Hello World\n" || res.Output.RetVal != "42" || res.WorkloadInfo.Status != "success" {
				t.Errorf("%s: output %+v workload %+v", lang, res.Output, res.WorkloadInfo)
			}
		}
		if !rt.ValidateCode(budget(t, 10*time.Second), "x = 1", "Python") {
			t.Error("valid Python reported invalid")
		}
	})

	t.Run("evaluator programs", func(t *testing.T) {
		const want = `{"score": 1.0, "reason": "exact match"}`
		py := `import json

def return_val(value):
    print("__COZE_RETURN_VAL_START__")
    print(value)
    print("__COZE_RETURN_VAL_END__")

def exec_evaluation(turn):
    score = 1.0 if turn["actual_output"] == turn["reference_output"] else 0.0
    return {"score": score, "reason": "exact match" if score else "mismatch"}

print("evaluating")
return_val(json.dumps(exec_evaluation({"actual_output": "4", "reference_output": "4"})))
`
		js := `function return_val(value) {
  console.log("__COZE_RETURN_VAL_START__");
  console.log(value);
  console.log("__COZE_RETURN_VAL_END__");
}
function exec_evaluation(turn) {
  const score = turn.actual_output === turn.reference_output ? 1.0 : 0.0;
  return { score, reason: score ? "exact match" : "mismatch" };
}
console.log("evaluating");
return_val(JSON.stringify(exec_evaluation({ actual_output: "4", reference_output: "4" })));
`
		jsonLine := "import json\nprint('log line')\nprint(json.dumps({'score': 0.5}))\n"
		for _, tc := range []struct{ name, lang, code, want, stdout string }{
			{"python markers", "Python", py, want, "evaluating\n"},
			{"js markers", "JS", js, want, "evaluating\n"},
			{"python last JSON line", "Python", jsonLine, `{"score": 0.5}`, "log line\n"},
		} {
			res, err := rt.RunCode(budget(t, 20*time.Second), tc.code, tc.lang, 5000, map[string]string{"space_id": "123"})
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if !sameJSON(res.Output.RetVal, tc.want) {
				t.Errorf("%s: ret_val %q, want JSON %s (stderr %q)", tc.name, res.Output.RetVal, tc.want, res.Output.Stderr)
			}
			if res.Output.Stdout != tc.stdout {
				t.Errorf("%s: stdout %q, want %q (markers and value removed)", tc.name, res.Output.Stdout, tc.stdout)
			}
		}
	})

	t.Run("uncaught exceptions are results", func(t *testing.T) {
		for lang, code := range map[string]string{"js": "throw new Error('boom');", "python": "raise ValueError('boom')"} {
			res, err := client.RunCode(budget(t, 20*time.Second), Request{Language: lang, Code: code, TimeoutMS: 5000})
			if err != nil {
				t.Fatalf("%s: %v", lang, err)
			}
			if res.Metadata == nil {
				t.Fatalf("%s: no metadata in %+v", lang, res)
			}
			if res.Status() != StatusError || res.Error != "" || res.Err() != nil || !strings.Contains(res.Output.Stderr, "boom") {
				t.Errorf("%s: status %q error %q stderr %q; want status error, no error, trace in stderr", lang, res.Status(), res.Error, res.Output.Stderr)
			}
			if res.Metadata.ExitCode == 0 {
				t.Errorf("%s: exit_code 0 for an uncaught exception", lang)
			}
		}
	})

	t.Run("timeouts", func(t *testing.T) {
		for lang, code := range map[string]string{"JS": "while (true) {}", "Python": "while True:\n    pass"} {
			before := rec.count()
			res, err := rt.RunCode(budget(t, 20*time.Second), code, lang, 300, nil)
			if !errors.Is(err, KindTimeout) || res == nil {
				t.Fatalf("%s: result %+v, err %v; want the result and a timeout error", lang, res, err)
			}
			// The loop never ends on its own: the run lasted at least about its timeout.
			if res.Metadata == nil || res.WorkloadInfo.Status != string(StatusTimeout) || res.Metadata.Duration < 150 {
				t.Errorf("%s: status %q duration %d ms", lang, res.WorkloadInfo.Status, res.Metadata.Duration)
			}
			if n := rec.count() - before; n != 1 {
				t.Errorf("%s: %d requests; a run that answered is never retried", lang, n)
			}
		}
	})

	t.Run("bad input is a typed 400 and not retried", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			req   Request
			field string
		}{
			{"unknown language", Request{Language: "cobol", Code: "1"}, "language"},
			{"empty code", Request{Language: "js", Code: ""}, "code"},
			{"negative timeout", Request{Language: "js", Code: "1", TimeoutMS: -5}, "timeout"},
		} {
			before := rec.count()
			res, err := client.RunCode(budget(t, 10*time.Second), tc.req)
			var fe *Error
			if res != nil || !errors.As(err, &fe) || fe.Kind != KindBadInput || fe.StatusCode != 400 {
				t.Errorf("%s: result %+v, err %v; want a 400 bad-input error", tc.name, res, err)
				continue
			}
			text := strings.ToLower(fe.Message + string(fe.Details))
			if !strings.Contains(text, tc.field) {
				t.Errorf("%s: error %q details %s do not name %q", tc.name, fe.Message, fe.Details, tc.field)
			}
			if n := rec.count() - before; n != 1 || fe.Attempts != 1 {
				t.Errorf("%s: %d requests, %d attempts; want 1", tc.name, n, fe.Attempts)
			}
		}
		if _, err := client.ValidateCode(budget(t, 10*time.Second), "cobol", "1"); !errors.Is(err, KindBadInput) {
			t.Errorf("validate with an unknown language: %v", err)
		}
	})

	t.Run("syntax check", func(t *testing.T) {
		for _, tc := range []struct {
			lang, code string
			valid      bool
			line       int
		}{
			{"js", "const a = 1;\nreturn a;", true, 0},
			{"js", "const a = 1;\nconst b = ;", false, 2},
			{"python", "x = 1\ny = 2", true, 0},
			{"python", "x = 1\ny = = 2", false, 2},
		} {
			v, err := client.ValidateCode(budget(t, 10*time.Second), tc.lang, tc.code)
			if err != nil {
				t.Fatalf("%s %q: %v", tc.lang, tc.code, err)
			}
			if v.Valid != tc.valid {
				t.Errorf("%s %q: valid %v, want %v", tc.lang, tc.code, v.Valid, tc.valid)
			} else if !tc.valid && (v.Error == nil || v.Error.Line != tc.line || v.Error.Message == "") {
				t.Errorf("%s %q: error %+v, want line %d", tc.lang, tc.code, v.Error, tc.line)
			}
		}
	})

	t.Run("wire types the platform's client requires", func(t *testing.T) {
		body := `{"language":"javascript","code":"console.log('Hello World'); return 42;","timeout":5000,"priority":"normal","ext":{"space_id":"123"}}`
		resp, err := http.Post(svc.URL+"/run_code", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		dec.UseNumber()
		var raw struct {
			Output   map[string]any `json:"output"`
			Metadata map[string]any `json:"metadata"`
			Error    any            `json:"error"`
		}
		if err := dec.Decode(&raw); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d, decode %v", resp.StatusCode, err)
		}
		for _, k := range []string{"stdout", "stderr", "ret_val"} {
			if _, ok := raw.Output[k].(string); !ok {
				t.Errorf("output.%s = %#v, want a string", k, raw.Output[k])
			}
		}
		isInt := func(v any) bool {
			n, ok := v.(json.Number)
			if !ok {
				return false
			}
			_, err := n.Int64()
			return err == nil
		}
		for _, k := range []string{"duration", "queue_time", "exit_code"} {
			if !isInt(raw.Metadata[k]) {
				t.Errorf("metadata.%s = %#v, want an integer", k, raw.Metadata[k])
			}
		}
		for _, k := range []string{"task_id", "instance_id"} {
			if _, ok := raw.Metadata[k].(string); !ok {
				t.Errorf("metadata.%s = %#v, want a string", k, raw.Metadata[k])
			}
		}
		stats, _ := raw.Metadata["pool_stats"].(map[string]any)
		if len(stats) == 0 {
			t.Errorf("metadata.pool_stats = %#v, want an object", raw.Metadata["pool_stats"])
		}
		for k, v := range stats {
			if !isInt(v) {
				t.Errorf("metadata.pool_stats.%s = %#v, want an integer", k, v)
			}
		}
		if s, ok := raw.Error.(string); raw.Error != nil && (!ok || s != "") {
			t.Errorf("error = %#v, want empty", raw.Error)
		}
	})

	t.Run("failover when one of two instances is down", func(t *testing.T) {
		dead := "127.0.0.1:" + freePort(t)
		frec := &statusRecorder{}
		c, err := New("http://"+dead+","+svc.URL, WithHTTPClient(&http.Client{Transport: frec}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			res, err := c.RunCode(budget(t, 20*time.Second), Request{Language: "js", Code: "return 42;", TimeoutMS: 5000})
			if err != nil || res.Output.RetVal != "42" {
				t.Fatalf("call %d: %+v, %v", i, res, err)
			}
		}
		live := strings.TrimPrefix(svc.URL, "http://")
		frec.mu.Lock()
		deadTries, liveTries := frec.byHost[dead], frec.byHost[live]
		frec.mu.Unlock()
		if deadTries != 1 || liveTries != 4 {
			t.Errorf("dead instance tried %d times, live %d; want 1 and 4", deadTries, liveTries)
		}
	})
}

func TestServiceQueueFull503SucceedsOnRetry(t *testing.T) {
	svc := startService(t, map[string]string{
		"FAAS_POOL_SIZE":     "1",
		"FAAS_MAX_INSTANCES": "1",
		"FAAS_QUEUE_LIMIT":   "1",
	})
	once, err := New(svc.URL, WithRetryPolicy(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	slow := Request{Language: "js", Code: "await new Promise((r) => setTimeout(r, 1000)); return 'slow';", TimeoutMS: 10000}
	type outcome struct {
		res *Result
		err error
	}
	run := func(req Request) chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			res, err := once.RunCode(budget(t, 30*time.Second), req)
			ch <- outcome{res, err}
		}()
		return ch
	}

	// Occupy the only instance, then the only queue slot.
	first := run(slow)
	waitFor(t, svc, "the first run to be accepted", func(h *Health) bool {
		return h.Pool.ActiveInstances >= 1 || h.Scheduler.QueuedTasks >= 1
	})
	second := run(slow)
	var secondDone *outcome
	waitForOr(t, svc, "the second run to be queued", func(h *Health) bool { return h.Scheduler.QueuedTasks >= 1 }, func() bool {
		select {
		case o := <-second:
			// A queue limit that counts the running task rejects this one: still full.
			secondDone = &o
			return true
		default:
			return false
		}
	})

	rec := &statusRecorder{}
	retrying, err := New(svc.URL, WithHTTPClient(&http.Client{Transport: rec}),
		WithRetryPolicy(RetryPolicy{MaxAttempts: 20, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := retrying.RunCode(budget(t, 30*time.Second), Request{Language: "js", Code: "return 'after';", TimeoutMS: 5000})
	if err != nil {
		t.Fatalf("run after a full queue: %v; answers %+v", err, rec.snapshot())
	}
	if res.Output.RetVal != `"after"` {
		t.Errorf("ret_val = %q", res.Output.RetVal)
	}
	answers := rec.snapshot()
	if len(answers) < 2 || answers[0].status != 503 || answers[len(answers)-1].status != 200 {
		t.Errorf("answers = %+v; want a 503 first and a 200 last", answers)
	}
	for _, a := range answers[:len(answers)-1] {
		if a.status != 503 || a.retryAfter == "" {
			t.Errorf("answer %+v; want 503 with Retry-After while the queue is full", a)
		}
	}

	if o := <-first; o.err != nil || o.res.Output.RetVal != `"slow"` {
		t.Errorf("first run: %+v, %v", o.res, o.err)
	}
	if secondDone == nil {
		o := <-second
		secondDone = &o
	}
	if secondDone.err != nil && !errors.Is(secondDone.err, KindOverload) {
		t.Errorf("second run: %v", secondDone.err)
	}
}

func TestServiceAPIKey(t *testing.T) {
	const key = "go-client-test-key-4f1c9a2e7b"
	svc := startService(t, map[string]string{"FAAS_API_KEY": key})
	req := Request{Language: "js", Code: "return 42;", TimeoutMS: 5000}

	for name, opts := range map[string][]Option{"no key": nil, "wrong key": {WithAPIKey("not-" + key)}} {
		rec := &statusRecorder{}
		c, err := New(svc.URL, append(opts, WithHTTPClient(&http.Client{Transport: rec}))...)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.RunCode(budget(t, 10*time.Second), req)
		var fe *Error
		if res != nil || !errors.As(err, &fe) || fe.Kind != KindAuth || fe.StatusCode != 401 {
			t.Errorf("%s: result %+v, err %v; want a 401 auth error", name, res, err)
		}
		if rec.count() != 1 {
			t.Errorf("%s: %d requests; a 401 is never retried", name, rec.count())
		}
		if h, err := c.Health(budget(t, 5*time.Second)); err != nil || !h.Healthy() {
			t.Errorf("%s: /health = %+v, %v; it stays open without a key", name, h, err)
		}
	}

	c, err := New(svc.URL, WithAPIKey(key))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.RunCode(budget(t, 20*time.Second), req)
	if err != nil || res.Output.RetVal != "42" {
		t.Errorf("with the key: %+v, %v", res, err)
	}
}

// waitFor polls /health until ready says so; /health is the service's only
// view of its queue.
func waitFor(t *testing.T, svc *service, what string, ready func(*Health) bool) {
	t.Helper()
	waitForOr(t, svc, what, ready, func() bool { return false })
}

func waitForOr(t *testing.T, svc *service, what string, ready func(*Health) bool, other func() bool) {
	t.Helper()
	c, err := New(svc.URL, WithRetryPolicy(RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if other() {
			return
		}
		h, _ := c.Health(budget(t, 2*time.Second))
		if h != nil && ready(h) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last health %+v", what, h)
		}
		<-tick.C
	}
}

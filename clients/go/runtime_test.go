package faas

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

func TestWireLanguageMapsPlatformAndWireNamesCaseInsensitively(t *testing.T) {
	for in, want := range map[string]string{
		"JS": "javascript", "js": "javascript", "JavaScript": "javascript", " javascript ": "javascript",
		"ts": "typescript", "TypeScript": "typescript",
		"Python": "python", "PY": "python", "python3": "python",
	} {
		got, err := WireLanguage(in)
		if err != nil || got != want {
			t.Errorf("WireLanguage(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "go", "cobol", "node"} {
		if _, err := WireLanguage(in); !errors.Is(err, KindBadInput) {
			t.Errorf("WireLanguage(%q) = %v, want bad input", in, err)
		}
	}
	for in, want := range map[string]LanguageType{"javascript": LanguageJS, "TS": LanguageJS, "python": LanguagePython} {
		if got, err := PlatformLanguage(in); err != nil || got != want {
			t.Errorf("PlatformLanguage(%q) = %q, %v", in, got, err)
		}
	}
}

func TestRuntimeRunCodeSendsWireNamesAndReturnsTheOutput(t *testing.T) {
	srv, s := serve(t, answer{200, okBody, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	rt := NewRuntime(c)
	res, err := rt.RunCode(context.Background(), "console.log('Hello World'); return 42;", "JS", 5000, map[string]string{"space_id": "7"})
	if err != nil {
		t.Fatalf("RunCode: %v", err)
	}
	if res.Output.Stdout != "Hello World\n" || res.Output.RetVal != "42" || res.Output.Stderr != "" {
		t.Errorf("output = %+v", res.Output)
	}
	if res.WorkloadInfo == nil || res.WorkloadInfo.ID != "js-1" || res.WorkloadInfo.Status != "success" || res.Metadata == nil {
		t.Errorf("workload = %+v, metadata = %+v", res.WorkloadInfo, res.Metadata)
	}
	var sent Request
	if err := json.Unmarshal([]byte(s.bodies[0]), &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Language != "javascript" || sent.TimeoutMS != 5000 || sent.Ext["space_id"] != "7" {
		t.Errorf("sent %+v", sent)
	}
	if rt.GetLanguageType() != LanguageJS || rt.ForLanguage(LanguagePython).GetLanguageType() != LanguagePython {
		t.Error("GetLanguageType does not follow ForLanguage")
	}
	if err := rt.Cleanup(); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
}

func TestRuntimeRunCodeReturnsTheResultWithATypedRunFailure(t *testing.T) {
	body := `{"output":{"stdout":"started\n","stderr":"","ret_val":""},
		"metadata":{"task_id":"t","instance_id":"py-2","status":"timeout","exit_code":-1,"duration":1000},
		"error":"execution timed out after 1000 ms"}`
	srv, s := serve(t, answer{200, body, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	res, err := NewRuntime(c).RunCode(context.Background(), "while True: pass", "Python", 1000, nil)
	if !errors.Is(err, KindTimeout) {
		t.Fatalf("err = %v, want timeout", err)
	}
	if res == nil || res.Output.Stdout != "started\n" || res.WorkloadInfo.Status != "timeout" {
		t.Errorf("result = %+v; want what the code wrote", res)
	}
	if s.count.Load() != 1 {
		t.Errorf("requests = %d: a run is never retried", s.count.Load())
	}
}

func TestRuntimeRejectsBadInputWithoutCallingTheService(t *testing.T) {
	srv, s := serve(t, answer{200, okBody, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	rt := NewRuntime(c)
	ctx := context.Background()
	if _, err := rt.RunCode(ctx, "1", "cobol", 1000, nil); !errors.Is(err, KindBadInput) {
		t.Errorf("unknown language: %v", err)
	}
	if _, err := rt.RunCode(ctx, "", "JS", 1000, nil); !errors.Is(err, KindBadInput) {
		t.Errorf("empty code: %v", err)
	}
	if _, err := rt.RunCode(ctx, "1", "JS", -1, nil); !errors.Is(err, KindBadInput) {
		t.Errorf("negative timeout: %v", err)
	}
	if rt.ValidateCode(ctx, "x", "cobol") {
		t.Error("ValidateCode accepted an unknown language")
	}
	if s.count.Load() != 0 {
		t.Errorf("the service was called %d times", s.count.Load())
	}
}

func TestRuntimeValidateCode(t *testing.T) {
	srv, _ := serve(t,
		answer{200, `{"valid":true,"error":null}`, ""},
		answer{200, `{"valid":false,"error":{"message":"invalid syntax","line":1,"column":4}}`, ""},
		answer{500, `{"error":"oops"}`, ""})
	c, _ := newTestClient(t, srv.URL, 0)
	rt := NewRuntime(c)
	if !rt.ValidateCode(context.Background(), "x = 1", "Python") {
		t.Error("valid code reported invalid")
	}
	if rt.ValidateCode(context.Background(), "x = = 1", "Python") {
		t.Error("invalid code reported valid")
	}
	if rt.ValidateCode(context.Background(), "x = 1", "Python") {
		t.Error("a failed check reported valid")
	}
}

func TestPerLanguageRuntimeRoutesEachLanguageToItsInstance(t *testing.T) {
	js, sj := serve(t, answer{200, okBody, ""})
	py, sp := serve(t, answer{200, okBody, ""})
	cj, _ := newTestClient(t, js.URL, 0)
	cp, _ := newTestClient(t, py.URL, 0)
	rt, err := NewRuntimePerLanguage(map[LanguageType]*Client{LanguageJS: cj, LanguagePython: cp})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, lang := range []string{"JS", "typescript", "Python", "py"} {
		if _, err := rt.RunCode(ctx, "1", lang, 100, nil); err != nil {
			t.Fatalf("%s: %v", lang, err)
		}
	}
	if sj.count.Load() != 2 || sp.count.Load() != 2 {
		t.Errorf("js %d, python %d: want 2 each", sj.count.Load(), sp.count.Load())
	}

	only, err := NewRuntimePerLanguage(map[LanguageType]*Client{LanguagePython: cp})
	if err != nil {
		t.Fatal(err)
	}
	if only.GetLanguageType() != LanguagePython {
		t.Errorf("GetLanguageType = %q", only.GetLanguageType())
	}
	if _, err := only.RunCode(ctx, "1", "JS", 100, nil); !errors.Is(err, KindBadInput) {
		t.Errorf("JS without a JS instance: %v", err)
	}
	if _, err := NewRuntimePerLanguage(nil); !errors.Is(err, KindBadInput) {
		t.Errorf("no clients: %v", err)
	}
}

func TestFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	rt, err := fromLookup(env(map[string]string{EnvURL: "http://a:8000, http://b:8000", EnvJSDomain: "ignored"}))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rt.Client("python")
	cj, _ := rt.Client("JS")
	if c != cj || len(c.BaseURLs()) != 2 || c.BaseURLs()[1] != "http://b:8000" {
		t.Errorf("COZE_LOOP_FAAS_URL: %v / %v", c.BaseURLs(), cj.BaseURLs())
	}

	rt, err = fromLookup(env(map[string]string{
		EnvPythonDomain: "python-faas", EnvJSDomain: "https://js-faas/", EnvJSPort: "9000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	c, _ = rt.Client("Python")
	cj, _ = rt.Client("javascript")
	if got := c.BaseURLs()[0]; got != "http://python-faas:8000" {
		t.Errorf("python endpoint = %s", got)
	}
	if got := cj.BaseURLs()[0]; got != "https://js-faas:9000" {
		t.Errorf("js endpoint = %s", got)
	}

	rt, err = fromLookup(env(map[string]string{EnvJSDomain: "js-faas"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Client("python"); !errors.Is(err, KindBadInput) {
		t.Errorf("python without an endpoint: %v", err)
	}

	if _, err := fromLookup(env(map[string]string{})); !errors.Is(err, KindBadInput) {
		t.Errorf("empty environment: %v", err)
	}
	if _, err := fromLookup(env(map[string]string{EnvURL: "not a url"})); !errors.Is(err, KindBadInput) {
		t.Errorf("bad URL: %v", err)
	}
}

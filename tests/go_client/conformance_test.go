// Package goclient checks the service against the fixed Go client of the wire contract:
// it posts exactly as that client does and decodes answers into structs of its shape
// (strings for stdout/stderr/ret_val, integers in metadata).
//
// FAAS_BASE_URL points at a running service. FAAS_CODE_DIALECT picks the snippets:
// "echo" for the test runtime's directives, anything else for real JavaScript/Python.
package goclient

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// RunCodeRequest is the body the Go client sends to POST /run_code.
type RunCodeRequest struct {
	Language string            `json:"language"`
	Code     string            `json:"code"`
	Input    interface{}       `json:"input,omitempty"`
	Timeout  int64             `json:"timeout"`
	Priority string            `json:"priority"`
	Ext      map[string]string `json:"ext,omitempty"`
}

// RunCodeOutput is output of a 200 answer; every field must be a JSON string.
type RunCodeOutput struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	RetVal string `json:"ret_val"`
}

// RunCodeMetadata is metadata of a 200 answer; numbers must be integers.
type RunCodeMetadata struct {
	TaskID     string           `json:"task_id"`
	InstanceID string           `json:"instance_id"`
	Duration   int64            `json:"duration"`
	PoolStats  map[string]int64 `json:"pool_stats"`
}

// RunCodeResponse is a 200 answer of POST /run_code.
type RunCodeResponse struct {
	Output   RunCodeOutput    `json:"output"`
	Metadata *RunCodeMetadata `json:"metadata,omitempty"`
	Error    string           `json:"error"`
}

// HealthResponse is the part of GET /health the client deploys against.
type HealthResponse struct {
	Status string `json:"status"`
}

type snippets struct {
	success, exception, timeout, pythonSuccess string
}

func dialect() snippets {
	if os.Getenv("FAAS_CODE_DIALECT") == "echo" {
		return snippets{
			success:       "print Hello World\nreturn 42",
			exception:     "print before\nthrow boom",
			timeout:       "gate never",
			pythonSuccess: "print Hello World\nreturn 42",
		}
	}
	return snippets{
		success:       "console.log('Hello World'); return 42;",
		exception:     "console.log('before'); throw new Error('boom');",
		timeout:       "while (true) {}",
		pythonSuccess: "print('Hello World')\n42",
	}
}

func baseURL(t *testing.T) string {
	base := strings.TrimRight(os.Getenv("FAAS_BASE_URL"), "/")
	if base == "" {
		t.Skip("FAAS_BASE_URL is not set; start the service and point FAAS_BASE_URL at it")
	}
	return base
}

var client = &http.Client{Timeout: 30 * time.Second}

func post(t *testing.T, request RunCodeRequest) (int, []byte) {
	t.Helper()
	body, err := json.Marshal(request)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	httpRequest, err := http.NewRequest(http.MethodPost, baseURL(t)+"/run_code", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	httpRequest.Header.Set("Content-Type", "application/json")
	if key := os.Getenv("FAAS_API_KEY"); key != "" {
		httpRequest.Header.Set("Authorization", "Bearer "+key)
	}
	response, err := client.Do(httpRequest)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer response.Body.Close()
	data, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return response.StatusCode, data
}

func run(t *testing.T, request RunCodeRequest) RunCodeResponse {
	t.Helper()
	status, data := post(t, request)
	if status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", status, data)
	}
	var decoded RunCodeResponse
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatalf("the Go client cannot decode the answer (%v): %s", err, data)
	}
	if decoded.Metadata == nil {
		t.Fatalf("metadata missing: %s", data)
	}
	for _, key := range []string{"totalInstances", "idleInstances", "activeInstances"} {
		if _, ok := decoded.Metadata.PoolStats[key]; !ok {
			t.Errorf("pool_stats.%s missing: %s", key, data)
		}
	}
	if decoded.Metadata.TaskID == "" {
		t.Errorf("task_id empty: %s", data)
	}
	return decoded
}

func evaluatorRequest(language, code string) RunCodeRequest {
	return RunCodeRequest{
		Language: language,
		Code:     code,
		Timeout:  5000,
		Priority: "normal",
		Ext:      map[string]string{"space_id": "123"},
	}
}

func TestHealth(t *testing.T) {
	response, err := client.Get(baseURL(t) + "/health")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer response.Body.Close()
	var health HealthResponse
	if err := json.NewDecoder(response.Body).Decode(&health); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if response.StatusCode != http.StatusOK || health.Status != "healthy" {
		t.Fatalf("got %d %q, want 200 healthy", response.StatusCode, health.Status)
	}
}

func TestSuccess(t *testing.T) {
	code := dialect()
	for _, language := range []string{"js", "javascript"} {
		answer := run(t, evaluatorRequest(language, code.success))
		if answer.Error != "" {
			t.Errorf("%s: error %q, want empty", language, answer.Error)
		}
		if answer.Output.Stdout != "Hello World\n" || answer.Output.RetVal != "42" {
			t.Errorf("%s: output %+v", language, answer.Output)
		}
	}
}

func TestPythonSuccess(t *testing.T) {
	answer := run(t, evaluatorRequest("python", dialect().pythonSuccess))
	if answer.Error != "" || answer.Output.Stdout != "Hello World\n" || answer.Output.RetVal != "42" {
		t.Errorf("answer %+v", answer)
	}
}

func TestExceptionIsNotAnError(t *testing.T) {
	answer := run(t, evaluatorRequest("javascript", dialect().exception))
	if answer.Error != "" {
		t.Errorf("error %q: an uncaught exception must leave error empty", answer.Error)
	}
	if !strings.Contains(answer.Output.Stderr, "boom") {
		t.Errorf("stderr %q lacks the trace", answer.Output.Stderr)
	}
}

func TestTimeout(t *testing.T) {
	request := evaluatorRequest("javascript", dialect().timeout)
	request.Timeout = 300
	answer := run(t, request)
	if answer.Error == "" || strings.Contains(answer.Error, "\n") {
		t.Errorf("error %q, want a one-line message", answer.Error)
	}
}

func TestBadRequestIs400(t *testing.T) {
	status, data := post(t, RunCodeRequest{Language: "javascript", Code: "", Timeout: 5000, Priority: "normal"})
	if status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", status, data)
	}
	var body struct {
		Error   string        `json:"error"`
		Details []interface{} `json:"details"`
	}
	if err := json.Unmarshal(data, &body); err != nil || body.Error == "" || len(body.Details) == 0 {
		t.Fatalf("body %s (%v), want error and details", data, err)
	}
	if !strings.Contains(body.Error, "code") {
		t.Errorf("error %q does not name the field", body.Error)
	}
}

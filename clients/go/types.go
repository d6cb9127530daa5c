package faas

import (
	"encoding/json"
	"fmt"
)

// Status is how a run ended (metadata.status).
type Status string

// The run statuses of the wire contract.
const (
	// StatusSuccess: the code ran to its end.
	StatusSuccess Status = "success"
	// StatusError: the code raised an uncaught exception or exited non-zero;
	// the trace is in stderr. This is an outcome of the code, not an error.
	StatusError Status = "error"
	// StatusTimeout: the code ran past its timeout and was stopped.
	StatusTimeout Status = "timeout"
	// StatusMemoryLimit: the code exceeded its memory budget.
	StatusMemoryLimit Status = "memory_limit"
	// StatusOutputLimit: stdout or stderr hit the output cap; the run was stopped.
	StatusOutputLimit Status = "output_limit"
	// StatusCrashed: the sandbox died for another reason.
	StatusCrashed Status = "crashed"
)

// Priority is the scheduling priority of a run.
type Priority string

// The priorities of the wire contract, lowest first.
const (
	PriorityLow    Priority = "low"
	PriorityNormal Priority = "normal"
	PriorityHigh   Priority = "high"
	PriorityUrgent Priority = "urgent"
)

// Request is the body of POST /run_code.
type Request struct {
	// Language is "javascript"/"js", "typescript"/"ts" or "python"/"py"/"python3"
	// (case-insensitive; the service decides).
	Language string `json:"language"`
	// Code is the source to run; required.
	Code string `json:"code"`
	// TimeoutMS is the run's budget in milliseconds; 0 means the service's default.
	TimeoutMS int64 `json:"timeout,omitempty"`
	// Priority is optional; the service defaults to normal.
	Priority Priority `json:"priority,omitempty"`
	// Input is any JSON-encodable value, visible to the code as `input`; nil
	// sends none.
	Input any `json:"input,omitempty"`
	// Ext is string metadata; Ext["space_id"] is the tenant key.
	Ext map[string]string `json:"ext,omitempty"`
}

// Result is the answer of POST /run_code when the code was run (HTTP 200),
// whatever the code did.
type Result struct {
	// Output holds what the code printed and returned.
	Output Output `json:"output"`
	// Metadata describes the run; nil when the service sent none.
	Metadata *Metadata `json:"metadata,omitempty"`
	// Error is a one-line message for timeout, memory_limit, output_limit and
	// crashed; empty otherwise (an uncaught exception is reported in stderr).
	Error string `json:"error,omitempty"`
}

// Output is what a run printed and returned.
type Output struct {
	// Stdout is the captured standard output, return-value markers removed.
	Stdout string `json:"stdout"`
	// Stderr is the captured standard error.
	Stderr string `json:"stderr"`
	// RetVal is the return value as text (JSON for non-string values).
	RetVal string `json:"ret_val"`
}

// Metadata describes a run. Durations are whole milliseconds.
type Metadata struct {
	// TaskID identifies the request.
	TaskID string `json:"task_id"`
	// InstanceID identifies the sandbox that ran the code.
	InstanceID string `json:"instance_id"`
	// Language is the canonical language the code ran as.
	Language string `json:"language"`
	// Status is how the run ended.
	Status Status `json:"status"`
	// ExitCode is 0 on success, 1 on an uncaught exception, n for exit(n).
	ExitCode int `json:"exit_code"`
	// Duration is the execution time, queueing excluded.
	Duration int64 `json:"duration"`
	// QueueTime is the wait before execution.
	QueueTime int64 `json:"queue_time"`
	// Truncated is true when stdout or stderr hit the output cap.
	Truncated bool `json:"truncated"`
	// PoolStats counts the service's sandboxes when the run ended.
	PoolStats *PoolStats `json:"pool_stats,omitempty"`
}

// PoolStats counts sandbox instances.
type PoolStats struct {
	// TotalInstances counts every live sandbox.
	TotalInstances int64 `json:"totalInstances"`
	// IdleInstances counts warm sandboxes ready for a run.
	IdleInstances int64 `json:"idleInstances"`
	// ActiveInstances counts sandboxes running code.
	ActiveInstances int64 `json:"activeInstances"`
}

// Status returns metadata.status, or "" when the service sent no metadata.
func (r *Result) Status() Status {
	if r.Metadata == nil {
		return ""
	}
	return r.Metadata.Status
}

// Err returns nil when the run ended on its own (status success or error),
// and an [*Error] when the run failed: KindTimeout for status timeout,
// KindSandbox for memory_limit, output_limit, crashed or any other failure
// the service reported in the top-level error field.
func (r *Result) Err() error {
	status := r.Status()
	failed := status == StatusTimeout || status == StatusMemoryLimit || status == StatusCrashed
	if r.Error == "" && !failed {
		return nil
	}
	kind := KindSandbox
	if status == StatusTimeout {
		kind = KindTimeout
	}
	msg := r.Error
	if msg == "" {
		msg = fmt.Sprintf("run ended with status %s", status)
	}
	return &Error{Kind: kind, StatusCode: 200, Message: msg, RunStatus: status}
}

// Validation is the answer of POST /validate_code.
type Validation struct {
	// Valid is true when the code parses.
	Valid bool `json:"valid"`
	// Error locates the syntax error when Valid is false.
	Error *SyntaxError `json:"error"`
}

// SyntaxError is a syntax error, located relative to the submitted code.
type SyntaxError struct {
	// Message is what the parser said.
	Message string `json:"message"`
	// Line is 1-based.
	Line int `json:"line"`
	// Column is 1-based.
	Column int `json:"column"`
}

// Health is the answer of GET /health.
type Health struct {
	// Status is "healthy" or "unhealthy".
	Status string `json:"status"`
	// Timestamp is ISO 8601.
	Timestamp string `json:"timestamp"`
	// Version is the service's version.
	Version string `json:"version"`
	// UptimeS is the service's uptime in seconds.
	UptimeS float64 `json:"uptime_s"`
	// Pool holds the instance counts over every language.
	Pool PoolStats `json:"pool"`
	// Scheduler holds the queue's counters.
	Scheduler SchedulerStats `json:"scheduler"`
	// Languages maps each canonical language to its runtime.
	Languages map[string]LanguageInfo `json:"languages"`
	// Raw is the whole body, for fields this type does not name.
	Raw json.RawMessage `json:"-"`
}

// SchedulerStats are the queue's counters reported by /health.
type SchedulerStats struct {
	// TotalTasks counts accepted runs.
	TotalTasks int64 `json:"totalTasks"`
	// CompletedTasks counts finished runs.
	CompletedTasks int64 `json:"completedTasks"`
	// FailedTasks counts runs that failed.
	FailedTasks int64 `json:"failedTasks"`
	// QueuedTasks counts runs waiting for a sandbox.
	QueuedTasks int64 `json:"queuedTasks"`
	// AverageExecutionTime is in milliseconds.
	AverageExecutionTime float64 `json:"averageExecutionTime"`
}

// LanguageInfo says whether a language runtime is available and its version.
type LanguageInfo struct {
	// Available is true while the language can run code.
	Available bool `json:"available"`
	// Version is the runtime's version.
	Version string `json:"version"`
}

// Healthy reports whether the service said it can run code.
func (h *Health) Healthy() bool { return h.Status == "healthy" }

// errorBody is the body of an answer that is not a run.
type errorBody struct {
	Error   string          `json:"error"`
	Details json.RawMessage `json:"details"`
}

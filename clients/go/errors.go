package faas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind classifies an [*Error]. A Kind is itself an error, so that
// errors.Is(err, faas.KindTimeout) tells whether err is of that kind.
type Kind string

const (
	// KindBadInput: the service rejected the request (400, 413) or the client
	// could not build it (unknown language, empty code). Retrying cannot help.
	KindBadInput Kind = "bad_input"
	// KindAuth: the API key is missing or wrong (401, 403).
	KindAuth Kind = "auth"
	// KindNotFound: the route does not exist (404), usually a wrong base URL.
	KindNotFound Kind = "not_found"
	// KindOverload: the service is saturated or draining (503, 429) and stayed
	// so for every attempt the retry policy and the deadline allowed.
	KindOverload Kind = "overload"
	// KindUnavailable: no instance could be reached (transport errors, 502, 504).
	KindUnavailable Kind = "unavailable"
	// KindTimeout: the code ran past its timeout (metadata.status "timeout"), or
	// the caller's context deadline expired first; in the latter case the error
	// also matches context.DeadlineExceeded.
	KindTimeout Kind = "timeout"
	// KindCanceled: the caller's context was canceled.
	KindCanceled Kind = "canceled"
	// KindSandbox: the code was started but its sandbox failed: it hit the
	// memory or output limit or crashed ([Error.RunStatus] says which).
	KindSandbox Kind = "sandbox"
	// KindServer: the service failed (500 or another unexpected status).
	KindServer Kind = "server"
	// KindProtocol: the answer could not be understood (not the contract's JSON).
	KindProtocol Kind = "protocol"
)

// Error implements error so that a Kind can be the target of errors.Is.
func (k Kind) Error() string { return "faas: " + string(k) }

// Error is the error type of this package.
type Error struct {
	// Kind classifies the failure.
	Kind Kind
	// StatusCode is the HTTP status of the last answer; 0 when none came.
	StatusCode int
	// Message is the service's error message, or what went wrong locally.
	Message string
	// Details holds the "details" of a 400 answer, as sent.
	Details json.RawMessage
	// RunStatus is metadata.status for failures reported by a run (KindTimeout,
	// KindSandbox from [Result.Err]); empty otherwise.
	RunStatus Status
	// RetryAfter is the delay the service asked for in its last answer.
	RetryAfter time.Duration
	// URL is the endpoint of the last attempt.
	URL string
	// Attempts is the number of HTTP attempts made.
	Attempts int
	// Err is the underlying cause (transport error, context error, decode error).
	Err error
}

// Error formats the kind, status, message and attempts on one line.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("faas: ")
	b.WriteString(string(e.Kind))
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil && (e.Message == "" || !strings.Contains(e.Message, e.Err.Error())) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is this error's Kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

// KindOf returns the Kind of err when it is (or wraps) an [*Error], else "".
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// kindForStatus maps an HTTP status that is not 200 to a Kind.
func kindForStatus(code int) Kind {
	switch code {
	case 400, 413, 422:
		return KindBadInput
	case 401, 403:
		return KindAuth
	case 404, 405:
		return KindNotFound
	case 429, 503:
		return KindOverload
	case 502, 504:
		return KindUnavailable
	default:
		return KindServer
	}
}

// retryableStatus lists the answers worth another attempt.
func retryableStatus(code int) bool {
	switch code {
	case 429, 502, 503, 504:
		return true
	}
	return false
}

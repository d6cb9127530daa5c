package faas

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// LanguageType is the platform's name of a language.
type LanguageType string

// The platform's language names.
const (
	LanguageJS     LanguageType = "JS"
	LanguagePython LanguageType = "Python"
)

// The canonical wire names of the languages.
const (
	WireJavaScript = "javascript"
	WireTypeScript = "typescript"
	WirePython     = "python"
)

// WireLanguage maps a language name, case-insensitively, to its wire name:
// "JS", "javascript" → "javascript"; "ts", "typescript" → "typescript";
// "Python", "py", "python3" → "python". Anything else is a KindBadInput error.
func WireLanguage(language string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(language)) {
	case "js", "javascript":
		return WireJavaScript, nil
	case "ts", "typescript":
		return WireTypeScript, nil
	case "python", "py", "python3":
		return WirePython, nil
	}
	return "", &Error{Kind: KindBadInput, Message: fmt.Sprintf("expected language JS, javascript, typescript or Python, got %q", language)}
}

// PlatformLanguage maps a language name to the platform's: JavaScript and
// TypeScript are [LanguageJS], Python is [LanguagePython].
func PlatformLanguage(language string) (LanguageType, error) {
	wire, err := WireLanguage(language)
	if err != nil {
		return "", err
	}
	if wire == WirePython {
		return LanguagePython, nil
	}
	return LanguageJS, nil
}

// ExecutionResult is a run as the platform's runtime interface returns it.
type ExecutionResult struct {
	// Output holds stdout, stderr and ret_val.
	Output *ExecutionOutput
	// WorkloadInfo names the sandbox and the run's status.
	WorkloadInfo *WorkloadInfo
	// Metadata is the service's full metadata; nil when it sent none.
	Metadata *Metadata
}

// ExecutionOutput is what a run printed and returned.
type ExecutionOutput struct {
	// Stdout is output.stdout.
	Stdout string
	// Stderr is output.stderr.
	Stderr string
	// RetVal is output.ret_val.
	RetVal string
}

// WorkloadInfo identifies where a run happened and how it ended.
type WorkloadInfo struct {
	// ID is metadata.instance_id.
	ID string
	// Status is metadata.status.
	Status string
}

// Runtime has the method set of the platform's runtime interface
// (RunCode with ext, GetLanguageType, Cleanup) over one client for every
// language, or one client per language.
type Runtime struct {
	clients      map[LanguageType]*Client
	languageType LanguageType
	// grace is added to a run's timeout to bound a call whose context has no
	// deadline: queueing, transport and retries.
	grace time.Duration
}

// defaultRunTimeout is the service's default run timeout (FAAS_TIMEOUT).
const defaultRunTimeout = 30 * time.Second

// defaultValidateTimeout is the budget of a syntax check, as the platform's.
const defaultValidateTimeout = 10 * time.Second

// defaultGrace bounds queueing and retries beyond the run's own timeout.
const defaultGrace = 30 * time.Second

// NewRuntime returns a runtime that sends every language to client.
func NewRuntime(client *Client) *Runtime {
	return &Runtime{
		clients:      map[LanguageType]*Client{LanguageJS: client, LanguagePython: client},
		languageType: LanguageJS,
		grace:        defaultGrace,
	}
}

// NewRuntimePerLanguage returns a runtime that sends each language to its
// own client (as when the service is deployed once per language). A
// language without a client fails with KindBadInput.
func NewRuntimePerLanguage(clients map[LanguageType]*Client) (*Runtime, error) {
	rt := &Runtime{clients: map[LanguageType]*Client{}, grace: defaultGrace}
	for lt, c := range clients {
		if c == nil {
			continue
		}
		if lt != LanguageJS && lt != LanguagePython {
			return nil, &Error{Kind: KindBadInput, Message: fmt.Sprintf("expected language type JS or Python, got %q", lt)}
		}
		rt.clients[lt] = c
	}
	switch {
	case rt.clients[LanguageJS] != nil:
		rt.languageType = LanguageJS
	case rt.clients[LanguagePython] != nil:
		rt.languageType = LanguagePython
	default:
		return nil, &Error{Kind: KindBadInput, Message: "expected a client for JS or Python, got none"}
	}
	return rt, nil
}

// Environment variables read by [FromEnv].
const (
	EnvURL          = "COZE_LOOP_FAAS_URL"
	EnvPythonDomain = "COZE_LOOP_PYTHON_FAAS_DOMAIN"
	EnvPythonPort   = "COZE_LOOP_PYTHON_FAAS_PORT"
	EnvJSDomain     = "COZE_LOOP_JS_FAAS_DOMAIN"
	EnvJSPort       = "COZE_LOOP_JS_FAAS_PORT"
)

// defaultPort is the port the service is deployed at.
const defaultPort = "8000"

// FromEnv builds a runtime from the environment. COZE_LOOP_FAAS_URL (one URL,
// or several separated by commas) serves every language. Otherwise
// COZE_LOOP_PYTHON_FAAS_DOMAIN / COZE_LOOP_PYTHON_FAAS_PORT and
// COZE_LOOP_JS_FAAS_DOMAIN / COZE_LOOP_JS_FAAS_PORT give one endpoint per
// language (the port defaults to 8000; a domain without a scheme gets
// http://). The options apply to every client.
func FromEnv(opts ...Option) (*Runtime, error) {
	return fromLookup(os.LookupEnv, opts...)
}

func fromLookup(lookup func(string) (string, bool), opts ...Option) (*Runtime, error) {
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	if u := get(EnvURL); u != "" {
		c, err := New(u, opts...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvURL, err)
		}
		return NewRuntime(c), nil
	}
	clients := map[LanguageType]*Client{}
	for _, spec := range []struct {
		lt           LanguageType
		domain, port string
	}{{LanguagePython, EnvPythonDomain, EnvPythonPort}, {LanguageJS, EnvJSDomain, EnvJSPort}} {
		domain := get(spec.domain)
		if domain == "" {
			continue
		}
		port := get(spec.port)
		if port == "" {
			port = defaultPort
		}
		c, err := New(domainURL(domain, port), opts...)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", spec.domain, spec.port, err)
		}
		clients[spec.lt] = c
	}
	if len(clients) == 0 {
		return nil, &Error{Kind: KindBadInput, Message: fmt.Sprintf("expected %s, or %s and/or %s, to be set", EnvURL, EnvPythonDomain, EnvJSDomain)}
	}
	return NewRuntimePerLanguage(clients)
}

// domainURL joins a domain (with or without scheme) and a port.
func domainURL(domain, port string) string {
	scheme := "http://"
	if i := strings.Index(domain, "://"); i >= 0 {
		scheme, domain = domain[:i+3], domain[i+3:]
	}
	domain = strings.TrimRight(domain, "/")
	return scheme + domain + ":" + port
}

// ForLanguage returns a runtime that shares r's clients and reports lt from
// GetLanguageType, as a runtime factory creating one runtime per language needs.
func (r *Runtime) ForLanguage(lt LanguageType) *Runtime {
	cp := *r
	cp.languageType = lt
	return &cp
}

// GetLanguageType returns the language this runtime was created for.
func (r *Runtime) GetLanguageType() LanguageType { return r.languageType }

// Client returns the client that serves language, or a KindBadInput error.
func (r *Runtime) Client(language string) (*Client, error) {
	lt, err := PlatformLanguage(language)
	if err != nil {
		return nil, err
	}
	c := r.clients[lt]
	if c == nil {
		return nil, &Error{Kind: KindBadInput, Message: fmt.Sprintf("no service endpoint is configured for %s code (set %s or the %s domain)", lt, EnvURL, lt)}
	}
	return c, nil
}

// RunCode runs code in language (JS, Python or any wire name) with a timeout
// in milliseconds (0: the service's default) and ext (ext["space_id"] is the
// tenant). When ctx has no deadline the call is bounded by the timeout plus
// 30 s for queueing and retries.
//
// An uncaught exception in the code is not an error: it returns a result
// whose stderr holds the trace. When the service reports a failure of the
// run (timeout, memory limit, output limit, crash), RunCode returns both the
// result (with whatever the code wrote) and an [*Error] of KindTimeout or
// KindSandbox. Other failures return a nil result.
func (r *Runtime) RunCode(ctx context.Context, code, language string, timeoutMS int64, ext map[string]string) (*ExecutionResult, error) {
	wire, err := WireLanguage(language)
	if err != nil {
		return nil, err
	}
	c, err := r.Client(language)
	if err != nil {
		return nil, err
	}
	if code == "" {
		return nil, &Error{Kind: KindBadInput, Message: "expected non-empty code"}
	}
	if timeoutMS < 0 {
		return nil, &Error{Kind: KindBadInput, Message: fmt.Sprintf("expected a timeout of 0 (default) or more milliseconds, got %d", timeoutMS)}
	}
	if _, ok := ctx.Deadline(); !ok {
		budget := defaultRunTimeout
		if timeoutMS > 0 {
			budget = time.Duration(timeoutMS) * time.Millisecond
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, budget+r.grace)
		defer cancel()
	}
	res, err := c.RunCode(ctx, Request{Language: wire, Code: code, TimeoutMS: timeoutMS, Ext: ext})
	if err != nil {
		return nil, err
	}
	out := &ExecutionResult{
		Output:   &ExecutionOutput{Stdout: res.Output.Stdout, Stderr: res.Output.Stderr, RetVal: res.Output.RetVal},
		Metadata: res.Metadata,
	}
	if res.Metadata != nil {
		out.WorkloadInfo = &WorkloadInfo{ID: res.Metadata.InstanceID, Status: string(res.Metadata.Status)}
	}
	return out, res.Err()
}

// ValidateCode reports whether code parses in language. Any failure to get
// an answer counts as invalid; use [Client.ValidateCode] for the position of
// a syntax error or the reason of a failure.
func (r *Runtime) ValidateCode(ctx context.Context, code, language string) bool {
	wire, err := WireLanguage(language)
	if err != nil {
		return false
	}
	c, err := r.Client(language)
	if err != nil || code == "" {
		return false
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultValidateTimeout+r.grace)
		defer cancel()
	}
	v, err := c.ValidateCode(ctx, wire, code)
	return err == nil && v.Valid
}

// Cleanup closes idle connections; the runtime stays usable.
func (r *Runtime) Cleanup() error {
	seen := map[*Client]bool{}
	for _, c := range r.clients {
		if !seen[c] {
			seen[c] = true
			c.CloseIdleConnections()
		}
	}
	return nil
}

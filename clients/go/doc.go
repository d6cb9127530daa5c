// Package faas is the Go client of the faas-sandbox code-execution service.
//
// A [Client] sends code to one or several service instances (round-robin, with
// failover), retries only what is safe to retry, and returns typed errors. A
// [Runtime] wraps clients with the method set of the evaluation platform's
// runtime interface, so a Go backend switches to the service with one line:
//
//	rt, err := faas.FromEnv()
//
// # What is retried
//
// Transport errors and the answers 502, 503, 504 and 429 are retried, with
// capped exponential backoff and jitter, honouring Retry-After, and never past
// the context's deadline. A 200 is never retried (the code has run and must not
// run twice), nor is a 400, 401, 404 or 413 (the same request would fail again).
//
// # Errors
//
// Every error returned by this package is an [*Error] whose [Kind] tells bad
// input, auth, overload, timeout and sandbox failures apart:
//
//	if errors.Is(err, faas.KindOverload) { ... }
//
// A run that answered 200 is a [Result] even when the code failed; its
// [Result.Err] method turns a timeout, memory limit or crash into an [*Error].
package faas

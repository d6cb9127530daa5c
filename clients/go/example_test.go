package faas_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	faas "faas-sandbox/clients/go"
)

// fakeService answers like the service would for the seed example.
func fakeService() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/run_code":
			_, _ = io.WriteString(w, `{"output":{"stdout":"Hello World\n","stderr":"","ret_val":"42"},
				"metadata":{"task_id":"t1","instance_id":"js-1","language":"javascript","status":"success",
				"exit_code":0,"duration":3,"queue_time":0,"truncated":false,
				"pool_stats":{"totalInstances":10,"idleInstances":9,"activeInstances":1}},"error":""}`)
		case "/validate_code":
			_, _ = io.WriteString(w, `{"valid":false,"error":{"message":"Unexpected token","line":1,"column":5}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no route"}`)
		}
	}))
}

func Example() {
	srv := fakeService() // stands for http://faas:8000
	defer srv.Close()

	client, err := faas.New(srv.URL, faas.WithRetryPolicy(faas.RetryPolicy{MaxAttempts: 3}))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := client.RunCode(ctx, faas.Request{
		Language:  "javascript",
		Code:      "console.log('Hello World'); return 42;",
		TimeoutMS: 5000,
		Ext:       map[string]string{"space_id": "123"},
	})
	switch {
	case errors.Is(err, faas.KindBadInput):
		fmt.Println("rejected:", err)
	case err != nil:
		fmt.Println("not run:", err)
	case res.Err() != nil:
		fmt.Println("run failed:", res.Err())
	default:
		fmt.Printf("status=%s stdout=%q ret_val=%s\n", res.Status(), res.Output.Stdout, res.Output.RetVal)
	}
	// Output: status=success stdout="Hello World\n" ret_val=42
}

func ExampleRuntime_RunCode() {
	srv := fakeService()
	defer srv.Close()

	// In a backend: rt, err := faas.FromEnv() reads COZE_LOOP_FAAS_URL.
	client, err := faas.New(srv.URL)
	if err != nil {
		panic(err)
	}
	rt := faas.NewRuntime(client)
	res, err := rt.RunCode(context.Background(), "console.log('Hello World'); return 42;", "JS", 5000, nil)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Printf("%q %q %q\n", res.Output.Stdout, res.Output.Stderr, res.Output.RetVal)
	// Output: "Hello World\n" "" "42"
}

func ExampleClient_ValidateCode() {
	srv := fakeService()
	defer srv.Close()

	client, err := faas.New(srv.URL)
	if err != nil {
		panic(err)
	}
	v, err := client.ValidateCode(context.Background(), "js", "if (")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Printf("valid=%v line=%d column=%d\n", v.Valid, v.Error.Line, v.Error.Column)
	// Output: valid=false line=1 column=5
}

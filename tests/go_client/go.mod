module faas-sandbox/tests/go_client

go 1.19

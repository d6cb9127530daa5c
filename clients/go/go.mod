module faas-sandbox/clients/go

go 1.19

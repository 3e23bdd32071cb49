"""Real parts on loopback for tests, the demo and benchmarks: nats-server, HTTP servers, the worker."""

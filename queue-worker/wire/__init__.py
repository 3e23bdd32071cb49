"""The message format: the gateway's ``QueueRequest`` as Go writes and reads it, Go's URL
rules, and what a request may invoke. Pure functions, no I/O."""

"""``make demo``: the whole product on loopback, started, exercised and stopped in one command."""

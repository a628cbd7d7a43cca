"""Where stages meet their inputs and outputs: each runner is a function of (inbox, outbox)."""

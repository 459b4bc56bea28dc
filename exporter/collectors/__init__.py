"""One collector per module; each is polled by the runner on its own interval."""

"""Helpers for tests and benches: real services started on loopback ports (``sshd``)."""

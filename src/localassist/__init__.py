"""localassist: a private, offline, terminal-first AI assistant."""

__version__ = "0.1.0"

"""The command line: parses, calls the core, renders. The only layer that prints."""

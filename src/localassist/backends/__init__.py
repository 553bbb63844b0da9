"""Inference backends. Each implements :class:`localassist.generation.Backend`."""

"""The project's words, each defined once: roles, reason codes, flags and gate names."""

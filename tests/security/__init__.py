"""Security tests: admission and decoding under hostile input."""

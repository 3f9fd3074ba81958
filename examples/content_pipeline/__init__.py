"""Content pipeline: research, then writing and fact-checking in parallel, then editing."""

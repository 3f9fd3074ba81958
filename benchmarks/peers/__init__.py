"""W1-W3 of :mod:`benchmarks.run` on AgenticFlow's peers: Temporal, Celery and Ray.

``python -m benchmarks.peers`` (``make bench-peers``) runs each selected system
in a child process of its own (``python -m benchmarks.peers.<peer>_bench``),
one after another, then prints one table and writes
``benchmarks/results/peers.json``. Every server and worker listens on
127.0.0.1 only; Ray, which binds a non-loopback address whatever it is told,
runs inside a network namespace that has nothing but loopback.

Nothing here is imported by the framework: the peers' packages come from the
``peers`` extra, installed one peer at a time by
``python -m benchmarks.peers.install`` so that one failing install only skips
that peer.
"""

# AgenticFlow: `make demo` and `make test` are the two commands a new user needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CODE   := agenticflow coordinator worker shared examples tests benchmarks docs

.PHONY: install demo test redis-server chromium lint typecheck imports docs unit integration chaos bench bench-replay bench-tools bench-telemetry bench-security bench-supervisor bench-peers bench-scaling bench-backends bench-streaming bench-gateway bench-compare bench-report clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m agenticflow.examples.demo

lint: $(STAMP)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/ruff check $(CODE)

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

# The docs site (mkdocs.yml, docs/) into site/; --strict: a broken link or a warning fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The redis backend's tests start Debian's redis-server: installed here when
# missing and this is root with apt-get (CI); otherwise say how.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server"; \
	    apt-get install -y -q redis-server >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null; }; \
	  else echo "redis-server is missing: install it (Debian: apt-get install redis-server)"; fi; }

# The console's browser tests drive Debian's chromium: installed here when
# missing and this is root with apt-get (CI); otherwise they skip, saying how.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "chromium is missing: the browser tests will skip (Debian: apt-get install chromium)"; fi; }

# Three pytest workers on the two cores (most tests wait on servers, not the CPU:
# 15 min instead of 19); a file's tests stay on one worker (its module-scoped
# servers are started once).
test: lint typecheck imports docs redis-server chromium
	$(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=30 --cov --cov-report=term:skip-covered

chaos: $(STAMP)
	$(BIN)/pytest tests/chaos -q -p no:cacheprovider -s -m chaos

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run
	$(MAKE) bench-replay
	$(MAKE) bench-tools
	$(MAKE) bench-telemetry
	$(MAKE) bench-security
	$(MAKE) bench-supervisor
	$(MAKE) bench-scaling
	$(MAKE) bench-streaming
	$(MAKE) bench-gateway

# Replay (read, decode, fold, verify) on streams of 100,000+ events; results/replay.json.
# Options: make bench-replay REPLAY_ARGS='--quick' (or '--synthetic --runs 1')
REPLAY_ARGS ?=
bench-replay: $(STAMP)
	$(BIN)/python -m benchmarks.replay $(REPLAY_ARGS)

# Latency a tool call through the registry adds over a bare call; results/tools.json.
# Options: make bench-tools TOOLS_ARGS='--calls 500'
TOOLS_ARGS ?=
bench-tools: $(STAMP)
	$(BIN)/python -m benchmarks.tools $(TOOLS_ARGS)

# W1-W3 with tracing and metrics on (OTLP to a local stand-in collector) against off.
# Options: make bench-telemetry TELEMETRY_ARGS='--quick --rounds 1'
TELEMETRY_ARGS ?=
bench-telemetry: $(STAMP)
	$(BIN)/python -m benchmarks.telemetry $(TELEMETRY_ARGS)

# Signing and encryption against neither (benchmarks/security.py).
# Options: make bench-security SECURITY_ARGS='--quick --rounds 1 --modes sign encrypt both'
bench-security: $(STAMP)
	$(BIN)/python -m benchmarks.security $(SECURITY_ARGS)

# Planning time of the rules planner, 7 to 200 steps (benchmarks/supervisor.py).
# Options: make bench-supervisor SUPERVISOR_ARGS='--runs 50'
SUPERVISOR_ARGS ?=
bench-supervisor: $(STAMP)
	$(BIN)/python -m benchmarks.supervisor $(SUPERVISOR_ARGS)

# Throughput with 1, 2, 4 workers and 1, 2 coordinators on I/O-bound tasks; results/scaling.json.
# Streaming throughput: one task's ctx.stream tokens read live by one client
# (benchmarks/streaming.py; results/streaming.json).
# Options: make bench-streaming STREAMING_ARGS='--chunks 5000 --runs 1'
STREAMING_ARGS ?=
bench-streaming: $(STAMP)
	$(BIN)/python -m benchmarks.streaming $(STREAMING_ARGS)

# The HTTP gateway's added latency: start -> result through `agenticflow gateway`
# against the Python client directly, p50/p99 (benchmarks/gateway.py; results/gateway.json).
# Options: make bench-gateway GATEWAY_ARGS='--rounds 50'
GATEWAY_ARGS ?=
bench-gateway: $(STAMP)
	$(BIN)/python -m benchmarks.gateway $(GATEWAY_ARGS)

# Options: make bench-scaling SCALING_ARGS='--quick' (or '--rounds 5 --latency-ms 100')
SCALING_ARGS ?=
bench-scaling: $(STAMP)
	$(BIN)/python -m benchmarks.scaling $(SCALING_ARGS)

# W1-W3 on AgenticFlow, Temporal, Celery + Redis and Ray (benchmarks/peers). Each
# peer's packages (the `peers` extra) install on their own: one that fails is skipped.
# Options: make bench-peers PEERS_ARGS='--quick --runs 1 --only agenticflow celery'
PEERS_ARGS ?=
bench-peers: $(STAMP)
	$(BIN)/python -m benchmarks.peers.install
	$(BIN)/python -m benchmarks.peers $(PEERS_ARGS)

# The performance section of README.md and docs/guides/performance.md (between
# <!-- bench:begin --> and <!-- bench:end -->) and its charts in docs/assets/performance/,
# from what make bench, bench-peers and bench-scaling last wrote to benchmarks/results/.
# Options: make bench-report REPORT_ARGS='--check' (exit 1 when the section is stale)
REPORT_ARGS ?=
bench-report: $(STAMP)
	$(BIN)/python -m benchmarks.report $(REPORT_ARGS)

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage

# W1-W3 and W5 on nats, redis and memory, side by side (benchmarks/backends.py).
bench-backends: $(STAMP) redis-server
	$(BIN)/python -m benchmarks.backends

# The working tree against BASE (a git revision), A B A B on fresh clusters:
# ratios with their spread; exits 1 when a figure is worse beyond the noise.
bench-compare: $(STAMP)
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=<git revision>"; exit 2; }
	$(BIN)/python -m benchmarks.compare "$(BASE)"

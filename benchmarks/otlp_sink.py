"""A stand-in OpenTelemetry collector for benchmarks: ``python -m benchmarks.otlp_sink``.

Accepts OTLP/HTTP exports (``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs``),
reads them whole, answers 200 with an empty protobuf body, and counts requests
and bytes per path; ``GET /counts`` returns the counts as JSON. It prints its
port on the first line of stdout (``--port 0``, the default, picks a free one).
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_counts: Counter[str] = Counter()
_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        with _lock:
            _counts[f"{self.path} requests"] += 1
            _counts[f"{self.path} bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(dict(_counts)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per export would drown the benchmark's output."""


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_sink")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

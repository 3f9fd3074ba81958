"""Create the init Job's Secrets, or tell whether they exist (stdlib only).

    python publish_secrets.py check  NAMESPACE/NAME=DIR ...
    python publish_secrets.py create NAMESPACE/NAME=DIR ...

check: exit 0 when every Secret exists, 3 when none does, 1 when only some do.
create: one Secret per directory; each file below it is a key named after the
file (nats/ca.pem -> ca.pem). Talks to the API server with the pod's service
account token, verified against its CA.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ACCOUNT = Path(
    os.environ.get("SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
)


def call(method: str, path: str, body: dict[str, Any] | None = None) -> int:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    host = f"[{host}]" if ":" in host else host
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Bearer " + (ACCOUNT / "token").read_text().strip(),
            "Content-Type": "application/json",
        },
    )
    context = ssl.create_default_context(cafile=str(ACCOUNT / "ca.crt"))
    try:
        # An https:// URL built here, never a caller's.
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def main(action: str, specs: list[str]) -> int:
    secrets: list[tuple[str, str, Path]] = []
    for spec in specs:
        where, _, folder = spec.partition("=")
        namespace, _, name = where.partition("/")
        secrets.append((namespace, name, Path(folder)))
    if action == "check":
        found = []
        for namespace, name, _ in secrets:
            status = call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
            if status not in (200, 404):
                sys.exit(f"GET secret {namespace}/{name}: HTTP {status}")
            if status == 200:
                found.append(f"{namespace}/{name}")
        if len(found) == len(secrets):
            return 0
        if found:
            print(f"only some Secrets exist ({', '.join(found)}): delete them to start again")
            return 1
        return 3
    for namespace, name, source in secrets:
        files = sorted(p for p in source.rglob("*") if p.is_file())
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "agenticflow"}},
            "type": "Opaque",
            "data": {p.name: base64.b64encode(p.read_bytes()).decode() for p in files},
        }
        status = call("POST", f"/api/v1/namespaces/{namespace}/secrets", body)
        if status != 201:
            sys.exit(f"create secret {namespace}/{name}: HTTP {status}")
        print(f"created Secret {namespace}/{name}: {', '.join(sorted(body['data']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))

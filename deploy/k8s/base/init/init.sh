# The first start of deploy/k8s (Job agenticflow-init, init-job.yaml): generate the
# credentials and keys unless the Secrets exist, and publish each role's own files
# as its Secret. AF_SECRETS, AF_EXPORT and AF_INIT move its directories (tests).
set -eu
publish="python ${AF_INIT:-/opt/agenticflow-init}/publish_secrets.py"
# nats-auth first: without deploy/k8s/nats's Role it fails before anything exists.
secrets_list="nats/nats-auth=nats agenticflow/agenticflow-coordinator=coordinator agenticflow/agenticflow-worker=worker agenticflow/agenticflow-cli=cli"
# Secrets already there: never regenerate what running pods use.
state=0
$publish check $secrets_list || state=$?
if [ "$state" -eq 0 ]; then
  echo "credentials and keys already in place"
  exit 0
fi
[ "$state" -eq 3 ]  # 3: none yet (anything else: stop, and say why above)
# The same generation as deploy/compose.yaml's init service.
umask 077
secrets=${AF_SECRETS:-/etc/agenticflow}
out=${AF_EXPORT:-/srv/agenticflow}
if [ ! -e "$secrets/nats/nats-server.conf" ]; then
  agenticflow nats-config "$secrets/nats" --prefix "$AGENTICFLOW_PREFIX" --host 0.0.0.0 --port 4222 --worker agents=triage,technical_resolution,manager_escalation
fi
if [ ! -e "$secrets/keys/trust.json" ]; then
  agenticflow keys init "$secrets/keys" --identity coordinator:coordinator --identity worker:worker --identity client:client
fi
if [ ! -e "$secrets/nats/cluster.conf" ]; then
  python -c 'import secrets, sys; pw = secrets.token_urlsafe(32); routes = "".join(f"  \"nats-route://route:{pw}@{h}:6222\"\n" for h in sys.argv[2:]); open(sys.argv[1] + ".new", "w").write(f"authorization {{ user: \"route\", password: \"{pw}\" }}\nroutes: [\n{routes}]\n")' "$secrets/nats/cluster.conf" $NATS_ROUTE_HOSTS
  mv "$secrets/nats/cluster.conf.new" "$secrets/nats/cluster.conf"
fi
share() {
  role=$1; shift
  for file in "$@"; do
    mkdir -p "$out/$role/${file%/*}"
    cp "$secrets/$file" "$out/$role/$file"
  done
}
share coordinator nats/ca.pem nats/coordinator.nk keys/trust.json keys/data-keys.json keys/coordinator.key
share worker nats/ca.pem nats/worker-agents.nk keys/trust.json keys/data-keys.json keys/worker.key
share cli nats/ca.pem nats/admin.nk keys/trust.json keys/data-keys.json keys/client.key
# NATS: the users block alone (the chart writes listen, TLS and JetStream).
mkdir -p "$out/nats/nats"
sed -n '/^authorization {/,$p' "$secrets/nats/nats-server.conf" > "$out/nats/nats/auth.conf"
share nats nats/server.pem nats/server-key.pem nats/cluster.conf
(cd "$out" && $publish create $secrets_list)

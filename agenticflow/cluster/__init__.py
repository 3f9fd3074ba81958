"""Process tooling: the embedded nats-server, local and dev clusters, NATS
clusters and credentials, and the autoscaler."""

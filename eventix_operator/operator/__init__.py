"""The Kubernetes operator: `eventix operator`."""

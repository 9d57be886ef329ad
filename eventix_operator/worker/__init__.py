"""The task worker: `eventix worker`."""

"""End-to-end tests: a real Envoy, TCP backends and the control plane, all on loopback (see harness/)."""

"""`make demo`: the control plane on examples/, a real Envoy, sample backends, and traffic through both listeners."""

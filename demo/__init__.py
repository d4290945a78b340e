"""`make demo`: the control plane on examples/, two real Envoys, sample backends, and traffic through their listeners,
on free loopback ports (or the block `--ports BASE` pins)."""

"""Pure translation from the world to Envoy resources: one module per xDS type, and `node` to assemble them."""

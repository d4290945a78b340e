"""Where objects come from: manifest files, Kubernetes clusters. Each feeds the World and reports a SourceStatus."""

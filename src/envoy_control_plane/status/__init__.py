"""Status of what the control plane was asked to do: conditions per listener, and the writer that reports them."""

"""PyTorch models of the pipeline (B, U, O, V, X, D) and their shared training engine."""

"""PyTorch models of the pipeline (B, U, O, V) and their shared training engine."""

"""Retail Pulse: the code every function shares (the Lambda layer's one package)."""

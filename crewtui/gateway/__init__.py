"""The model API gateway: a loopback HTTP server that forwards model APIs upstream, per-session budgets."""

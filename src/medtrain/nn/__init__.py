"""Reusable torch building blocks (plain nn.Modules and functions; no Lightning, configs or files)."""

"""Supernets: mixed ops, cells and networks that take the architecture as an input."""

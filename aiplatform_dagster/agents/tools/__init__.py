"""Agent tools: typed, validated, guarded calls (base.py) and the shipped tools (catalog.py)."""

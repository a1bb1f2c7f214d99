"""LangGraph workflows: one module per execution mode, sharing the governed steps in steps.py."""

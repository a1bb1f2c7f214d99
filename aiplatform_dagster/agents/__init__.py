"""Agents: a YAML registry of agents, a registry of governed tools, and LangGraph workflows
(sequential, parallel, hierarchical) with durable threads. Plain Python, no Dagster import."""

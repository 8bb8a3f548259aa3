"""Orchestration: the engine that advances the catalog, and thin Prefect flows over it."""

"""Orchestrator-side imaging helpers: line catalogue, product names, previews."""

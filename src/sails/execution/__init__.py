"""Backends that run a job: ``local`` (child process, default) and ``canfar`` (headless)."""

from sails.execution.base import Backend, JobResult, JobSpec
from sails.execution.registry import get_backend

__all__ = ["Backend", "JobResult", "JobSpec", "get_backend"]

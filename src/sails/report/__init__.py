"""Static HTML survey report (``sails report``) and log lookup (``sails logs``).

Read-only with respect to the catalog. Entry points: :func:`build_report` (returns the
path of ``index.html``) and :func:`generate` (also says what was rewritten).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sails.report.build import BuildResult, build_report, generate

__all__ = ["BuildResult", "build_report", "generate"]


def __getattr__(name: str):
    # Lazy: importing sails.report must not pull in matplotlib for `sails logs`.
    if name in __all__:
        from sails.report import build

        return getattr(build, name)
    raise AttributeError(name)

"""sails.casa.tools: every tool is let go, also when opening or the block fails (no CASA)."""

from __future__ import annotations

import sys
import types

import pytest

from sails.casa.tools import opened, released


class _Tool:
    def __init__(self, calls: list[str], fail_open: bool = False) -> None:
        self.calls, self.fail_open = calls, fail_open

    def open(self, path: str, **kw: object) -> None:
        self.calls.append(f"open {path} {sorted(kw.items())}")
        if self.fail_open:
            raise RuntimeError("cannot open")

    def close(self) -> None:
        self.calls.append("close")

    def done(self) -> None:
        self.calls.append("done")


@pytest.fixture
def fake_casatools(monkeypatch):
    calls: list[str] = []
    mod = types.SimpleNamespace(table=lambda: _Tool(calls), msmetadata=lambda: _Tool(calls),
                                synthesisutils=lambda: _Tool(calls),
                                image=lambda: _Tool(calls, fail_open=True))
    monkeypatch.setitem(sys.modules, "casatools", mod)
    return calls


def test_opened_closes_after_the_block_and_after_an_error(fake_casatools):
    with opened("table", "x.ms", nomodify=False) as tb:
        assert isinstance(tb, _Tool)
    assert fake_casatools == ["open x.ms [('nomodify', False)]", "close"]
    fake_casatools.clear()
    with pytest.raises(ValueError), opened("table", "y.ms"):
        raise ValueError("boom")
    assert fake_casatools == ["open y.ms []", "close"]


def test_opened_closes_when_open_fails_and_finishes_each_kind_its_way(fake_casatools):
    with pytest.raises(RuntimeError, match="cannot open"), opened("image", "z.im"):
        pass
    assert fake_casatools[-1] == "close"
    fake_casatools.clear()
    with opened("msmetadata", "m.ms"):
        pass
    with opened("synthesisutils"):
        pass
    assert fake_casatools == ["open m.ms []", "close", "done", "done"]


def test_released_runs_the_named_methods(fake_casatools):
    tool = _Tool(fake_casatools)
    with released(tool, "done") as got:
        assert got is tool
    with released(tool):
        pass
    assert fake_casatools == ["done", "close"]

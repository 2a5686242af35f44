"""workbench.progress: one bar, drawn only when enabled and only on a terminal."""

from __future__ import annotations

import io

from workbench.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_disabled_bar_passes_items_through_and_draws_nothing(capsys):
    bar = progress(range(5), desc="x", enabled=False)
    assert list(bar) == [0, 1, 2, 3, 4]
    manual = progress(total=3, enabled=False)
    manual.update(2)
    manual.set_postfix(loss="1")
    manual.close()
    assert capsys.readouterr().err == ""


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    """capsys' stderr is no terminal: logs stay free of bar frames even with the bar on."""
    assert list(progress(range(3), desc="quiet")) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err


def test_bar_on_a_terminal(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    with progress(total=4, desc="tiles", unit="tile", initial=1, leave=True) as bar:
        bar.update(3)
    text = term.getvalue()
    assert "tiles" in text and "4/4" in text and "tile" in text

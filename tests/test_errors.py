"""Tests of supermask.errors."""

from __future__ import annotations

import pytest

from supermask import cli


def test_library_errors_share_one_base_and_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask
    from supermask import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), supermask.SupermaskError)
    monkeypatch.setattr(cli, "_cmd_report", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["report", "x"])

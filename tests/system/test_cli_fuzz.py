"""A fuzz test of the command line's argument surface (issue 25, item 4): for any keys, values, YAML
documents (aliases, tags) and paths, ``supermask`` succeeds or prints one line and exits 2; never a
traceback, never a hang, never a file changed outside its run folder."""

from __future__ import annotations

import contextlib
import io
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from supermask import cli  # noqa: E402
from supermask.runconfig import valid_keys  # noqa: E402

KEYS = st.one_of(
    st.sampled_from(valid_keys()),
    st.sampled_from(["supermask.options.period", "supermask.options.scope", "supermask.options.x"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-", min_size=0, max_size=20),
)


SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "null",
            "~",
            "auto",
            "0x1F",
            "0o17",
            "1e400",
            "-1e400",
            ".nan",
            ".inf",
            "",
            "1" + "0" * 400,
            "'quoted'",
            "[1, 2]",
            "{a: 1}",
            "[[[[[[[[[[]]]]]]]]]]",
            "x" * 5000,
        ]
    ),  # fmt: skip
    st.text(max_size=30),
)


TAGS = st.sampled_from(["!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "!!binary aGk=",
                        "!!set {a, b}", "!!omap [a: 1]", "!!timestamp 2001-12-14", "!custom x", "&a [*a]", "*nothing"])  # fmt: skip


def _bomb(depth: int, width: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['1'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines)


DOCUMENTS = st.one_of(
    st.builds(lambda d, w: _bomb(d, w) + "\nmodel: {name: mlp}\n", st.integers(1, 12), st.integers(1, 12)),
    st.builds(
        lambda k, v: "\n".join(f"{a}: {{{b}: {c}}}" for a, b, c in zip(k, k, v)),
        st.lists(st.sampled_from(["model", "data", "optim", "train", "supermask", "x"]), max_size=4),
        st.lists(st.one_of(SCALARS, TAGS), max_size=4),
    ),  # fmt: skip
    st.text(max_size=200),
    TAGS,
)


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


#: the most Python memory one CLI call may allocate (a YAML alias bomb grew past 1.7 GB before the bounds)
MAX_PEAK_BYTES = 256 * 2**20


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    tracemalloc.start()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse's own errors (an item read as an option): exit 2, one line too
                code = int(exc.code or 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES, f"{argv!r:.200}: {peak / 2**20:.0f} MiB at its peak"  # bounded memory, too
    return code, err.getvalue()


def _check(code: int, err: str, seconds: float) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("supermask: error: ") and err.count("\n") == 1 and len(err) < 2000, err
    assert seconds < 10, f"{seconds:.1f} s"


FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(items=st.lists(st.tuples(KEYS, st.one_of(SCALARS, TAGS)), max_size=4))
def test_any_overrides(items: list[tuple[str, str]], tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    code, err = _run(["train", "--print-config", f"train.out_dir={tmp_path}/runs", *(f"{k}={v}" for k, v in items)])
    _check(code, err, time.perf_counter() - t0)
    assert _snapshot(tmp_path) == before  # --print-config writes nothing


@FUZZ
@given(document=DOCUMENTS)
def test_any_config_file(document: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(document)
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    code, err = _run(["train", str(path), "--print-config"])
    _check(code, err, time.perf_counter() - t0)
    assert _snapshot(tmp_path) == before


@FUZZ
@given(
    command=st.sampled_from(["eval", "export", "report"]),
    path=st.one_of(
        st.text(max_size=40), st.sampled_from(["", ".", "/dev/null", "/etc/passwd", "x" * 5000, "a/" * 3000])
    ),
)
def test_any_path(command: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "\x00" in path:
        path = path.replace("\x00", "")
    monkeypatch.chdir(tmp_path)
    report = str(tmp_path / "report")  # the one folder the command may write (a report found runs to table)
    before = {p: m for p, m in _snapshot(tmp_path).items() if not p.startswith(report)}
    argv = [command, path] + ([str(tmp_path / "out")] if command == "export" else [])
    argv += ["--out", str(tmp_path / "report")] if command == "report" else []
    t0 = time.perf_counter()
    code, err = _run(argv)
    _check(code, err, time.perf_counter() - t0)
    after = {p: m for p, m in _snapshot(tmp_path).items() if not p.startswith(report)}
    assert after == before

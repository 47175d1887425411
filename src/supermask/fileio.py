"""Writing files so that a crash or a full disk never leaves a half-written one.

Files are created with the user's umask (as ``open`` does; ``tempfile.mkstemp`` would make them
0600, unreadable by collaborators). An ``OSError`` becomes a :class:`StorageError` naming the path,
and the temporary file is removed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from supermask.errors import StorageError

TEMP_PREFIX = ".tmp-supermask-"


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (same folder, so ``os.replace`` is atomic)."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")


def _open_new(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, as open() does
    return os.fdopen(fd, "wb")


@contextmanager
def atomic_writer(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[IO[bytes]]:
    """Yield a binary file; on success it replaces ``path`` atomically, on any error it is removed."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        with _open_new(tmp) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, fsync) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def remove_temp_files(folder: Path) -> None:
    """Remove temporary files a killed writer left in ``folder``."""
    if folder.is_dir():
        for p in folder.glob(f"{TEMP_PREFIX}*"):
            p.unlink(missing_ok=True)


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` that names the path when it fails."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create folder {p}: {exc.strerror or exc}") from exc
    return p


def write_all(files: dict[Path, bytes | str], fsync: bool = True) -> None:
    """Write several files as one step: every target is checked, then each is written to a temporary
    file beside it, and only when all are written do they replace their targets. A failure (a target
    that is a folder, a full disk) leaves every earlier file as it was and no temporary file behind."""
    for path in files:
        if path.is_dir():
            raise StorageError(f"cannot write {path}: it is a folder; move it away or choose another --out")
    written: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            tmp = temp_path(path)
            written.append((tmp, path))
            with _open_new(tmp) as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
    except OSError as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {written[-1][1]}: {exc.strerror or exc}") from exc
    for tmp, path in written:
        try:
            os.replace(tmp, path)
        except OSError as exc:
            for t, _ in written:
                t.unlink(missing_ok=True)
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


#: the largest JSON file supermask reads back (a result or a checkpoint's metadata is kilobytes)
MAX_JSON_BYTES = 64 << 20


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file written by supermask, or by anyone: a file that cannot be read, is not UTF-8, is not
    JSON, is larger than :data:`MAX_JSON_BYTES` or nests deeper than Python parses is a
    :class:`StorageError` naming it (never a traceback)."""
    import json

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES >> 20} MiB")
        return json.loads(data.decode("utf-8"))
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except RecursionError:
        raise StorageError(f"{path} cannot be read as JSON (nested too deeply)") from None
    except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        raise StorageError(f"{path} cannot be read as JSON ({str(exc)[:200]})") from exc

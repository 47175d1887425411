"""Downloads with md5 checks, written atomically; archives extracted only when no member can escape."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from supermask.data.registry import DatasetInfo
from supermask.errors import DataError
from supermask.fileio import atomic_writer, make_dirs


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically (with the user's umask), keeping it only if its md5 matches."""
    make_dirs(dest.parent)
    hint = f"If this machine is offline, put the file in the data root ({dest.parent}) yourself"
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"cannot download {url}: {exc}. {hint}") from exc
    digest = hashlib.md5()
    with response, atomic_writer(dest, fsync=False) as out:  # removed unless the md5 matches
        while True:
            try:
                chunk = response.read(1 << 20)
            except (OSError, TimeoutError) as exc:  # a network error, not a disk error
                raise DataError(f"cannot download {url}: {exc}. {hint}") from exc
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"downloaded {url} has md5 {digest.hexdigest()}, expected {md5}: the file is corrupt or not the "
                "expected one, so it was discarded"
            )
    return dest


def fetch(name: str, root: Path, info: DatasetInfo) -> dict[str, Path]:
    """Paths of the data set's files, found in ``root`` or ``root/name`` (or torchvision's ``root/MNIST/raw``),
    gzipped or, where the unpacked md5 is known, unpacked; else downloaded. Every file md5-checked."""
    found: dict[str, Path] = {}
    folders = [root, root / name, *[root / d / "raw" for d in info.torchvision_folders]]
    for remote in info.files:
        path = next((f / remote.name for f in folders if (f / remote.name).is_file()), None)
        unpacked = remote.name.removesuffix(".gz")
        if path is None and remote.unpacked_md5 is not None:
            path = next((f / unpacked for f in folders if (f / unpacked).is_file()), None)
            if path is not None:
                if md5sum(path) != remote.unpacked_md5:
                    raise DataError(
                        f"{path} has the wrong md5 (expected {remote.unpacked_md5} for {name}, unpacked); it is "
                        "corrupt or a different variant of the data set. Delete it to download the original"
                    )
                found[remote.name] = path
                continue
        if path is None:
            if not info.urls:
                raise DataError(
                    f"{name}: {remote.name} is not in {root} (or {root / name}) and this data set has "
                    f"no download source ({info.note}). Set data.root to the folder that holds it"
                )
            errors = []
            for base in info.urls:
                try:
                    path = download(base + remote.name, root / name / remote.name, remote.md5)
                    break
                except DataError as exc:
                    errors.append(str(exc))
            if path is None:
                raise DataError(f"{name}: could not get {remote.name}: " + " | ".join(errors))
        elif md5sum(path) != remote.md5:
            raise DataError(
                f"{path} has the wrong md5 (expected {remote.md5} for {name}); it is corrupt or a "
                "different variant of the data set. Delete it to download it again"
            )
        found[remote.name] = path
    return found


def files_md5(info: DatasetInfo) -> str:
    """A short tag of the expected archive md5, so two variants never share an extracted folder."""
    return info.files[0].md5[:8]


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive into ``target``, refusing members that would land outside it or links."""
    target = target.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            dest = (target / m.name).resolve()
            if not (dest == target or target in dest.parents):
                raise DataError(f"{archive}: member {m.name!r} would be written outside {target}; refusing to extract")
            if not (m.isfile() or m.isdir()):
                raise DataError(f"{archive}: member {m.name!r} is a link or special file; refusing to extract")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            tar.extractall(tmp, members=members, filter="data")
            target.mkdir(parents=True, exist_ok=True)
            for child in tmp.iterdir():
                dest = target / child.name
                if dest.exists():
                    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                os.replace(child, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

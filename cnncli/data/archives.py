"""Unpacking archives cnncli did not write (datasets by name, ``cnncli data add``): every
member is checked before anything is written.

Refused, for the whole archive, before the first byte is written: a member whose name is
absolute or holds ``..``; a symbolic or hard link whose target lies outside the folder
being unpacked into; a device, FIFO or any other special file; more than
:data:`MEMBER_LIMIT` members; and uncompressed sizes that add up to more than the budget
(:data:`UNPACK_LIMIT`, the sizes the members' headers announce: tarfile and zipfile
write no more than that). What passes is then extracted with ``tarfile``'s ``data``
filter, which refuses the same things again (defence in depth).

Callers extract into a temporary folder and rename it into place at the end, so a
half-unpacked archive is never mistaken for a finished one.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path

from cnncli.errors import DataError

#: The most bytes an archive may unpack to: ten times the largest dataset cnncli fetches
#: (CIFAR-10's binary batches, about 180 MB; Caltech-101's images, about 130 MB).
UNPACK_LIMIT = 2 * 2**30
#: The most members an archive may hold (Caltech-101 has about 9,200).
MEMBER_LIMIT = 100_000


class ArchiveError(DataError):
    """An archive that is refused before anything in it is written."""

    def __init__(self, archive: str | Path, reason: str):
        self.reason = reason
        super().__init__(f"{archive}: {reason}; nothing was unpacked")


def _unsafe_name(name: str) -> str | None:
    """Why a member's name may not be written (None when it may)."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[0].isalpha() and name[1] == ":"):  # or C:
        return "has an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "has '..' in its path"
    if "\0" in name:
        return "has a NUL byte in its name"
    return None


def _inside(root_relative: str) -> bool:
    """Whether a path relative to the unpacking folder stays inside it."""
    norm = posixpath.normpath(root_relative)
    return not (norm == ".." or norm.startswith("../") or posixpath.isabs(norm))


def check_tar(tar: tarfile.TarFile, archive: str | Path) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, read header by header; raises :class:`ArchiveError` at the
    first one that may not be written, or as soon as the sizes pass :data:`UNPACK_LIMIT`
    (before reading any further: a bomb's later headers are never reached)."""
    members, total = [], 0
    while (member := tar.next()) is not None:
        members.append(member)
        name = member.name
        why = _unsafe_name(name)
        if why is None and (member.issym() or member.islnk()):
            target = member.linkname
            # A symlink's target is relative to its own folder; a hard link's to the archive's root.
            where = posixpath.join(posixpath.dirname(name), target) if member.issym() else target
            if target.startswith("/") or not _inside(where):
                why = f"is a {'symbolic' if member.issym() else 'hard'} link to {target!r}, outside the folder"
        elif why is None and not (member.isfile() or member.isdir()):
            kind = ("a character device" if member.ischr() else "a block device" if member.isblk() else
                    "a FIFO" if member.isfifo() else f"a special file (type {member.type!r})")
            why = f"is {kind}"
        if why is not None:
            raise ArchiveError(archive, f"member {name!r} {why}")
        total += member.size if member.isfile() else 0
        if total > UNPACK_LIMIT:
            raise ArchiveError(archive, f"its members unpack to more than {UNPACK_LIMIT:,} bytes (at {name!r}); "
                                        f"expected at most {UNPACK_LIMIT:,}")
        if len(members) > MEMBER_LIMIT:
            raise ArchiveError(archive, f"more than {MEMBER_LIMIT:,} members; expected at most {MEMBER_LIMIT:,}")
    return members


def extract_tar(archive: str | Path, dest: Path) -> None:
    """Unpack a tar archive (any compression tarfile reads) into ``dest``, every member
    checked first (:func:`check_tar`), then extracted with the ``data`` filter."""
    with tarfile.open(archive) as tar:
        members = check_tar(tar, archive)
        tar.extractall(dest, members=members, filter="data")


def check_zip(zf: zipfile.ZipFile, archive: str | Path, name: str) -> None:
    """Every member's name and type (symlinks, devices: from the Unix mode zip stores) is
    checked, and the uncompressed size of the member ``name`` to be extracted against
    :data:`UNPACK_LIMIT`; raises :class:`ArchiveError`."""
    infos = zf.infolist()
    if len(infos) > MEMBER_LIMIT:
        raise ArchiveError(archive, f"more than {MEMBER_LIMIT:,} members; expected at most {MEMBER_LIMIT:,}")
    for info in infos:
        why = _unsafe_name(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip stored no Unix file type
        if why is None and kind == stat.S_IFLNK:
            why = "is a symbolic link"
        elif why is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            why = "is a device or other special file"
        if why is not None:
            raise ArchiveError(archive, f"member {info.filename!r} {why}")
    size = zf.getinfo(name).file_size
    if size > UNPACK_LIMIT:
        raise ArchiveError(archive, f"{name!r} would unpack to {size:,} bytes; expected at most {UNPACK_LIMIT:,}")


def extract_zip_member(archive: str | Path, name: str, dest: Path) -> Path:
    """One member of a zip archive, extracted into ``dest`` once the whole archive has
    passed :func:`check_zip`; returns where it was written."""
    with zipfile.ZipFile(archive) as zf:
        check_zip(zf, archive, name)
        return Path(zf.extract(name, dest))

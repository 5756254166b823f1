"""Is a folder on a local disk? SQLite's WAL (shared memory, POSIX locks) is unsafe on a network file system."""

from __future__ import annotations

import os
from pathlib import Path

from pipekit.outcomes import UsageError


#: File system types on which SQLite's WAL (shared memory, POSIX locks) is unsafe.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "fuse.sshfs", "sshfs", "9p", "ceph",
        "fuse.ceph", "glusterfs", "fuse.glusterfs", "gpfs", "beegfs", "afs", "ncpfs", "fuse.s3fs",
        "fuse.gcsfuse", "fuse.rclone", "davfs", "fuse.davfs2", "virtiofs",
    }
)


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system holding ``path`` (None when ``mounts`` cannot be read)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def check_local(path: Path, mounts: str = "/proc/mounts") -> None:
    """Refuse a database on a network file system, where SQLite's WAL corrupts data."""
    fstype = filesystem_type(path, mounts)
    if fstype is not None and (fstype in NETWORK_FILESYSTEMS or fstype.split(".")[0] in NETWORK_FILESYSTEMS):
        raise UsageError(
            f"sqlite store {path} is on a network file system ({fstype}); SQLite's WAL needs a local disk. "
            "Put the database on a local disk, or use --store postgresql://... for state shared between hosts"
        )

"""Writing files so that a reader never sees half of one, even after a kill or a power cut."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode="w", partial=None):
    """A handle on a temporary file beside ``path`` that replaces it only once writing succeeded.

    The data reach the disk (fsync) before the rename, and the rename before the context exits, so
    ``path`` is always either the old file or the whole new one. On an error the temporary file is
    removed and ``path`` is untouched. ``partial`` names the temporary file: a sole writer of ``path``
    can give a fixed name, which its next write truncates if a kill left it behind; by default it
    is unique, for writers racing on one path (TSV indexes built by several workers).
    """
    folder = os.path.dirname(path) or "."
    if partial is None:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    else:
        temporary = partial
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    try:
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # created owner-only; give it a normal file's mode
        os.replace(temporary, path)
        sync_folder(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def sync_folder(folder):
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writable_folder(folder):
    """Whether files may be written in ``folder``. Root passes ``os.access`` everywhere; a folder without
    any write bit is still meant to stay untouched (shared read-only data), so the mode bits count too."""
    return os.access(folder, os.W_OK) and (os.stat(folder).st_mode & 0o222) != 0

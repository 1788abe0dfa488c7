"""Writing files so that a reader never sees half of one, even after a kill or a power cut."""
import contextlib
import fcntl
import os
import tempfile


class OutputError(RuntimeError):
    """An output that must not or cannot be written: it is an input, or its folder is read-only."""


@contextlib.contextmanager
def atomic_open(path, mode="w", partial=None):
    """A handle on a temporary file beside ``path`` that replaces it only once writing succeeded.

    The data reach the disk (fsync) before the rename, and the rename before the context exits, so
    ``path`` is always either the old file or the whole new one. On an error the temporary file is
    removed and ``path`` is untouched. ``partial`` names the temporary file: a sole writer of ``path``
    can give a fixed name, which its next write truncates if a kill left it behind; by default it
    is unique, for writers racing on one path (TSV indexes built by several workers).
    """
    with atomic_files([path], mode, [partial]) as (handle,):
        yield handle


@contextlib.contextmanager
def atomic_files(paths, mode="w", partials=None):
    """``atomic_open`` for files that belong together (predictions and their metrics): each is written
    and synced to its temporary file first, and only when all are whole are they renamed, so an error
    (a full disk) leaves the previous set, not a new file beside an old one."""
    partials = partials or [None] * len(paths)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    temporaries, handles = [], []
    try:
        for path, partial in zip(paths, partials):
            temporary, fd = _temporary_beside(path, partial)
            temporaries.append(temporary)
            handles.append(os.fdopen(fd, mode, **text))
        yield handles
        for handle in handles:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        umask = os.umask(0)
        os.umask(umask)
        for temporary, path in zip(temporaries, paths):
            os.chmod(temporary, 0o666 & ~umask)  # created owner-only; give it a normal file's mode
            os.replace(temporary, path)
        for folder in {os.path.dirname(path) or "." for path in paths}:
            sync_folder(folder)
    finally:
        for handle in handles:
            with contextlib.suppress(OSError):  # closing flushes what is left, which fails again on a full disk
                handle.close()
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.remove(temporary)


def _temporary_beside(path, partial):
    if partial is not None:
        return partial, os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.")
    return temporary, fd


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


def check_outputs(outputs, inputs):
    """Before any work, and making nothing: refuse an output that is, or resolves to (a symlink, a hard
    link, ``..``), one of ``inputs``, and one whose folder could not be made or written."""
    for output in outputs:
        for source in inputs:
            if os.path.realpath(output) == os.path.realpath(source) or (
                    os.path.exists(output) and os.path.exists(source) and os.path.samefile(output, source)):
                raise OutputError(f"the output {output} would overwrite the input {source}: write elsewhere")
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(output)) for output in outputs):
        existing = folder
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise OutputError(f"cannot make the output folder {folder}: {existing} is a file")
        if not writable_folder(existing):
            raise OutputError(f"the output folder {existing} is not writable")


def lock_folder(folder, name):
    """An exclusive lock on ``folder`` through its file ``name``, which holds the holder's pid; the lock
    lasts while the returned handle is open, and the kernel drops it when the process ends, however it
    ends. A folder another process holds is an ``OutputError`` naming it and that process."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OutputError(f"{folder} is in use by another process (pid {holder}, which holds {path}): "
                          "wait for it to end, or choose another folder") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle

"""Writing files so that a reader never sees half of one."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """A handle on a temporary file beside ``path`` that replaces it only once writing succeeded."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    try:
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp made it owner-only; give it a normal file's mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)

"""Media containers (PyAV), shared by the audio and video readers: bytes opened as a container, the first
stream of a kind, and FFmpeg's failures on corrupt or truncated files as a BadInputError at the cell."""
import contextlib
import io

import av

from data.errors import BadInputError
from data.media import bad_input

# what PyAV raises on a corrupt or truncated stream while decoding
DECODE_ERRORS = (av.FFmpegError, RuntimeError, ValueError, OverflowError, EOFError)


def open_container(data, where):
    """The container of the media ``data`` (bytes), to use in ``with``."""
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as e:
        raise bad_input(where, f"not a readable media container: {e}") from None


def first_stream(container, kind, where):
    """The first stream of ``kind`` ("audio" or "video"), in a codec FFmpeg can decode."""
    streams = getattr(container.streams, kind)
    if not streams:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise bad_input(where, f"no {kind} stream in the file (streams: {kinds})")
    if streams[0].codec_context is None:  # a codec id FFmpeg has no decoder for
        raise bad_input(where, f"{kind} stream in a codec FFmpeg has no decoder for")
    return streams[0]


@contextlib.contextmanager
def decoding(kind, where):
    """Within it, FFmpeg's errors become "cannot decode <kind>: ..." at ``where``."""
    try:
        yield
    except BadInputError:  # a ValueError itself, already located
        raise
    except DECODE_ERRORS as e:
        raise bad_input(where, f"cannot decode {kind}: {e}") from None

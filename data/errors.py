"""The one error type for bad input: it always says where the bad value is."""
import re

MAX_REASON_CHARS = 400  # a reason quoting a huge cell keeps its start and end
_MESSAGE = re.compile(r"(?P<file>.*?):(?P<line>\d+): column (?P<column>\d+)(?: \((?P<column_name>[^)]*)\))?: "
                      r"(?P<reason>.*)", re.S)


class BadInputError(ValueError):
    """A malformed row, cell or media file, located by file, line and column.

    ``line`` is 1-based; ``column`` is the 1-based TSV field (column) number in
    the file, so the message points at the exact cell a user has to fix.
    """

    def __init__(self, path, line, column, message, column_name=None):
        message = excerpt(message)
        self.path, self.line, self.column = str(path), line, column
        self.column_name, self.reason = column_name, message
        name = f" ({column_name})" if column_name else ""
        super().__init__(f"{self.path}:{line}: column {column}{name}: {message}")

    def __reduce__(self):  # survives pickling across DataLoader workers
        return (type(self), (self.path, self.line, self.column, self.reason, self.column_name))


def excerpt(text, limit=MAX_REASON_CHARS):
    """``text``, or when longer than ``limit``, its start and end around a count of what was left out:
    a message quoting a 50 MB cell would otherwise be copied whole into every log line and report."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} ... [{len(text) - 2 * half:,} characters left out] ... {text[-half:]}"


class DataFileError(ValueError):
    """A data file that cannot be read as rows at all: missing, a folder, a FIFO or device, or empty."""


def location_of(message):
    """{file, line, column, column_name, reason} of a ``BadInputError``'s message, the form in which bad
    rows travel in batches; {"reason": message} for other text."""
    match = _MESSAGE.fullmatch(message)
    if match is None:
        return {"reason": message}
    fields = match.groupdict()
    return dict(fields, line=int(fields["line"]), column=int(fields["column"]))

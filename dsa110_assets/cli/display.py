"""What the command prints: names made safe for a terminal, and a stdout that tolerates ``head``.

Both exist because the command's output is read by people and by pipes: a file name is bytes
chosen by whoever wrote the file, and a reader such as ``head -1`` may leave early.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(ch: str) -> str:
    """Return ``ch`` as it is shown: itself if printable, else a Python-style escape."""
    code = ord(ch)
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if ch.isprintable():
        return ch
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def display_name(text: object) -> str:
    r"""Return ``text`` (a file name, path, source id, message) made safe to show on a terminal.

    File names are bytes chosen by whoever wrote the file: a newline in one forges extra lines
    in ``normalize -v`` output, an escape sequence reaches the terminal. Every control or
    non-printable character (C0/C1 controls, DEL, bidirectional overrides, line separators,
    zero-width characters) is shown as a Python-style escape (``\n``, ``\x1b``,
    ``\u202e``); bytes that are not UTF-8 (kept by ``os.fsdecode`` as lone surrogates) are
    shown as ``\xNN``; a backslash is doubled so the escaped form is unambiguous. Printable
    text, including non-ASCII letters, is unchanged.

    Parameters
    ----------
    text
        A string, bytes or path-like object.

    Returns
    -------
    str
        Printable text, one line.
    """
    value = os.fspath(text) if isinstance(text, os.PathLike) else text
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    value = str(value)
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(_escape(ch) for ch in value)


def print_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON; paths and dates are written as strings."""
    print(json.dumps(payload, indent=2, default=str))


class QuietStdout:
    """``sys.stdout`` that stops writing, silently, once the reader has gone.

    ``dsa110 db info | head -1``: ``head`` exits after one line and the next write (often
    Python's final flush) fails with ``EPIPE``. A reader that has seen enough is not an error:
    further output is dropped (stdout is pointed at ``/dev/null`` so the interpreter's own
    flush at exit cannot fail either) and the command finishes its work and exits normally,
    rather than aborting half way (``simulate`` prints while it writes files).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        """Write ``text`` unless the reader has gone; return its length either way."""
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop_output()
        return len(text)

    def flush(self) -> None:
        """Flush the stream unless the reader has gone."""
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop_output()

    def _drop_output(self) -> None:
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name: str) -> Any:
        """Delegate everything else (``fileno``, ``encoding``, ...) to the real stream."""
        return getattr(self._stream, name)

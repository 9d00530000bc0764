"""read_secret() and getpass(): secrets go from the kernel into a SecureBuffer, no copies.

No ``bytes`` or ``str`` object ever holds the secret: ``readv(2)`` writes straight into
the buffer's view, and a buffer of the exact length is filled by a copy between two
SecureBuffers (the first is wiped).
"""

from __future__ import annotations

import io
import os
import sys

from .._pages import as_size
from ._mappings import resolve_backend
from ._secure_buffer import SecureBuffer

__all__ = ["getpass", "read_secret"]


# -- filling without copies ----------------------------------------------------------------


def _exact(src: SecureBuffer, n: int, isolated: bool, backend: str) -> SecureBuffer:
    """A new SecureBuffer holding ``src[:n]``; ``src`` is closed (wiped)."""
    try:
        dst = SecureBuffer(n, isolated=isolated, backend=backend)
        try:
            with src.view() as s, dst.view() as d:
                d[:] = s[:n]
        except BaseException:
            dst._discard()
            raise
    finally:
        src._discard()
    return dst


def _check_common(isolated: object, backend: object) -> None:
    if not isinstance(isolated, bool):
        raise TypeError(f"isolated must be a bool, not {type(isolated).__name__}")
    resolve_backend(backend)


def read_secret(
    source: int | str | bytes | os.PathLike[str] | os.PathLike[bytes],
    size: int | None = None,
    *,
    max_size: int = 1 << 20,
    strip_newline: bool = False,
    isolated: bool = False,
    backend: str = "auto",
) -> SecureBuffer:
    """Read a secret from a file or file descriptor straight into a SecureBuffer.

    The bytes go from the kernel into locked memory with ``readv(2)``: no bytes or str
    object holds them on the way. (A regular file's contents are in the page cache
    anyway, and tmpfs pages can be swapped; ramfs, a pipe or a socket cannot.)

    Args:
        source: A path (opened read-only, closed afterwards) or an open file descriptor
            (read from its current position, left open).
        size: Read exactly this many bytes; None reads to end of file.
        max_size: With ``size=None``, the longest secret accepted.
        strip_newline: Drop one trailing newline (``LF`` or ``CR LF``).
        isolated: As for :class:`SecureBuffer`.
        backend: As for :class:`SecureBuffer`.

    Returns:
        A SecureBuffer of exactly the secret's length.

    Raises:
        TypeError / ValueError: Bad arguments; with ``size=None`` a secret longer than
            ``max_size``.
        EOFError: ``size`` given and the source ended first.
        OSError: From opening or reading ``source``.
    """
    if isinstance(source, bool) or not isinstance(source, int | str | bytes | os.PathLike):
        raise TypeError(
            f"source must be a path or a file descriptor, not {type(source).__name__}")
    if isinstance(source, int) and source < 0:
        raise ValueError(f"bad file descriptor {source}")
    want = None if size is None else as_size(size, "size")
    limit = as_size(max_size, "max_size")
    if not isinstance(strip_newline, bool):
        raise TypeError("strip_newline must be a bool")
    _check_common(isolated, backend)
    opened = None if isinstance(source, int) else io.FileIO(source, "r")  # owns its fd
    fd = source if isinstance(source, int) else opened.fileno()  # type: ignore[union-attr]
    try:
        if want is not None:
            buf = SecureBuffer(want, isolated=isolated, backend=backend)
            try:
                got = _fill(fd, buf, 0)
                if got < want:
                    raise EOFError(f"the source ended after {got} of {want} bytes")
            except BaseException:
                buf._discard()
                raise
            n = want
        else:
            buf, n = _read_to_eof(fd, limit, backend)
    finally:
        if opened is not None:
            opened.close()
    if strip_newline:
        with buf.view() as v:
            if n and v[n - 1] == 10:
                n -= 1
                if n and v[n - 1] == 13:
                    n -= 1
    if n == len(buf) and buf.isolated == isolated:
        return buf
    return _exact(buf, n, isolated, backend)


def _fill(fd: int, buf: SecureBuffer, start: int) -> int:
    """Read into ``buf[start:]`` until full or end of file; the new fill level."""
    got = start
    with buf.view() as v:
        while got < len(v):
            k = os.readv(fd, [v[got:]])
            if k == 0:
                break
            got += k
    return got


def _read_to_eof(fd: int, limit: int, backend: str) -> tuple[SecureBuffer, int]:
    cap = 256
    try:
        st = os.fstat(fd)
        if st.st_size > 0:
            cap = st.st_size + 1  # +1: see the end of file in one pass
    except OSError:
        pass
    cap = min(cap, limit + 1)
    buf = SecureBuffer(cap, backend=backend)
    got = 0
    try:
        while True:
            got = _fill(fd, buf, got)
            if got < len(buf):
                return buf, got
            if got > limit:
                raise ValueError(f"the secret is longer than max_size={limit} bytes")
            bigger = SecureBuffer(min(2 * len(buf), limit + 1), backend=backend)
            with buf.view() as s, bigger.view() as d:
                d[:got] = s
            buf._discard()
            buf = bigger
    except BaseException:
        buf._discard()
        raise


def getpass(
    prompt: str = "Password: ",
    *,
    max_size: int = 1024,
    isolated: bool = False,
    backend: str = "auto",
) -> SecureBuffer:
    """Prompt for a password on the terminal and read it straight into locked memory.

    Echo is turned off on ``/dev/tty`` *before* the prompt is written; the input is read
    one byte at a time with ``readv(2)`` into a SecureBuffer (no str or bytes holds it),
    handling Backspace (a whole UTF-8 character), Ctrl-U (erase all) and Ctrl-D (end of
    input), then copied into a buffer of exactly the typed length; the first is wiped.
    Ctrl-C raises KeyboardInterrupt after restoring the terminal. Without a controlling
    terminal, reads standard input (the prompt goes to standard error).

    Args:
        prompt: Text shown before reading.
        max_size: Longest password accepted, in bytes.
        isolated: As for :class:`SecureBuffer`.
        backend: As for :class:`SecureBuffer`.

    Returns:
        A SecureBuffer of the typed bytes (UTF-8 as the terminal sent them), without the
        line ending.

    Raises:
        EOFError: End of input before anything was typed.
        ValueError: More than ``max_size`` bytes were typed (the input is wiped).

    Availability: Unix.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    limit = as_size(max_size, "max_size")
    if limit == 0:
        raise ValueError("max_size must be at least 1")
    _check_common(isolated, backend)
    try:
        tty: io.FileIO | None = io.FileIO("/dev/tty", "r+")  # owns its fd
    except OSError:
        tty = None
    fd, out = (0, 2) if tty is None else (tty.fileno(), tty.fileno())
    try:
        buf = SecureBuffer(limit + 1, backend=backend)  # the last byte: overflow scratch
        try:
            n = _read_password(fd, out, prompt.encode(errors="replace"), buf, limit)
        except BaseException:
            buf._discard()
            raise
    finally:
        if tty is not None:
            tty.close()
    return _exact(buf, n, isolated, backend)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_password(fd: int, out: int, prompt: bytes, buf: SecureBuffer, limit: int) -> int:
    old = None
    if sys.platform != "win32":
        import termios

        try:
            old = termios.tcgetattr(fd)
        except termios.error:
            old = None  # not a terminal: nothing echoes
        if old is not None:
            new = list(old)
            new[3] = old[3] & ~(termios.ECHO | termios.ECHONL | termios.ICANON)
            cc = list(old[6])
            cc[termios.VMIN] = 1
            cc[termios.VTIME] = 0
            new[6] = cc
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)  # echo off BEFORE the prompt
    try:
        _write_all(out, prompt)
        n = 0
        overflow = False
        with buf.view() as v:
            while True:
                pos = n if n < limit else limit
                if os.readv(fd, [v[pos:pos + 1]]) == 0:  # end of file
                    if n == 0 and not overflow:
                        raise EOFError("end of input before a password was typed")
                    break
                b = v[pos]
                v[pos] = 0
                if b in (10, 13):  # Enter
                    break
                if b in (127, 8):  # Backspace: a whole UTF-8 character
                    while n:
                        n -= 1
                        c = v[n]
                        v[n] = 0
                        if c & 0xC0 != 0x80:
                            break
                elif b == 21:  # Ctrl-U
                    v[:n] = bytes(n)
                    n = 0
                    overflow = False
                elif b == 4:  # Ctrl-D
                    if n == 0 and not overflow:
                        raise EOFError("end of input before a password was typed")
                    break
                elif pos == limit:
                    overflow = True
                else:
                    v[pos] = b
                    n += 1
        if old is not None:
            _write_all(out, b"\n")
    finally:
        if old is not None:
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
    if overflow:
        raise ValueError(f"the password is longer than max_size={limit} bytes")
    return n


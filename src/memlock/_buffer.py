"""Python object -> (address, length, pinned export). The only place that knows buffers.

Holding a :class:`memoryview` of the object holds its buffer export, which pins the
memory: a bytearray cannot resize, an mmap cannot close, while it is held. Addresses come
from ctypes: ``c_char.from_buffer`` for writable buffers (fast), and
``PyObject_GetBuffer`` for read-only ones (bytes, ACCESS_READ mmap), which ctypes'
``from_buffer`` refuses. Py_buffer is part of the stable ABI since Python 3.11.
"""

from __future__ import annotations

import ctypes

__all__ = ["fast_address", "pin"]

_PyBUF_SIMPLE = 0
_PyBUF_ND = 0x0008
_PyBUF_STRIDES = 0x0010 | _PyBUF_ND


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def fast_address(view: memoryview) -> int:
    """Address of a writable, C-contiguous, non-empty view.

    Raises:
        TypeError: read-only (ctypes refuses it).
        ValueError: empty or not C-contiguous.
    """
    return _addressof(_from_buffer(view))


def _base_address(view: memoryview, flags: int) -> int:
    """The ``buf`` pointer of ``view``; ``view`` itself keeps it valid."""
    raw = _ExportOf()
    _get_buffer(view, ctypes.byref(raw), flags)  # raises the Python error on failure
    address = raw.buf or 0
    _release_buffer(ctypes.byref(raw))  # sets raw.obj to NULL
    return address


class _ExportOf(_PyBuffer):
    """A Py_buffer that gives its export back if it dies still holding one.

    An interrupt between PyObject_GetBuffer and PyBuffer_Release would otherwise leave
    the export for good (the memory could then never be unmapped or resized).
    """

    def __del__(self) -> None:
        if self.obj:
            _release_buffer(ctypes.byref(self))


def pin(obj: object) -> tuple[memoryview, int, int]:
    """Pin ``obj``'s memory: ``(view, address, nbytes)``.

    While ``view`` is not released, the memory at ``address`` (the lowest byte the object
    can reach, for strided buffers) cannot move or be freed; ``nbytes`` run from there to
    its end. Release with ``view.release()``.

    Raises:
        TypeError: ``obj`` does not support the buffer protocol.
        ValueError: The buffer uses suboffsets (PIL-style), which have no single extent.
    """
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "memlock needs an object that supports the buffer protocol (bytes, bytearray, "
            f"memoryview, mmap, array.array, numpy array ...), not {type(obj).__name__!r}"
        ) from None
    nbytes = view.nbytes
    if view.c_contiguous:
        if nbytes and not view.readonly:
            return view, _addressof(_from_buffer(view)), nbytes
        return view, _base_address(view, _PyBUF_SIMPLE), nbytes
    if view.suboffsets:
        view.release()
        raise ValueError("buffers with suboffsets (indirect arrays) cannot be locked")
    # Strided: lock the extent from the lowest to the highest byte the view can reach.
    base = _base_address(view, _PyBUF_STRIDES)
    low = high = 0
    for extent, stride in zip(view.shape or (), view.strides or (), strict=True):
        if extent == 0:
            return view, base, 0
        if stride > 0:
            high += (extent - 1) * stride
        else:
            low += (extent - 1) * stride
    return view, base + low, high - low + view.itemsize

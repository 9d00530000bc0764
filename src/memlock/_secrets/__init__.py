"""Secrets: memory kept out of swap, core dumps and forked children.

One module per hazard:

* ``_secure_buffer``: :class:`SecureBuffer`, the public facade (views counted by the
  exporter's reference count, protection changes, close and its interrupt rules);
* ``_input``: :func:`read_secret` and :func:`getpass`, filling buffers without copies;
* ``_pool``: the small-secret pool, its slots and canaries, the leases and the mutex
  (the one copy of the pooled create and close paths);
* ``_mappings``: guarded, locked, undumpable, fork-proof mappings, made only through the
  platform layer (``memlock._platform``).
"""

from __future__ import annotations

from ._input import getpass, read_secret
from ._secure_buffer import SecureBuffer

__all__ = ["SecureBuffer", "getpass", "read_secret"]

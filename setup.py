"""Build the optional C fast path; everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python headers, memlock installs as pure Python
and runs the same code paths in Python (memlock/_lock.py, _use_c).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("memlock._speedups", ["src/memlock/_speedups.c"], optional=True),
    ],
)

"""Build the optional C fast path; everything else is in pyproject.toml.

``optional=True``: without a C compiler or Python headers, memlock installs as pure Python
and runs the same code paths in Python (memlock/_lock.py, _use_c). Not built on
free-threaded Pythons.
"""

import sysconfig

from setuptools import Extension, setup

# Free-threaded builds run the pure-Python path, which is written for them: the C module
# has only run with the GIL.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

setup(
    ext_modules=[] if FREE_THREADED else [
        Extension("memlock._speedups", ["src/memlock/_speedups.c"], optional=True),
    ],
)

"""pycorosync: a group-communication and high-availability engine with the semantics of Corosync.

Importing the package first points numba's on-disk cache at a directory keyed on a hash of
the package's jitted sources (see :mod:`pycorosync.jitcache`), before anything imports numba.
"""

from pycorosync import jitcache as _jitcache

__version__ = "0.1.0"

_jitcache.configure()

"""Bytes and containers, no pickles: where a checkpoint's bytes are and how to read them.

- ``source.py``  ``ByteSource``: positioned reads of a path or file object, counted.
- ``sniff.py``   which format a file is, from its first bytes, never its name.
- ``zipdir.py``  the ZIP central directory and members on demand (in C when built:
  ``native/io/_zipdir_c.pyx``).

Import rule: ``io`` imports only ``ckptpeek.errors`` and ``ckptpeek._extensions``.
"""

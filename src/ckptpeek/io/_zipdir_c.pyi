"""Type stub of the optional C extension built from ``native/io/_zipdir_c.pyx``
(``tests/test_stubs.py`` checks it against the built module)."""

from typing import Any

def parse_central_directory(
    cd: bytes, count: int, file_size: int, member_cls: type[Any]
) -> dict[str, Any] | None: ...

"""Type stub of the optional C extension built from ``native/io/_zipdir_c.pyx``
(``tests/test_stubs.py`` checks it against the built module)."""

from typing import Any

def parse_central_directory(
    cd: bytes, count: int, cd_start: int, file_size: int, member_cls: type[Any]
) -> tuple[list[Any], dict[bytes, Any]] | None: ...

"""Our ZIP directory reader against the stdlib's zipfile, on archives zipfile writes."""

from __future__ import annotations

import io
import zipfile

import pytest

from ckptpeek.errors import FormatError, LimitError
from ckptpeek.io.source import ByteSource
from ckptpeek.io.zipdir import read_directory


def _archive(
    tmp_path, *, zip64=False, comment=b"", prefix=b"", method=zipfile.ZIP_STORED, members=None
):
    members = members or {
        "a/data.pkl": b"\x80\x02K\x01.",
        "a/data/0": bytes(range(256)) * 4,
        "a/ver.sion": b"3\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, allowZip64=True) as z:
        for name, data in members.items():
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data)
        z.comment = comment
    path = tmp_path / "x.zip"
    path.write_bytes(prefix + buf.getvalue())
    return path, members


@pytest.mark.parametrize("kind", ["plain", "zip64", "comment", "prefixed", "deflated"])
def test_members_match_zipfile(tmp_path, kind) -> None:
    path, members = _archive(
        tmp_path,
        zip64=kind == "zip64",
        comment=b"c" * 1000 if kind == "comment" else b"",
        prefix=b"#!stub\n" * 10 if kind == "prefixed" else b"",
        method=zipfile.ZIP_DEFLATED if kind == "deflated" else zipfile.ZIP_STORED,
    )
    with ByteSource(path) as src:
        directory = read_directory(src)
        assert directory.names() == list(members)
        for name, data in members.items():
            assert directory.read(name) == data


def test_many_members_beyond_the_tail_read(tmp_path) -> None:
    members = {f"p/data/{i}": bytes([i % 256]) * 3 for i in range(3000)}
    path, _ = _archive(tmp_path, members=members)
    with ByteSource(path) as src:
        directory = read_directory(src)
        assert len(directory.names()) == 3000
        assert directory.read("p/data/2999") == bytes([2999 % 256]) * 3


def test_not_a_zip(tmp_path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"hello" * 100)
    with ByteSource(path) as src, pytest.raises(FormatError) as err:
        read_directory(src)
    assert err.value.code == "zip-no-eocd" and str(path) in str(err.value)


def test_member_limit(tmp_path) -> None:
    path, _ = _archive(tmp_path)
    with ByteSource(path) as src, pytest.raises(LimitError):
        read_directory(src, max_members=2)


def test_deflate_bomb_is_bounded(tmp_path) -> None:
    path, _ = _archive(
        tmp_path, method=zipfile.ZIP_DEFLATED, members={"a/data.pkl": b"\0" * 10_000_000}
    )
    with ByteSource(path) as src:
        directory = read_directory(src)
        with pytest.raises(LimitError):
            directory.read("a/data.pkl", max_size=1_000_000)

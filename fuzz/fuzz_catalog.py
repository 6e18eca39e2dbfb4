"""The catalog's text sources: metadata and config sidecars, Hydra configs, file names.

The first byte picks what the rest is (``byte % 6``):

  0 ``run.metadata.yaml``  1 ``run.metadata.json``  2 ``run.config.yaml``
  3 ``run.config.json``    4 ``.hydra/config.yaml`` and, after the first NUL byte,
  ``.hydra/overrides.yaml``                          5 a checkpoint file name (<= 255)

The files are written next to an (empty) ``run.ckpt`` in a scratch directory (on
``/dev/shm`` when there is one) and read through the sources the catalog builds an entry
from (``from_metadata``, ``from_config``, ``from_hydra``, ``parse_filename``). A source
turns a bad file into a warning and ``failed``: nothing may escape it (an escape makes
the whole entry an error line instead of a partial entry), and no text may cost more
than the time and memory bounds of the harness.
"""

from __future__ import annotations

import os

from _common import Finding, instrument, main, scratch_dir

instrument()

from ckptpeek.catalog import sources  # noqa: E402

ROOT = scratch_dir("catalog")
RUN = ROOT / "exp"
HYDRA = RUN / ".hydra"
CKPT = RUN / "run.ckpt"
FILES = {
    0: (RUN / "run.metadata.yaml",),
    1: (RUN / "run.metadata.json",),
    2: (RUN / "run.config.yaml",),
    3: (RUN / "run.config.json",),
    4: (HYDRA / "config.yaml", HYDRA / "overrides.yaml"),
}
HYDRA.mkdir(parents=True)
CKPT.write_bytes(b"")


def _clean() -> None:
    for paths in FILES.values():
        for p in paths:
            if p.exists():
                p.unlink()


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 6, data[1:]
    if kind == 5:
        name = body.decode("utf-8", "replace").replace("/", "_").replace(os.sep, "_")
        sources.parse_filename(name[:255])  # NAME_MAX: no file has a longer name
        return
    _clean()
    parts = body.split(b"\0", 1) if kind == 4 else [body]
    for path, text in zip(FILES[kind], parts, strict=False):  # overrides.yaml is optional
        path.write_bytes(text)
    ctx = sources.EntryContext(path=CKPT, root=ROOT, relpath="exp/run.ckpt", experiment="exp")
    for source in (sources.from_metadata, sources.from_config, sources.from_hydra):
        res = source(ctx)
        if res.failed and not res.warnings:
            raise Finding(f"{source.__name__}: failed without a warning saying why")


if __name__ == "__main__":
    main(one_input)

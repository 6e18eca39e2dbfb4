"""Write the tiny committed safetensors fixture(s) in tests/data/.

Run from the repository root (needs numpy and safetensors only, both core dependencies):

    python tests/data/make_safetensors_fixtures.py

``tiny.safetensors`` is written by the real ``safetensors.numpy.save_file``: one tensor
of every dtype numpy has (bool, u8..u64, i8..i64, f16/f32/f64, c64), a 0-d tensor, an
empty one, and ``__metadata__``. ``tests/test_safetensors.py`` checks ckptpeek against
``safetensors.safe_open`` on it, so no expected-values file is needed.
"""

from __future__ import annotations

import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def tiny_tensors() -> dict:
    import numpy as np

    return {
        "bool": np.array([True, False, True]),
        "u8": np.arange(5, dtype=np.uint8),
        "u16": np.array([0, 1, 65535], dtype=np.uint16),
        "u32": np.array([0, 2**32 - 1], dtype=np.uint32),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "i16": np.array([-(2**15), 7], dtype=np.int16),
        "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "i64": np.array([-(2**62), 0, 2**62], dtype=np.int64),
        "f16": np.linspace(-2, 2, 5, dtype=np.float16),
        "f32": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
        "f64": np.array([1e-300, -0.0, np.inf], dtype=np.float64),
        "c64": np.array([1 + 2j, -3j], dtype=np.complex64),
        "scalar": np.array(0.875, dtype=np.float32),
        "empty": np.zeros((3, 0), dtype=np.float32),
        "model.layers.0.attn.q_proj.weight": np.eye(4, dtype=np.float32),
    }


TINY_METADATA = {"format": "np", "note": "ckptpeek fixture", "total": "16"}


def main() -> None:
    from safetensors.numpy import save_file

    save_file(tiny_tensors(), str(HERE / "tiny.safetensors"), metadata=TINY_METADATA)


if __name__ == "__main__":
    main()

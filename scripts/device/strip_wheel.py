"""Rewrite a wheel without the files a GPU run here never loads, with its RECORD to match.

Why: everything carried to the lent GPU machine travels in calls of at most 64 MiB, so each part
left out saves a call. Only files whose absence the package tolerates are dropped (vLLM imports
its FlashAttention-2 kernels in a try block and uses FlashAttention-3 on Hopper; Ray's Java jar
and dashboard web client are not used by Python workers).

    python strip_wheel.py IN.whl OUT.whl PREFIX [PREFIX ...]
"""

from __future__ import annotations

import sys
import zipfile


def strip(src: str, dst: str, prefixes: list[str]) -> tuple[int, int]:
    """Copy `src` to `dst` minus members starting with any prefix; returns (kept, dropped)."""
    kept = dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        names = zin.namelist()
        dropped_names = {n for n in names if any(n.startswith(p) for p in prefixes)}
        for info in zin.infolist():
            if info.filename in dropped_names:
                dropped += 1
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines
                                  if line.split(",", 1)[0] not in dropped_names) + "\n").encode()
            # Copying the ZipInfo keeps permissions (Ray's raylet must stay executable).
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            kept += 1
    return kept, dropped


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    kept, dropped = strip(sys.argv[1], sys.argv[2], sys.argv[3:])
    print(f"{sys.argv[2]}: kept {kept} files, dropped {dropped}")

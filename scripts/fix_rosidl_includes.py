"""Rewrite the include paths baked into the ROS 2 wheels' rosidl CMake exports (Kilted, Jazzy).

The wheels were built in a manylinux image; their ``*__rosidl_generator_pyExport.cmake`` files
(twelve in Kilted's set, fourteen in Jazzy's) point at that image's Python and numpy headers,
so building our message package fails until they point at this interpreter's. Idempotent.
"""

from __future__ import annotations

import pathlib
import re
import sys
import sysconfig

import numpy


def main(venv: str) -> int:
    share = pathlib.Path(venv) / "share"
    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    fixed = 0
    for path in share.glob("*/cmake/*__rosidl_generator_pyExport.cmake"):
        text = path.read_text()
        new = re.sub(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+", py_inc, text)
        new = re.sub(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include", np_inc, new)
        if new != text:
            path.write_text(new)
            fixed += 1
    print(f"fix_rosidl_includes: rewrote {fixed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))

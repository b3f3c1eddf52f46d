"""Regenerate the Python protobuf/gRPC code and .pyi stubs from protos/ (`make proto`).

The proto lives at styletx/v1/..., so protoc's generated imports say `styletx.v1`, which would
collide with the engine package `styletx`. We generate into a scratch directory and rewrite those
imports to relative ones, then place the files in client/styletx_client/proto/ (one marked
directory, committed). `--check` compares instead of writing and exits 1 when stale.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_FILE = "styletx/v1/style_transfer.proto"
OUT_DIR = ROOT / "client" / "styletx_client" / "proto"
MARKER = (
    '"""Generated code: do not edit. Regenerate with `make proto` from protos/styletx/v1/."""\n'
)
# `from styletx.v1 import x_pb2 as ...` and `import styletx.v1.x_pb2` -> relative imports.
_FROM = re.compile(r"^from styletx\.v1 import ", re.M)
_IMPORT = re.compile(r"^import styletx\.v1\.(\w+)$", re.M)
_QUALIFIED = re.compile(r"\bstyletx\.v1\.(style_transfer_pb2)\b")


def _plugin(name: str) -> str:
    """mypy-protobuf's plugins live beside this interpreter (the venv may not be on PATH)."""
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def generate(dest: Path) -> None:
    """Run protoc with the python, grpc and mypy plugins into `dest` (flat, imports rewritten)."""
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted((Path(tmp) / "styletx" / "v1").iterdir()):
            text = src.read_text()
            text = _FROM.sub("from . import ", text)
            text = _IMPORT.sub(r"from . import \1", text)
            text = _QUALIFIED.sub(r"\1", text)
            (dest / src.name).write_text(text)
        (dest / "__init__.py").write_text(MARKER)
        (dest / "py.typed").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out_dir: Path = args.out_dir
    if not args.check:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        generate(out_dir)
        print(f"generated {out_dir}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "proto"
        generate(fresh)
        cmp = filecmp.dircmp(fresh, out_dir, ignore=["__pycache__"])
        stale = cmp.diff_files + cmp.left_only + cmp.right_only
        if stale:
            print(f"generated code is stale ({', '.join(sorted(stale))}): run `make proto`")
            return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the Python protobuf/gRPC code and .pyi stubs from protos/ (`make proto`).

The proto lives at styletx/v1/..., so protoc's generated imports say `styletx.v1`, which would
collide with the engine package `styletx`. We generate into a scratch directory and rewrite those
imports to relative ones, then place the files in api/styletx_api/v1/ (one marked directory,
committed; the `styletx-api` distribution that the server and the SDK both depend on). `--check`
compares instead of writing and exits 1 when stale. The proto itself is not copied there:
protos/ is its one source, and api/setup.py puts it into the wheel and the sdist at build time.

Beside protoc's output we write `style_options.py`: the Python types of the API's options (the
SDK's keyword arguments, the resolved options of the Started event, the choices of each enum)
and their help texts, taken from the proto's fields and comments. mypy needs real types, so they
are generated rather than built at run time; a new option is then written in the proto only.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_FILE = "styletx/v1/style_transfer.proto"
OUT_DIR = ROOT / "api" / "styletx_api" / "v1"
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
        descriptor_set = Path(tmp) / "descriptor.pb"
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--descriptor_set_out={descriptor_set}",
            "--include_source_info",
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
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
        (dest / "style_options.py").write_text(options_module(files.file[0]))


# --- style_options.py ------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto
_PY_TYPES = {
    _F.TYPE_DOUBLE: "float",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_INT32: "int",
    _F.TYPE_INT64: "int",
    _F.TYPE_UINT32: "int",
    _F.TYPE_UINT64: "int",
    _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "str",
    _F.TYPE_BYTES: "bytes",
}
# SourceCodeInfo paths: FileDescriptorProto.message_type = 4, .enum_type = 5;
# DescriptorProto.field = 2; EnumDescriptorProto.value = 2.
_MESSAGE, _ENUM, _MEMBER = 4, 5, 2


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comment of every element, keyed by its SourceCodeInfo path, as one line."""
    return {
        tuple(loc.path): " ".join(loc.leading_comments.split())
        for loc in file.source_code_info.location
        if loc.leading_comments
    }


def _enum_prefix(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"


def _choices(enum: descriptor_pb2.EnumDescriptorProto) -> list[str]:
    """Python choices of an enum: value names without the prefix, lower case, UNSPECIFIED out."""
    prefix = _enum_prefix(enum.name)
    return [v.name.removeprefix(prefix).lower() for v in enum.value if v.number != 0]


def _doc(text: str, indent: str = "") -> str:
    """A one-line docstring literal holding `text` (quotes and backslashes escaped)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{indent}"""{body}"""'


def _reasons_enum(
    file: descriptor_pb2.FileDescriptorProto, comments: dict[tuple[int, ...], str]
) -> list[str]:
    """`class ErrorReason(StrEnum)`: the ErrorInfo reasons, valued as the wire spells them."""
    index, enum = next((i, e) for i, e in enumerate(file.enum_type) if e.name == "ErrorReason")
    prefix = _enum_prefix(enum.name)
    out = ["", "", f"class {enum.name}(StrEnum):", _doc(comments[(_ENUM, index)], "    "), ""]
    for i, value in enumerate(enum.value):
        if value.number == 0:
            continue
        name = value.name.removeprefix(prefix)
        out += [f'    {name} = "{name}"', _doc(comments[(_ENUM, index, _MEMBER, i)], "    "), ""]
    return out


def options_module(file: descriptor_pb2.FileDescriptorProto) -> str:
    """Source of style_options.py for the StyleOptions message of `file`."""
    comments = _comments(file)
    enums = {f".{file.package}.{e.name}": (i, e) for i, e in enumerate(file.enum_type)}
    index, message = next(
        (i, m) for i, m in enumerate(file.message_type) if m.name == "StyleOptions"
    )
    out = [
        '"""Generated from protos/styletx/v1/style_transfer.proto by `make proto`: do not edit.',
        "",
        "Python types and help texts of the API's stylization options (styletx.v1.StyleOptions)",
        "and enums, derived from the proto's fields and comments so an option is declared once.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Sequence",
        "from dataclasses import dataclass",
        "from enum import StrEnum",
        "from typing import Final, Literal, TypeAlias, TypedDict",
        "",
    ]
    for enum_index, enum in enumerate(file.enum_type):
        if enum.name == "ErrorReason":
            continue  # a StrEnum of wire values below, not a choice of the caller's
        choices = ", ".join(f'"{c}"' for c in _choices(enum))
        out += [f"{enum.name}: TypeAlias = Literal[{choices}]"]
        out += [_doc(comments.get((_ENUM, enum_index), enum.name)), ""]
    out += [""]

    def py_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type == _F.TYPE_ENUM:
            return enums[field.type_name][1].name
        return _PY_TYPES[field.type]

    helps = {
        f.name: comments.get((_MESSAGE, index, _MEMBER, i), "") for i, f in enumerate(message.field)
    }
    out += [
        "class StyleOptionArgs(TypedDict, total=False):",
        '    """Stylization options as keyword arguments; an omitted key takes the server\'s',
        '    default (styletx.v1.StyleOptions)."""',
        "",
    ]
    for field in message.field:
        repeated = field.label == _F.LABEL_REPEATED
        kind = f"Sequence[{py_type(field)}]" if repeated else py_type(field)
        out += [f"    {field.name}: {kind}", _doc(helps[field.name], "    "), ""]
    out += [
        "",
        "@dataclass(frozen=True, slots=True)",
        "class ResolvedOptions:",
        '    """Options as the server resolved them (preset and defaults filled in), as the',
        '    Started event reports them; a field this server did not report is None."""',
        "",
    ]
    for field in message.field:
        if field.label == _F.LABEL_REPEATED:
            out += [f"    {field.name}: tuple[{py_type(field)}, ...] = ()"]
        else:
            out += [f"    {field.name}: {py_type(field)} | None = None"]
        out += [_doc(helps[field.name], "    "), ""]
    out += _reasons_enum(file, comments)
    out += ["", "#: One-line help of every option, from its proto comment (for CLIs)."]
    out += ["OPTION_HELP: Final[dict[str, str]] = {"]
    out += [f'    "{name}": {text!r},' for name, text in helps.items()]
    out += ["}", ""]
    return "\n".join(out)


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

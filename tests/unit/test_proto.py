"""The API definition: buf lint, generated code up to date and importable without the engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "api" / "styletx_api" / "v1"


def _tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def test_generated_code_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stale_check_detects_a_change(tmp_path: Path) -> None:
    copy = tmp_path / "proto"
    shutil.copytree(GENERATED, copy)
    (copy / "style_transfer_pb2.py").write_text("# edited by hand\n")
    # protoc runs in a subprocess: grpc_tools' in-process compiler may crash beside TensorFlow.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check", "--out-dir", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "make proto" in proc.stdout


def test_buf_lint_standard_passes() -> None:
    proc = subprocess.run(
        [_tool("buf"), "lint"], cwd=ROOT / "protos", capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_imports_do_not_collide_with_the_engine() -> None:
    for path in GENERATED.glob("*.py*"):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")):
                assert "styletx.v1" not in line, f"{path.name}: {line}"
    code = (
        "import sys; import styletx_api.v1.style_transfer_pb2_grpc as g; "
        "assert 'styletx' not in sys.modules, sorted(m for m in sys.modules if 'styletx' in m); "
        "print(g.StyleTransferServiceStub.__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "StyleTransferServiceStub" in proc.stdout


def test_error_reasons_are_the_proto_enum_on_both_sides() -> None:
    from styletx_api.v1 import style_transfer_pb2 as pb
    from styletx_client.errors import Reason as ClientReason
    from styletx_server.errors.statuses import Reason as ServerReason

    wire = {v.name.removeprefix("ERROR_REASON_") for v in pb.ErrorReason.DESCRIPTOR.values}
    assert {r.value for r in ClientReason} == wire - {"UNSPECIFIED"}
    assert ServerReason is ClientReason


def test_protos_is_the_one_copy_of_the_proto() -> None:
    """The checkout keeps no copy of the proto beside the generated code: `styletx-api` takes
    protos/' file at build time (api/setup.py; tests/unit/test_packaging.py checks the wheel)."""
    assert (ROOT / "protos" / "styletx" / "v1" / "style_transfer.proto").is_file()
    tracked = subprocess.run(
        ["git", "ls-files", "--", "*style_transfer.proto", "api/*.proto"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == ["protos/styletx/v1/style_transfer.proto"]
    assert not list(GENERATED.glob("*.proto"))


def test_the_server_depends_on_the_api_not_on_the_sdk() -> None:
    """Importing the whole server loads no module of the client distribution."""
    code = (
        "import sys, styletx_server.ops.app, styletx_server.__main__; "
        "print(sorted(m for m in sys.modules if m.startswith('styletx_client')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    sources = (ROOT / "server" / "styletx_server").rglob("*.py")
    assert not [p.name for p in sources if "styletx_client" in p.read_text()]

"""Build hooks of styletx-api (the metadata is in pyproject.toml): the proto comes from protos/.

protos/styletx/v1/style_transfer.proto is the one source of the API. The distribution ships it
beside its generated code (styletx_api/v1/style_transfer.proto) for other languages' generators
and for reviewers, but the checkout keeps no copy there:

- built from the checkout (`python -m build api`, `pip wheel ./api`, the images), the proto is
  taken from ../protos/ at build time, into the wheel and into the sdist;
- built from the sdist (the second step of `python -m build`, `pip install` of an sdist), there
  is no ../protos/: the sdist carries the proto inside the package, where the wheel takes it.

An editable install (`pip install -e ./api`) runs from the source tree and has no copy.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import FileError

HERE = Path(__file__).resolve().parent
#: The proto's path under protos/ (its import path, which its generated code records).
PROTO = Path("styletx", "v1", "style_transfer.proto")
#: Where the distribution holds it, relative to its root (the sdist) or to a wheel's root.
PACKAGED = Path("styletx_api", "v1", "style_transfer.proto")


def proto_source() -> Path:
    """The proto this build packages: protos/' in a checkout, the sdist's own copy in an sdist."""
    if (HERE / "PKG-INFO").is_file():  # an unpacked sdist (only sdists have PKG-INFO at the top)
        found = HERE / PACKAGED
        where = "this sdist lacks it; rebuild the sdist from the repository"
    else:  # the repository checkout: api/ beside protos/
        found = HERE.parent / "protos" / PROTO
        where = "build styletx-api from the repository, with protos/ beside api/"
    if not found.is_file():
        raise FileError(f"styletx-api: the API's proto {found} is missing: {where}")
    return found


class BuildPyWithProto(build_py):
    """build_py, then the proto into the built package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / PACKAGED
            self.mkpath(str(target.parent))
            self.copy_file(str(proto_source()), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        target = str(Path(self.build_lib) / PACKAGED)
        return outputs if self.editable_mode or target in outputs else [*outputs, target]


class SdistWithProto(sdist):
    """sdist, with the proto inside the package, where a wheel built from the sdist finds it."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        target = Path(base_dir) / PACKAGED
        # The release tree hard-links its files: replace the link, never write through it.
        target.unlink(missing_ok=True)
        self.copy_file(str(proto_source()), str(target))


setup(cmdclass={"build_py": BuildPyWithProto, "sdist": SdistWithProto})

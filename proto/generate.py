"""Regenerate the Python gRPC stubs in shared/gen from proto/.

Run: ``python proto/generate.py`` (needs the ``dev`` extra for grpcio-tools and
mypy-protobuf). ``--out DIR`` writes elsewhere; the stale-stub test uses it to
compare a fresh generation with what is committed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
# Virtual import root: generated modules import each other as shared.gen.naila.v1.*
VIRTUAL = "shared/gen"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted(PROTO_DIR.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = pathlib.Path(tmp)
        args = [
            "grpc_tools.protoc",
            f"-I{VIRTUAL}={PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmpdir}",
            f"--grpc_python_out={tmpdir}",
            f"--mypy_out={tmpdir}",
            f"--mypy_grpc_out={tmpdir}",
        ] + [f"{VIRTUAL}/{p.relative_to(PROTO_DIR).as_posix()}" for p in protos]
        # protoc finds the mypy-protobuf plugins on PATH: put the venv's bin first.
        bindir = str(pathlib.Path(sys.executable).parent)
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        src = tmpdir / VIRTUAL
        written: list[pathlib.Path] = []
        if out.exists():
            shutil.rmtree(out)
        for f in sorted(src.rglob("*")):
            if f.is_file():
                dest = out / f.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
                written.append(dest)
        # Make every generated folder a package.
        for d in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
            init = d / "__init__.py"
            if not init.exists():
                init.write_text("")
                written.append(init)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / VIRTUAL)
    ns = parser.parse_args(argv)
    files = generate(ns.out)
    print(f"generated {len(files)} files in {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

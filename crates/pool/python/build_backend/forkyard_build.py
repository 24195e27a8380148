"""A PEP 517 build backend for forkyard-pool's Python package, in the tree.

Why not setuptools or flit: a plain `pip install ./crates/pool/python` must
work offline and without `--no-build-isolation` surprises. setuptools (before
70.1) needs the `wheel` package to build a wheel, and neither `wheel` nor
`flit_core` is on every machine. The package is a handful of pure-Python
files, so building its wheel is a zip file with three metadata files: this
module does that with the standard library alone, and pip finds it through
`backend-path` in pyproject.toml (nothing to download, nothing to install
first).

It builds wheels (`pip install .`), editable wheels (`pip install -e .`, a
`.pth` file pointing at the source) and sdists (`python -m build --sdist`).
It writes only into the directory pip hands it: nothing lands in the source
tree (no build/, no egg-info).
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "forkyard_pool"
TAG = "py3-none-any"


def _project():
    """The [project] table of pyproject.toml (name, version, ...)."""
    path = os.path.join(ROOT, "pyproject.toml")
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        return _parse_project_table(text)
    return tomllib.loads(text)["project"]


def _parse_project_table(text):
    """The string and string-list keys of [project], for Pythons without tomllib."""
    project, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
            continue
        match = re.match(r'^([A-Za-z_-]+)\s*=\s*"(.*)"$', line)
        if section == "[project]" and match:
            project[match.group(1)] = match.group(2)
    return project


def _dist_name(project):
    return re.sub(r"[-_.]+", "_", project["name"]).lower()


def _metadata(project):
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
    ]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    license = project.get("license")
    if isinstance(license, dict) and "text" in license:
        lines.append(f"License: {license['text']}")
    for url_name, url in (project.get("urls") or {}).items():
        lines.append(f"Project-URL: {url_name}, {url}")
    readme = os.path.join(ROOT, "README.md")
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = "\n" + f.read()
    return ("\n".join(lines) + "\n" + body).encode("utf-8")


def _package_files():
    """(path in the wheel, bytes) of every file of the package, sorted."""
    files = []
    base = os.path.join(ROOT, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                files.append((os.path.relpath(full, ROOT).replace(os.sep, "/"), f.read()))
    return files


def _record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _write_wheel(wheel_directory, contents):
    """Writes a wheel holding `contents` plus its dist-info; returns its file name."""
    project = _project()
    dist = _dist_name(project)
    version = project["version"]
    dist_info = f"{dist}-{version}.dist-info"
    contents = list(contents) + [
        (f"{dist_info}/METADATA", _metadata(project)),
        (
            f"{dist_info}/WHEEL",
            (
                "Wheel-Version: 1.0\nGenerator: forkyard_build\n"
                f"Root-Is-Purelib: true\nTag: {TAG}\n"
            ).encode("ascii"),
        ),
    ]
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents]
    record.append(f"{dist_info}/RECORD,,")
    contents.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
    name = f"{dist}-{version}-{TAG}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in contents:
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    return name


# The PEP 517 / PEP 660 hooks.


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, _package_files())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # A .pth line puts the source directory on sys.path: edits show at once.
    pth = (ROOT + "\n").encode("utf-8")
    return _write_wheel(wheel_directory, [(f"_{PACKAGE}_editable.pth", pth)])


def build_sdist(sdist_directory, config_settings=None):
    project = _project()
    base = f"{_dist_name(project)}-{project['version']}"
    name = f"{base}.tar.gz"
    files = [(path, data) for path, data in _package_files()]
    for extra in ("pyproject.toml", "README.md", "build_backend/forkyard_build.py"):
        full = os.path.join(ROOT, extra)
        if os.path.exists(full):
            with open(full, "rb") as f:
                files.append((extra, f.read()))
    files.append(("PKG-INFO", _metadata(project)))
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for path, data in files:
            info = tarfile.TarInfo(f"{base}/{path}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return name

"""PASCAL VOC archives: resumable, checksum-verified downloads and safe extraction.

Only a complete file whose md5 matches ever appears under its final name; an interrupted
download stays as `<dest>.part` and the next call resumes it with an HTTP Range request.
"""

import hashlib
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from csd.runtime.io import save_text

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read: large enough for speed, small enough for a live progress bar
TIMEOUT = 60  # seconds without any data before a connection counts as dead


def md5sum(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path, md5, name):
    """Raise ValueError (and delete `path`) when its md5 is not `md5`."""
    if md5 is None:
        return
    actual = md5sum(path)
    if actual != md5.lower():
        os.unlink(path)
        raise ValueError(f"{name}: md5 mismatch, expected {md5.lower()}, got {actual} "
                         f"(corrupt or wrong file; it was deleted, rerun to fetch it again)")


def _progress_bar(name, total, initial, enabled):
    # In a job's log file (not a terminal) a bar redraws as new lines: redraw seldom.
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, disable=not enabled,
                mininterval=0.5 if sys.stderr.isatty() else 30)


def _content_range(header):
    """'bytes 100-199/200' -> (100, 200); 'bytes */200' -> (None, 200); '*' total -> None."""
    if not header or not header.startswith("bytes "):
        return None, None
    span, _, total = header[len("bytes "):].partition("/")
    start = span.split("-")[0].strip()
    return (int(start) if start.isdigit() else None,
            int(total) if total.strip().isdigit() else None)


def _fetch(url, part, progress, timeout):
    """Append the rest of `url` to `part` (resume), or rewrite it when the server cannot."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "csd-pipeline"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # Range starts at the end: the .part may already be complete (killed before
            # the rename); the checksum decides. Otherwise start over.
            if _content_range(err.headers.get("Content-Range"))[1] == have:
                return
            part.unlink()
            return _fetch(url, part, progress, timeout)
        raise ConnectionError(f"{url}: HTTP {err.code} {err.reason}") from err
    except OSError as err:  # URLError, refused, DNS failure, timeout
        raise ConnectionError(f"{url}: cannot connect ({getattr(err, 'reason', err)})") from err

    with response:
        if have and response.getcode() == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                raise ConnectionError(f"{url}: server resumed at byte {start}, "
                                      f"expected {have}; delete {part} to start over")
            mode = "ab"
        else:
            if have:
                log.warning("%s: server ignored the Range request, restarting from zero", url)
            length = response.headers.get("Content-Length")
            have, mode = 0, "wb"
            total = int(length) if length and length.isdigit() else None
        received = have
        with open(part, mode) as f, _progress_bar(part.name[:-len(".part")], total, have,
                                                 progress) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, HTTPException) as err:  # timeout, reset, IncompleteRead
                    raise ConnectionError(f"{url}: transfer broke after {received} bytes "
                                          f"({err!r}); rerun to resume from {part}") from err
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise ConnectionError(f"{url}: connection closed after {received} of {total} bytes; "
                              f"rerun to resume from {part}")


def download(url, dest, md5=None, mirror=None, progress=True, timeout=TIMEOUT):
    """Fetch `url` to the file `dest`, resuming a partial `.part` and verifying `md5`.

    `mirror`: a local directory holding `basename(dest)`; when given, the file is copied
    from there and the network is never touched (a missing file is an error).
    """
    dest = Path(dest)
    if dest.exists():
        if md5 is None or md5sum(dest) == md5.lower():
            return dest
        log.warning("%s exists but its md5 is not %s: fetching it again", dest, md5)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    if mirror is not None:
        source = Path(mirror) / dest.name
        if not source.is_file():
            raise FileNotFoundError(f"mirror {mirror} lacks {dest.name}: expected {source}")
        shutil.copyfile(source, part)
        _verify(part, md5, str(source))
    else:
        _fetch(url, part, progress, timeout)
        _verify(part, md5, f"{dest.name} (from {url})")
    os.replace(part, dest)
    return dest


def _merge(src, dst):
    """Move the tree `src` onto `dst`, file by file where `dst` already has directories."""
    if _real_dir(src) and _real_dir(dst):
        for child in src.iterdir():
            _merge(child, dst / child.name)
        return
    if _real_dir(dst):
        shutil.rmtree(dst)
    elif _real_dir(src) and (dst.exists() or dst.is_symlink()):
        dst.unlink()
    os.replace(src, dst)


def _real_dir(path):
    return path.is_dir() and not path.is_symlink()


def extract(archive, dest_dir, stamp=None):
    """Extract a tar/tgz into `dest_dir` safely, once.

    The archive is unpacked into a hidden temporary directory inside `dest_dir` (same
    filesystem, so moves are renames even when `dest_dir` is a mount or a symlink) and
    moved into place; the marker `.extracted-<archive name>` is written last, so a killed
    extraction is redone in full on the next call. Several archives may share a
    `dest_dir` (the VOC test tar adds files under the trainval tar's VOCdevkit/VOC2012).
    `stamp`: what identifies the archive (its md5); the marker records it, and a marker
    with another stamp (another archive under the same name) is extracted again.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if extracted(archive.name, dest_dir, stamp):
        return dest_dir
    dest_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".extract-{archive.name}-"
    for stale in dest_dir.glob(prefix + "*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=prefix))
    try:
        try:
            with tarfile.open(archive) as tar:
                # "data" refuses absolute paths, links leaving the tree and device files.
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ValueError(f"{archive}: cannot extract ({err})") from err
        for entry in tmp.iterdir():
            _merge(entry, dest_dir / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_text(_marker(archive.name, dest_dir), f"{stamp or archive.resolve()}\n")
    return dest_dir


def _marker(filename, dest_dir):
    return Path(dest_dir) / f".extracted-{filename}"


def extracted(filename, dest_dir, stamp=None):
    """Whether the archive `filename` (with `stamp`, when given) was extracted into `dest_dir`."""
    marker = _marker(filename, dest_dir)
    return marker.exists() and (stamp is None or marker.read_text().strip() == stamp)


FETCH_ORDER = ("trainval", "sbd", "test")
EXPECTED_DIRS = {  # what each archive must leave in out_dir
    "trainval": "VOCdevkit/VOC2012/JPEGImages",
    "sbd": "benchmark_RELEASE/dataset",
    "test": "VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt",
}


def archive_ids(settings):
    """{name: md5 (or url where the config gives none)} of each archive `fetch_voc` fetches:
    what its output is made of. Where the archives come from (mirror) and where they are
    kept (download_dir) does not change it; the workflow reruns fetch_voc when it changes."""
    ids = {}
    for name in FETCH_ORDER:
        if name == "test" and not settings["test_split"]:
            continue
        spec = settings["archives"].get(name)
        if spec is None:
            raise KeyError(f"settings archives.{name} is missing")
        for key in ("url", "md5", "filename"):
            if key not in spec:
                raise KeyError(f"settings archives.{name}.{key} is missing")
        ids[name] = spec["md5"].lower() if spec["md5"] else spec["url"]
    return ids


def fetch_voc(out_dir, settings):
    """Download and extract VOC 2012 trainval, SBD (and the VOC 2012 test set) into `out_dir`.

    Archives are kept in settings["download_dir"] (optional; default `out_dir/downloads`).
    They may be deleted once extracted: an archive whose extraction marker in `out_dir`
    records its md5 (`archive_ids`) is not fetched again. Returns the paths the split builder needs:
    {"voc_root": out_dir/VOCdevkit/VOC2012, "sbd_root": out_dir/benchmark_RELEASE/dataset}.
    """
    out_dir = Path(out_dir)
    archives = settings["archives"]
    download_dir = Path(settings.get("download_dir") or out_dir / "downloads")
    for name, stamp in archive_ids(settings).items():
        spec = archives[name]
        if extracted(spec["filename"], out_dir, stamp) and \
                (out_dir / EXPECTED_DIRS[name]).exists():
            continue  # extracted before: the archive itself may have been deleted
        if spec["md5"] is None:
            log.warning("archives.%s (%s) has no md5 in the config: it is used UNVERIFIED",
                        name, spec["filename"])
        print(f"fetching {name}: {spec['filename']}", file=sys.stderr, flush=True)
        archive = download(spec["url"], download_dir / spec["filename"],
                           md5=spec["md5"], mirror=settings["mirror"])
        print(f"extracting {archive} into {out_dir}", file=sys.stderr, flush=True)
        extract(archive, out_dir, stamp)
        expected = out_dir / EXPECTED_DIRS[name]
        if not expected.exists():
            raise FileNotFoundError(f"{archive} extracted without {expected}: "
                                    f"not the expected archive for archives.{name}")
    return {"voc_root": out_dir / "VOCdevkit" / "VOC2012",
            "sbd_root": out_dir / "benchmark_RELEASE" / "dataset"}

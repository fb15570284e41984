"""Downloads against a local HTTP server (127.0.0.1 only) and extraction of tiny tars."""

import hashlib
import io
import logging
import tarfile
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from csd.data.download import download, extract, fetch_voc, md5sum

PAYLOAD = bytes(range(256)) * 1000  # 256,000 bytes, several read chunks' worth of data


def md5(data):
    return hashlib.md5(data).hexdigest()


@contextmanager
def serve(files, honour_range=True, truncate=None):
    """Serve {path: bytes} on a free port; yields (base url, list of request records).

    honour_range=False plays a server that ignores Range and always answers 200;
    truncate=N sends only N bytes of the body, then hangs up (a dropped connection).
    """
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
            requests.append(record)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if record["range"] and honour_range:
                start = int(record["range"].removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if truncate is not None:
                payload = payload[:truncate]
            self.wfile.write(payload)
            record["sent"] = len(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_fresh_download_verifies_md5(tmp_path):
    dest = tmp_path / "sub" / "data.bin"
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        assert download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    assert [r["range"] for r in requests] == [None]


def test_md5_mismatch_raises_and_leaves_nothing(tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 32
    with serve({"/data.bin": PAYLOAD}) as (url, _):
        with pytest.raises(ValueError) as info:
            download(f"{url}/data.bin", dest, md5=wrong, progress=False)
    message = str(info.value)
    assert "data.bin" in message and wrong in message and md5(PAYLOAD) in message
    assert not dest.exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_resume_requests_only_the_remainder(tmp_path):
    dest = tmp_path / "data.bin"
    half = len(PAYLOAD) // 2 + 7
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:half])
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(requests) == 1
    assert requests[0]["range"] == f"bytes={half}-"
    assert requests[0]["sent"] == len(PAYLOAD) - half


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "data.bin"
    # A .part that is not a prefix of the file: appending to it would corrupt the result.
    (tmp_path / "data.bin.part").write_bytes(b"x" * 1000)
    with serve({"/data.bin": PAYLOAD}, honour_range=False) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert requests[0]["range"] == "bytes=1000-"
    assert requests[0]["sent"] == len(PAYLOAD)


def test_complete_part_answered_416_is_verified_not_refetched(tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # killed between write and rename
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert sum(r["sent"] for r in requests) == 0


def test_dropped_connection_keeps_part_and_next_call_resumes(tmp_path):
    dest = tmp_path / "data.bin"
    with serve({"/data.bin": PAYLOAD}, truncate=100_000) as (url, _):
        with pytest.raises(ConnectionError, match="resume"):
            download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert not dest.exists()
    assert (tmp_path / "data.bin.part").stat().st_size == 100_000
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert requests[0]["sent"] == len(PAYLOAD) - 100_000


def test_http_error_names_url(tmp_path):
    with serve({}) as (url, _):
        with pytest.raises(ConnectionError, match=r"missing\.bin.*404"):
            download(f"{url}/missing.bin", tmp_path / "missing.bin", progress=False)
    assert not (tmp_path / "missing.bin").exists()


def test_existing_verified_dest_is_kept_without_network(tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    with serve({"/data.bin": b"other"}) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert requests == []
    assert dest.read_bytes() == PAYLOAD


def test_existing_corrupt_dest_is_fetched_again(tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"corrupt")
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), progress=False)
    assert len(requests) == 1
    assert dest.read_bytes() == PAYLOAD


def test_mirror_copy_without_network(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "data.bin"
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        download(f"{url}/data.bin", dest, md5=md5(PAYLOAD), mirror=mirror, progress=False)
    assert requests == []
    assert dest.read_bytes() == PAYLOAD
    # A corrupt mirror copy is refused too.
    (mirror / "bad.bin").write_bytes(b"bad")
    with pytest.raises(ValueError, match="bad.bin"):
        download("http://127.0.0.1:9/bad.bin", tmp_path / "out" / "bad.bin",
                 md5=md5(PAYLOAD), mirror=mirror, progress=False)
    assert not (tmp_path / "out" / "bad.bin").exists()


def test_mirror_missing_file_raises_without_network(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with serve({"/data.bin": PAYLOAD}) as (url, requests):
        with pytest.raises(FileNotFoundError) as info:
            download(f"{url}/data.bin", tmp_path / "data.bin", mirror=mirror, progress=False)
    assert str(mirror / "data.bin") in str(info.value)
    assert requests == []


def make_tar(path, members, mode="w"):
    """members: {name inside the archive: bytes}."""
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_merges_archives_once(tmp_path):
    out = tmp_path / "voc"
    first = make_tar(tmp_path / "a.tgz", {"VOCdevkit/VOC2012/JPEGImages/1.jpg": b"one",
                                          "VOCdevkit/VOC2012/README": b"a"}, "w:gz")
    second = make_tar(tmp_path / "b.tar", {"VOCdevkit/VOC2012/ImageSets/test.txt": b"t",
                                           "VOCdevkit/VOC2012/README": b"b"})
    extract(first, out)
    extract(second, out)
    root = out / "VOCdevkit" / "VOC2012"
    assert (root / "JPEGImages" / "1.jpg").read_bytes() == b"one"
    assert (root / "ImageSets" / "test.txt").read_bytes() == b"t"
    assert (root / "README").read_bytes() == b"b"
    assert (out / ".extracted-a.tgz").exists() and (out / ".extracted-b.tar").exists()
    assert sorted(p.name for p in out.iterdir()) == [".extracted-a.tgz", ".extracted-b.tar",
                                                      "VOCdevkit"]
    # The marker makes a second call a no-op, even when the archive is gone.
    (root / "JPEGImages" / "1.jpg").unlink()
    first.unlink()
    extract(first, out)
    assert not (root / "JPEGImages" / "1.jpg").exists()


def test_extract_refuses_unsafe_members(tmp_path):
    out = tmp_path / "out"
    evil = make_tar(tmp_path / "evil.tar", {"../escaped.txt": b"x"})
    with pytest.raises(ValueError, match="evil.tar"):
        extract(evil, out)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (out / ".extracted-evil.tar").exists()
    assert list(out.iterdir()) == []  # no temporary directory left behind


def test_extract_corrupt_archive_names_it(tmp_path):
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not a tar at all")
    with pytest.raises(ValueError, match="bad.tgz"):
        extract(bad, tmp_path / "out")


def voc_archives(folder):
    """Tiny stand-ins with the real archives' top-level layout; returns their bytes."""
    folder.mkdir(exist_ok=True)
    tmp_path = folder
    trainval = make_tar(tmp_path / "VOCtrainval.tar", {
        "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg": b"jpg",
        "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"2007_000032\n",
    })
    sbd = make_tar(tmp_path / "benchmark.tgz", {
        "benchmark_RELEASE/dataset/train.txt": b"2007_000032\n",
        "benchmark_RELEASE/dataset/val.txt": b"",
    }, "w:gz")
    test = make_tar(tmp_path / "VOC2012test.tar", {
        "VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt": b"2008_000001\n",
        "VOCdevkit/VOC2012/JPEGImages/2008_000001.jpg": b"jpg",
    })
    return {name: path.read_bytes() for name, path in
            {"trainval": trainval, "sbd": sbd, "test": test}.items()}


def voc_settings(url, blobs, test_md5, mirror=None, test_split=True):
    names = {"trainval": "VOCtrainval.tar", "sbd": "benchmark.tgz", "test": "VOC2012test.tar"}
    archives = {key: {"url": f"{url}/{names[key]}", "md5": md5(blobs[key]),
                      "filename": names[key]} for key in names}
    archives["test"]["md5"] = test_md5
    return {"archives": archives, "mirror": mirror, "test_split": test_split}


def test_fetch_voc_end_to_end(tmp_path, caplog):
    blobs = voc_archives(tmp_path / "src")
    files = {"/VOCtrainval.tar": blobs["trainval"], "/benchmark.tgz": blobs["sbd"],
             "/VOC2012test.tar": blobs["test"]}
    out = tmp_path / "data"
    with serve(files) as (url, requests), caplog.at_level(logging.WARNING):
        paths = fetch_voc(out, voc_settings(url, blobs, test_md5=None))
        assert "UNVERIFIED" in caplog.text and "archives.test" in caplog.text
        assert sorted(r["path"] for r in requests) == sorted(files)
        voc = out / "VOCdevkit" / "VOC2012"
        assert paths == {"voc_root": voc, "sbd_root": out / "benchmark_RELEASE" / "dataset"}
        assert (voc / "JPEGImages" / "2007_000032.jpg").exists()
        assert (voc / "JPEGImages" / "2008_000001.jpg").exists()
        assert (voc / "ImageSets" / "Segmentation" / "test.txt").read_text() == "2008_000001\n"
        assert (paths["sbd_root"] / "train.txt").read_text() == "2007_000032\n"
        assert md5sum(out / "downloads" / "VOCtrainval.tar") == md5(blobs["trainval"])
        # Done once: deleting the archives does not make a second call fetch them again.
        for archive in (out / "downloads").iterdir():
            archive.unlink()
        requests.clear()
        fetch_voc(out, voc_settings(url, blobs, test_md5=None))
        assert requests == []


def fetched_from_mirror(tmp_path):
    """fetch_voc without the test split from tmp_path/mirror, archives kept in
    tmp_path/archives, into tmp_path/data: (the archives' bytes, settings, data folder)."""
    mirror = tmp_path / "mirror"
    blobs = voc_archives(mirror)
    settings = voc_settings("http://127.0.0.1:9", blobs, test_md5=None, mirror=mirror,
                            test_split=False)
    settings["download_dir"] = str(tmp_path / "archives")
    out = tmp_path / "data"
    fetch_voc(out, settings)
    return blobs, settings, out


def test_fetch_voc_without_test_split_from_mirror(tmp_path):
    _, _, out = fetched_from_mirror(tmp_path)
    assert (out / "benchmark_RELEASE" / "dataset" / "train.txt").exists()
    assert not (out / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "test.txt").exists()
    assert sorted(p.name for p in (tmp_path / "archives").iterdir()) == ["VOCtrainval.tar",
                                                                         "benchmark.tgz"]
    assert not (out / "downloads").exists()


def test_fetch_voc_wrong_archive_is_named(tmp_path):
    mirror = tmp_path / "mirror"
    blobs = voc_archives(mirror)
    # The SBD file under the trainval name: it extracts, but without VOCdevkit/VOC2012.
    (mirror / "VOCtrainval.tar").write_bytes(blobs["sbd"])
    blobs["trainval"] = blobs["sbd"]
    settings = voc_settings("http://127.0.0.1:9", blobs, test_md5=None, mirror=mirror,
                            test_split=False)
    with pytest.raises(FileNotFoundError, match=r"VOCtrainval.tar.*archives.trainval"):
        fetch_voc(tmp_path / "data", settings)


def test_fetch_voc_extracts_an_archive_with_another_md5_again(tmp_path):
    """The extraction marker records the archive's md5: a new archive under the same name
    (its md5 changed in the config) is fetched and extracted, not taken as done."""
    blobs, settings, out = fetched_from_mirror(tmp_path)
    assert (out / ".extracted-VOCtrainval.tar").read_text().strip() == md5(blobs["trainval"])
    new = make_tar(tmp_path / "mirror" / "VOCtrainval.tar", {
        "VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg": b"jpg"}).read_bytes()
    settings["archives"]["trainval"]["md5"] = md5(new)
    fetch_voc(out, settings)
    jpegs = out / "VOCdevkit" / "VOC2012" / "JPEGImages"
    assert sorted(p.name for p in jpegs.iterdir()) == ["2007_000032.jpg", "2007_000033.jpg"]
    assert (out / ".extracted-VOCtrainval.tar").read_text().strip() == md5(new)

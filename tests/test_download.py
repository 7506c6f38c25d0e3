"""Tests for kbn.download against a local HTTP server (no internet needed)."""

from __future__ import annotations

import http.server
import io
import socket
import tarfile
import threading
from collections import Counter

import pytest

import kbn.download as download_module
from kbn.data import DataError, load_cifar10
from kbn.download import download_cifar10

try:
    from cifar_fixtures import md5_hex, md5_table, tarball_bytes, write_tiny_cifar10
except ImportError:  # tests/ is a package
    from tests.cifar_fixtures import md5_hex, md5_table, tarball_bytes, write_tiny_cifar10


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]`` bytes; paths ending in /truncated lie about the length."""

    def do_GET(self):
        self.server.hits[self.path] += 1
        body = self.server.routes.get(self.path.removesuffix("/truncated"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.endswith("/truncated"):
            # Promise the whole file, send half, then drop the connection.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.hits = {}, Counter()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_cifar10(tmp_path / "source", n_per_batch=20)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("KBN_DATA_DIR", raising=False)
    folder = tmp_path / "cache"
    monkeypatch.setenv("KBN_CACHE_DIR", str(folder))
    return folder


def serve(server, name: str, body: bytes) -> str:
    server.routes[f"/{name}"] = body
    return f"{server.base}/{name}"


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_through_locate_order_then_cached(server, tiny, cache):
    body = tarball_bytes(tiny)
    url = serve(server, "cifar.tar.gz", body)
    kw = dict(n_val=20, expected_md5=md5_table(tiny), url=url, tar_md5=md5_hex(body))

    data = load_cifar10(progress=False, **kw)  # no data_dir, no KBN_DATA_DIR
    assert data.source == cache / "cifar-10-batches-py"
    assert data.train.X.shape == (80, 3072) and len(data.test) == 20
    assert leftovers(cache) == ["cifar-10-batches-py"]  # no temp files left
    assert server.hits["/cifar.tar.gz"] == 1

    again = load_cifar10(**kw)  # found in the cache: no second request
    assert again.checksum == data.checksum
    assert download_cifar10(cache, url=url) == data.source
    assert sum(server.hits.values()) == 1


def test_progress_bar_path(server, tiny, tmp_path):
    body = tarball_bytes(tiny)
    url = serve(server, "cifar.tar.gz", body)
    folder = download_cifar10(tmp_path / "c", url=url, md5=md5_hex(body), progress=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted(md5_table(tiny))


def test_bad_checksum_leaves_nothing(server, tiny, cache):
    body = tarball_bytes(tiny)
    url = serve(server, "cifar.tar.gz", body)
    with pytest.raises(DataError, match=f"{url} has md5 {md5_hex(body)}, expected 0{{32}}"):
        load_cifar10(n_val=20, url=url, tar_md5="0" * 32, progress=False)
    assert leftovers(cache) == []


def test_interrupted_transfer_leaves_nothing(server, tiny, cache):
    body = tarball_bytes(tiny)
    serve(server, "cifar.tar.gz", body)
    url = f"{server.base}/cifar.tar.gz/truncated"
    with pytest.raises(DataError, match=f"{url} was cut short: received {len(body) // 2} of "
                                        f"{len(body)} bytes"):
        load_cifar10(n_val=20, url=url, tar_md5=md5_hex(body), progress=False)
    assert leftovers(cache) == []


def test_user_interrupt_leaves_nothing(server, tiny, cache, monkeypatch):
    body = tarball_bytes(tiny)
    url = serve(server, "cifar.tar.gz", body)

    class InterruptingBar:
        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(download_module, "_progress_bar", lambda total, progress: InterruptingBar())
    with pytest.raises(KeyboardInterrupt):
        download_cifar10(cache, url=url, md5=md5_hex(body))
    assert leftovers(cache) == []


def test_server_down_mentions_kbn_data_dir(cache):
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar.tar.gz"
    with pytest.raises(DataError, match=f"Downloading CIFAR-10 from {url} failed.*KBN_DATA_DIR"):
        load_cifar10(n_val=20, url=url, progress=False)
    assert leftovers(cache) == []


def test_http_error_and_timeout(server, tmp_path):
    with pytest.raises(DataError, match="failed \\(HTTPError: HTTP Error 404"):
        download_cifar10(tmp_path / "c", url=f"{server.base}/missing.tar.gz", progress=False)
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/x.tar.gz"
        with pytest.raises(DataError, match="failed .*timed out"):
            download_cifar10(tmp_path / "c", url=url, progress=False, timeout=0.3)
    assert leftovers(tmp_path / "c") == []


def _tar(members) -> bytes:
    """A .tar.gz from (TarInfo, bytes | None) pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name, data=b"evil\n"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("make_evil", [
    lambda tmp: _file("../evil"),
    lambda tmp: _file("cifar-10-batches-py/../../evil"),
    lambda tmp: _file(str(tmp / "evil")),  # absolute path
    lambda tmp: _link("cifar-10-batches-py/evil", "../../evil"),
    lambda tmp: _link("cifar-10-batches-py/evil", str(tmp / "evil"), tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"])
def test_crafted_tarball_is_refused(server, tiny, cache, tmp_path, make_evil):
    good = [_file(f"cifar-10-batches-py/{p.name}", p.read_bytes()) for p in sorted(tiny.iterdir())]
    body = _tar([*good, make_evil(tmp_path)])
    url = serve(server, "evil.tar.gz", body)
    with pytest.raises(DataError, match="Refusing to extract '.*evil'"):
        load_cifar10(n_val=20, url=url, tar_md5=md5_hex(body), progress=False)
    assert leftovers(cache) == []
    assert not list(tmp_path.rglob("evil"))  # nothing written outside (or inside)


@pytest.mark.parametrize("body, message", [
    (b"<html>not a tarball</html>", "Cannot extract the tarball"),
    (_tar([_file("other-folder/readme.txt")]), "has no 'cifar-10-batches-py' folder"),
])
def test_wrong_archive(server, cache, body, message):
    url = serve(server, "x.tar.gz", body)
    with pytest.raises(DataError, match=message):
        load_cifar10(n_val=20, url=url, tar_md5=md5_hex(body), progress=False)
    assert leftovers(cache) == []

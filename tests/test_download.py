"""Downloads resume after an interruption, are verified, and are extracted."""

from __future__ import annotations

import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from zapmulti import download
from zapmulti.config import DataConfig
from zapmulti.data.sources import load_table
from zapmulti.errors import DownloadError


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files with Range support; the first full request is cut half-way."""

    files: dict[str, bytes] = {}
    cut_first = True
    ranges: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        name = self.path.rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        type(self).ranges.append(header or "")
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not header and type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()  # the client sees a short read
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(utzap_root, tmp_path):
    files = {}
    for archive in download.UTZAP_ARCHIVES:
        zpath = tmp_path / archive.name
        with zipfile.ZipFile(zpath, "w") as zf:
            for f in sorted((utzap_root / archive.folder).rglob("*")):
                zf.write(f, f.relative_to(utzap_root))
        files[archive.name] = zpath.read_bytes()
    _RangeHandler.files, _RangeHandler.cut_first, _RangeHandler.ranges = files, True, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_interrupted_download_resumes_and_extracts(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "UTZAP_BASE", server)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download.download_ut_zap50k(dest, show_progress=False)
    part = dest / "ut-zap50k-images-square.zip.part"
    assert part.is_file() and part.stat().st_size > 0

    download.download_ut_zap50k(dest, show_progress=False)
    assert any(r.startswith("bytes=") and r != "bytes=0-" for r in _RangeHandler.ranges)
    assert not part.exists()
    table = load_table(DataConfig(source="ut-zap50k", root=str(dest)))
    assert len(table) == 35
    assert not list(Path(dest).glob(".*.extract*"))  # no temporary folders left

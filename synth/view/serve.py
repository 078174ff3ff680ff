"""`synth view --serve`: the report over HTTP on 127.0.0.1 only (the page needs no server; this is for
opening it from another machine through an SSH tunnel, or a browser that cannot read local files)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


def report_server(report: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server bound to loopback that answers GET / (and /<report name>) with the report, 404 otherwise."""
    body = report.read_bytes()
    paths = {"/", "/" + report.name}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path.split("?", 1)[0] not in paths:
                self.send_error(404, "only the report is served here")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet: the command prints the URL once
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve_report(report: Path, port: int = 0, announce: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C."""
    server = report_server(report, port)
    announce(f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

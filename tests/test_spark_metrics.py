"""Spark's figures read from its status REST API: the background request that warms it up."""

import http.server
import threading

from sgns_spark.spark_metrics import _warm

PROMISED_BYTES = 1000  # the answer's length as its header gives it; the server sends less, then closes


class CutShort(http.server.BaseHTTPRequestHandler):
    """The answer of a JVM that ends while it answers: its body cut short."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(PROMISED_BYTES))
        self.end_headers()
        self.wfile.write(b'{"jobs": [')
        self.close_connection = True

    def log_message(self, *arguments):  # no request lines on stderr
        pass


def test_a_warm_up_request_cut_short_ends_quietly():
    """urllib raises http.client's IncompleteRead for a body cut short: not an OSError, so the
    warm-up thread died of it with a trace above the job's own line."""
    server = http.server.HTTPServer(("127.0.0.1", 0), CutShort)
    serving = threading.Thread(target=server.handle_request, daemon=True)
    serving.start()
    try:
        assert _warm(f"http://127.0.0.1:{server.server_port}/api/v1/applications/app/jobs") is None
    finally:
        serving.join(5)
        server.server_close()

"""`tether up`'s log says what Tether does, not every HTTP request its providers make (issue 12:
a line per request of httpx and of the Azure SDK cost ~0.25 ms each, 3 ms of a RabbitMQ
provision). Old main: `tether up` logged every library at INFO, so each admin call to RabbitMQ,
OpenSearch or Azure wrote a line (the Azure SDK two, with every header)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import http.server, logging, threading
    from tether.cli.up import configure_logging

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
        def do_PUT(self):
            self.do_GET()
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    configure_logging()

    import httpx
    httpx.get(url + "/api/overview")
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient
    client = ContainerClient(url + "/devstoreaccount1", "c", credential=None,
                             retry_total=0)
    try:
        client.create_container()
    except AzureError:
        pass
    logging.getLogger("tether.test").info("our own line")
    logging.getLogger("httpx").warning("a warning still shows")
    server.shutdown()
''')


def test_tether_up_logs_its_own_lines_not_each_http_request() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert "tether.test our own line" in log
    assert "a warning still shows" in log
    assert "HTTP Request" not in log, log  # httpx's line per request
    assert "Request URL" not in log and "Response status" not in log, log  # the Azure SDK's

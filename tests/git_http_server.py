"""A git "dumb HTTP" server behind Basic auth, run *inside* a sandbox by tests/test_e2b_git.py.

usage: python git_http_server.py ROOT USERNAME PASSWORD STATE_DIR

Serves ROOT's files to requests whose Basic credentials are USERNAME:PASSWORD and answers
401 to every other request. Writes its port to STATE_DIR/port once listening, and every
Authorization header it was sent (decoded) to STATE_DIR/auth.log, so a test can check what
git sent. The sandbox has no network besides loopback; this is how a test gets an http(s)
remote that asks for credentials.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    expected = ""
    state = ""

    def do_GET(self) -> None:
        sent = self.headers.get("Authorization", "")
        decoded = ""
        if sent.startswith("Basic "):
            decoded = base64.b64decode(sent[6:]).decode("utf-8", "replace")
        with open(os.path.join(self.state, "auth.log"), "a") as log:
            log.write(decoded + "\n")
        if decoded != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    root, username, password, state = argv
    Handler.expected = f"{username}:{password}"
    Handler.state = state
    handler = functools.partial(Handler, directory=root)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        with open(os.path.join(state, "port.tmp"), "w") as out:
            out.write(str(server.server_address[1]))
        os.replace(os.path.join(state, "port.tmp"), os.path.join(state, "port"))
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

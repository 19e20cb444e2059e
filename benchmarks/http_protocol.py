"""Server CPU per request of uvicorn's HTTP protocols: h11, httptools, and the service's subclass.

One uvicorn process answers a trivial endpoint; one keep-alive client on loopback sends `--requests`
GETs per protocol, `--rounds` times; the server's CPU time (user + system, /proc) per request is
printed. What it decides: whether serving/http/server.py's subclass of uvicorn's private
HttpToolsProtocol is worth keeping over uvicorn's own limits (h11) (docs/serving.md).

Usage: python benchmarks/http_protocol.py [--requests 3000] [--rounds 2]
"""

import http.client
import os
import socket
import subprocess
import sys
import time

SERVER = r"""
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
async def ok(request): return Response(b'{"status":"ok"}', media_type="application/json")
app = Starlette(routes=[Route("/healthz", ok)])
kind = sys.argv[2]
http = kind
if kind == "json":
    from serving.http.server import JsonHttpProtocol
    JsonHttpProtocol.header_timeout_s = 10.0; JsonHttpProtocol.max_header_bytes = 16384
    http = JsonHttpProtocol
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http=http, log_level="warning", access_log=False)
"""


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run(kind, n=3000):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(port), kind])
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port)
            c.request("GET", "/healthz")
            c.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)
    for _ in range(200):
        c.request("GET", "/healthz")
        c.getresponse().read()
    before = cpu(p.pid)
    for _ in range(n):
        c.request("GET", "/healthz")
        c.getresponse().read()
    used = cpu(p.pid) - before
    p.terminate()
    p.wait()
    return used / n * 1000


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{'protocol':<28} {'CPU-ms/request':>14}  load average")
    names = {"h11": "h11", "httptools": "httptools", "json": "JsonHttpProtocol (service)"}
    for _ in range(args.rounds):
        for kind in ("h11", "httptools", "json"):
            used = run(kind, args.requests)
            print(f"{names[kind]:<28} {used:>14.3f}  {' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)


if __name__ == "__main__":
    main()

"""A tiny HTTP app for the local example: answers every GET with its own
name and the caller's mesh identity, which its sidecar puts in the
x-mycel-peer-id header after checking the caller's certificate."""

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            peer = self.headers.get("x-mycel-peer-id", "none (not through the mesh)")
            body = f"hello from {args.name}; caller: {peer}\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *rest):
            print(f"{args.name}: {self.address_string()} {fmt % rest}", flush=True)

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

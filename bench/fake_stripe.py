#!/usr/bin/env python3
"""A fake Stripe for the order benchmark: answers POST /v1/checkout/sessions with Stripe's own
fixture object (../shared/fixtures/stripe/fixtures3.json) under a fresh id. Usage:
fake_stripe.py PORT FIXTURES"""
import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, FIXTURES = int(sys.argv[1]), sys.argv[2]
SESSION = json.load(open(FIXTURES))["resources"]["checkout.session"]
COUNTER = itertools.count(1)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/checkout/sessions":
            return self.answer(404, {"error": {"type": "invalid_request_error", "message": "not faked"}})
        with LOCK:
            n = next(COUNTER)
        session = dict(SESSION, id=f"cs_bench_{n}", status="open", payment_status="unpaid",
                       url=f"https://checkout.stripe.com/c/pay/cs_bench_{n}")
        self.answer(200, session)

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()

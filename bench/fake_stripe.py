#!/usr/bin/env python3
"""A fake Stripe for the order benchmark: answers POST /v1/checkout/sessions and POST
/v1/customers (the user's Stripe customer, made at the first checkout) with Stripe's own fixture
objects (../shared/fixtures/stripe/fixtures3.json) under fresh ids. Usage:
fake_stripe.py PORT FIXTURES"""
import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, FIXTURES = int(sys.argv[1]), sys.argv[2]
RESOURCES = json.load(open(FIXTURES))["resources"]
SESSION = RESOURCES["checkout.session"]
CUSTOMER = RESOURCES["customer"]
COUNTER = itertools.count(1)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with LOCK:
            n = next(COUNTER)
        if self.path == "/v1/customers":
            return self.answer(200, dict(CUSTOMER, id=f"cus_bench_{n}"))
        if self.path != "/v1/checkout/sessions":
            return self.answer(404, {"error": {"type": "invalid_request_error", "message": "not faked"}})
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

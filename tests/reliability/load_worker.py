"""One worker process of the ordering-under-load test.

Without `base_url`: a whole Django stack of its own (its own database connection, middleware,
views), appending with Django's test Client, like one of N gunicorn workers. With `base_url`:
an HTTP client of a live server, over real sockets.

Usage: python -m tests.reliability.load_worker '<json: worker, token, plan, ready_file,
go_file[, base_url]>'. `plan` is the list of session ids to append to, in order. Prints one
JSON list of results.
"""

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    args = json.loads(sys.argv[1])
    post = _http_post(args) if args.get("base_url") else _django_post(args)
    worker = args["worker"]
    # Ready, then wait for the common start so all workers really run at once.
    Path(args["ready_file"]).touch()
    deadline = time.monotonic() + 60
    while not os.path.exists(args["go_file"]):
        if time.monotonic() > deadline:
            sys.exit("never got the go signal")
        time.sleep(0.005)

    results = []
    for i, session_id in enumerate(args["plan"]):
        status, body = post(
            f"/api/v1/sessions/{session_id}/messages/",
            json.dumps({"role": "user", "content": f"w{worker}-{i}"}).encode(),
        )
        results.append({"status": status, "session": session_id, "i": i, "seq": body.get("seq")})
    print(json.dumps(results))


def _django_post(args):
    import django

    # stdout carries this worker's results; its logs (access lines, events) go to stderr.
    os.environ["LOG_STREAM"] = "stderr"
    django.setup()
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {args['token']}")

    def post(path: str, body: bytes):
        response = client.post(path, body, content_type="application/json")
        return response.status_code, (response.json() if response.status_code < 500 else {})

    return post


def _http_post(args):
    import urllib.error
    import urllib.request

    def post(path: str, body: bytes):
        request = urllib.request.Request(args["base_url"] + path, data=body, method="POST")
        request.add_header("Authorization", f"Bearer {args['token']}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {}

    return post


if __name__ == "__main__":
    main()

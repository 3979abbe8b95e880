"""One worker process of the ordering-under-load test: a whole Django stack of its own (its
own database connection, middleware, views), appending through the HTTP layer with Django's
test Client, like one of N gunicorn workers.

Usage: python -m tests.reliability.load_worker '<json: token, plan, ready_file, go_file>'
`plan` is the list of session ids to append to, in order. Prints one JSON list of results.
"""

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    args = json.loads(sys.argv[1])
    import django

    django.setup()
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {args['token']}")
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
        response = client.post(
            f"/api/v1/sessions/{session_id}/messages/",
            json.dumps({"role": "user", "content": f"w{worker}-{i}"}),
            content_type="application/json",
        )
        body = response.json() if response.status_code < 500 else {}
        results.append(
            {"status": response.status_code, "session": session_id, "i": i, "seq": body.get("seq")}
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
